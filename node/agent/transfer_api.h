#pragma once
// node/agent/transfer_api.h: the admin API's transfer routes and the agent's
// transfer service behind them. TransferService owns the node's snapshot
// store (DATA_DIR/store) and its TransferNet, resolves operator names (node
// names or id prefixes, snapshot prefixes or "latest") and pins every peer to
// the key the gossip member table holds for it. handle_transfer_request() is
// a pure function from a request to a response, like handle_admin_request().
// Single-threaded: everything runs on the loop thread.
//
// Routes (docs/admin-api.md):
//   POST /v1/replicate      {project, snapshot, to | from, detach} -> {id, ...transfer}
//   GET  /v1/transfers      -> {transfers: [...], rate_limit_bytes_per_second}
//   GET  /v1/transfers/ID   -> one transfer
//   POST /v1/transfers/limit {bytes_per_second} (0 = unlimited)

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gossip/types.h"
#include "node/agent/admin_api.h"
#include "node/agent/transfer_net.h"

namespace shoal::agent {

struct ReplicateRequest {
  std::string project;
  std::string snapshot;  // Full id, unique hex prefix, or "latest".
  std::optional<std::string> to;    // Node name or id prefix: push.
  std::optional<std::string> from;  // Pull: snapshot must be a full id.
};

class TransferBackend {
 public:
  virtual ~TransferBackend() = default;
  // Starts the copy; returns its transfer id (poll transfer(id) for the end).
  virtual Result<std::uint64_t> replicate(const ReplicateRequest& request) = 0;
  virtual std::vector<TransferInfo> transfers() const = 0;
  virtual std::optional<TransferInfo> transfer(std::uint64_t id) const = 0;
  virtual const TransferMetrics& transfer_metrics() const = 0;
  virtual std::uint64_t rate_limit() const = 0;
  virtual void set_rate_limit(std::uint64_t bytes_per_second) = 0;
};

// nullopt if the path is not a transfer route. backend may be null (the
// agent runs without transfers): 503.
std::optional<AdminReply> handle_transfer_request(const HttpRequest& request, TransferBackend* backend);
nlohmann::json transfer_json(const TransferInfo& info);
// One line of the event stream (/v1/events), newline-terminated:
// {"time": ..., "event": "transfer_progress", "transfer": {...transfer_json}}
std::string transfer_event_line(TransferEventKind kind, const TransferInfo& info,
                                std::chrono::system_clock::time_point wall_time);
// Prometheus text for the transfer counters.
std::string render_transfer_metrics(const TransferMetrics& metrics);

class TransferService final : public TransferBackend {
 public:
  using MembersFn = std::function<std::vector<gossip::Member>()>;

  // Opens the store in store_dir and prepares the network (no listener of its
  // own: accepted connections come through adopt()). members() is asked on
  // every dial and every inbound handshake.
  static Result<std::unique_ptr<TransferService>> open(uv_loop_t* loop, const Identity& identity,
                                                       const Keyring& keyring, Random& random,
                                                       const std::string& store_dir, MembersFn members);
  ~TransferService() override;

  // An accepted socket whose first byte was kTransferFirstByte.
  void adopt(uv_os_sock_t fd, ByteView first_bytes) { net_->adopt(fd, first_bytes); }
  void close() { net_->close(); }
  void set_on_event(TransferNet::EventFn fn) { net_->set_on_event(std::move(fn)); }
  void set_commit_check(TransferNet::CommitCheck check) { net_->set_commit_check(std::move(check)); }
  storage::SnapshotStore& store() { return *store_; }

  Result<std::uint64_t> replicate(const ReplicateRequest& request) override;
  std::vector<TransferInfo> transfers() const override { return net_->transfers(); }
  std::optional<TransferInfo> transfer(std::uint64_t id) const override { return net_->transfer(id); }
  const TransferMetrics& transfer_metrics() const override { return net_->metrics(); }
  std::uint64_t rate_limit() const override { return net_->rate_limit(); }
  void set_rate_limit(std::uint64_t bytes_per_second) override { net_->set_rate_limit(bytes_per_second); }

 private:
  TransferService() = default;
  Result<gossip::Member> find_member(const std::string& spec) const;

  std::unique_ptr<storage::SnapshotStore> store_;
  std::unique_ptr<TransferNet> net_;
  MembersFn members_;
};

}  // namespace shoal::agent
