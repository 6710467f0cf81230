#pragma once
// node/agent/placement_service.h: drives node/core's consensus register in
// the agent. Owns the durable acceptor table ("placement" in the data dir's
// LMDB; every promise and accept is committed before its reply leaves), the
// proposer, and the placement datagrams (tag byte, sender id, message) that
// travel sealed over the gossip socket. Single-threaded: the loop thread.

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/crypto.h"
#include "base/random.h"
#include "base/result.h"
#include "base/time.h"
#include "node/core/proposer.h"
#include "storage/lmdb.h"

namespace shoal::agent {

// First byte of a placement datagram's plaintext. 0xc1 is never used by
// msgpack, so gossip datagrams (msgpack arrays) can never start with it.
inline constexpr std::uint8_t kPlacementDatagramTag = 0xc1;
inline constexpr Duration kLocateTimeout = milliseconds(400);
// A forwarded admin request is sent again every kForwardRetry until its reply
// arrives (datagrams can be lost) and fails after kForwardTimeout.
inline constexpr Duration kForwardRetry = milliseconds(500);
inline constexpr Duration kForwardTimeout = seconds(5);
// How long a receiver keeps the reply to a forward, so that a retry of it is
// answered again instead of run again (a save must not start twice).
inline constexpr Duration kForwardReplyKept = seconds(60);
inline constexpr std::size_t kForwardRepliesMax = 4096;

class PlacementService {
 public:
  using SendFn = std::function<void(const NodeId& to, Bytes plaintext)>;
  using Done = std::function<void(Result<core::RegisterValue>)>;

  // counter_floor must exceed every ballot counter this node used before
  // (the agent passes its incarnation << 32).
  static Result<std::unique_ptr<PlacementService>> open(storage::Env& env, NodeId self,
                                                        std::uint64_t counter_floor, Random& random, SendFn send);

  static bool is_placement_datagram(ByteView plaintext) {
    return !plaintext.empty() && plaintext[0] == kPlacementDatagramTag;
  }
  // A placement datagram's plaintext; malformed ones are counted and dropped.
  void on_datagram(ByteView plaintext, Instant now);
  void tick(Instant now);
  std::optional<Instant> next_wakeup() const;

  // Applies `change` to the project's register. With a hint, starts there;
  // without, uses this node's own records, else asks `locate_among` which
  // generation they know (not found anywhere: the change sees no project).
  void change(const std::string& project, std::optional<core::Hint> hint, std::vector<NodeId> locate_among,
              core::ChangeFn change, Instant now, Done done);
  // Whether any of `among` (or this node) holds state for the project.
  void locate(const std::string& project, std::vector<NodeId> among, Instant now,
              std::function<void(std::optional<core::Hint>)> done);

  // An admin request forwarded to another node's admin API (node/core/paxos.h
  // Forward), and that API's answer.
  struct ForwardAnswer {
    std::uint64_t status = 0;
    std::string body;
  };
  using ForwardHandler = std::function<ForwardAnswer(const NodeId& from, const core::Forward&)>;
  // Answers forwards from other nodes; without one they get a 503.
  void set_forward_handler(ForwardHandler handler) { forward_handler_ = std::move(handler); }
  // Sends a request to `to`'s admin API; done gets its answer, or kUnavailable
  // when none came within kForwardTimeout, or kInvalidArgument when the
  // request is too large to forward.
  void forward(const NodeId& to, const std::string& project, std::string method, std::string path, std::string body,
               Instant now, std::function<void(Result<ForwardAnswer>)> done);

  // What this node holds of a project, for other nodes' status reports.
  using HoldingsFn = std::function<core::Inquired(const core::Inquire&)>;
  void set_holdings(HoldingsFn fn) { holdings_ = std::move(fn); }
  // Asks `nodes` what they hold of the project (and whether they hold
  // `snapshot`); done gets one answer per node that replied in time.
  using Answers = std::map<NodeId, core::Inquired>;
  void inquire(const std::string& project, const Hash256& snapshot, const std::vector<NodeId>& nodes, Instant now,
               std::function<void(Answers)> done);

  // The newest value this node holds per project (its own view; stale is
  // possible, missing is possible). For listings and the repair loop.
  Result<std::vector<core::RegisterValue>> local_values();
  Result<std::optional<core::RegisterValue>> local_value(const std::string& project);

  struct Counters {
    std::uint64_t messages_in = 0;
    std::uint64_t messages_out = 0;
    std::uint64_t malformed = 0;
    std::uint64_t durable_writes = 0;
    std::uint64_t changes_ok = 0;
    std::uint64_t changes_failed = 0;
    std::uint64_t forwards_sent = 0;      // Forwarded requests (not counting retries).
    std::uint64_t forwards_served = 0;    // Forwards from other nodes run here.
    std::uint64_t forwards_repeated = 0;  // Retries answered from the kept reply.
  };
  const Counters& counters() const { return counters_; }
  const core::Proposer::Stats& proposer_stats() const { return proposer_->stats(); }

 private:
  PlacementService() = default;
  void send(const NodeId& to, const core::Message& message);
  void flush(core::ProposerOutput& out);
  void on_acceptor_request(const NodeId& from, const core::Message& message);
  std::optional<core::Hint> own_hint(const std::string& project);
  void finish_locate(std::uint64_t id);

  struct PendingInquiry {
    std::string project;
    std::set<NodeId> waiting;
    Instant deadline;
    Answers answers;
    std::function<void(Answers)> done;
  };
  void finish_inquiry(std::uint64_t id);

  struct PendingForward {
    NodeId to;
    core::Forward request;
    Instant next_send;
    Instant deadline;
    std::function<void(Result<ForwardAnswer>)> done;
  };
  struct KeptReply {
    core::ForwardReply reply;
    Instant expires;
  };
  void on_forward(const NodeId& from, const core::Forward& request, Instant now);
  void on_forward_reply(const NodeId& from, const core::ForwardReply& reply);
  void retry_forwards(Instant now);

  struct PendingLocate {
    std::string project;
    std::size_t waiting = 0;
    Instant deadline;
    std::optional<core::Hint> best;
    std::function<void(std::optional<core::Hint>)> done;
  };

  storage::Env* env_ = nullptr;
  MDB_dbi table_ = 0;
  NodeId self_;
  SendFn send_;
  std::unique_ptr<core::Proposer> proposer_;
  std::map<std::uint64_t, Done> waiting_;  // Proposer op id -> callback.
  std::map<std::uint64_t, PendingLocate> locates_;
  std::uint64_t next_locate_ = 1;
  std::map<std::uint64_t, PendingInquiry> inquiries_;
  HoldingsFn holdings_;
  ForwardHandler forward_handler_;
  std::uint64_t next_forward_ = 1;  // Set above the ids of earlier runs in open().
  std::map<std::uint64_t, PendingForward> forwards_;
  std::map<std::pair<NodeId, std::uint64_t>, KeptReply> forward_replies_;  // (sender, request id) -> reply.
  Counters counters_;
};

}  // namespace shoal::agent
