#pragma once
// node/agent/transfer_net.h: snapshot transfers over TCP, the libuv driver of
// transfer::TransferConnection (docs/protocol.md, "driver loop"). Owns the
// transfer connections (dialed, accepted on its own listener, or adopted
// from the gossip listener after its first byte said 'S'), their write
// queues and timers, the per-node token bucket, one StoreSink per received
// snapshot, the list of active and recent transfers, and the metrics.
// Does not decide what to replicate (the agent and, later, placement do) and
// does not know the member table: peers come in as {name, address, key} and
// inbound keys are checked by the injected authorizer.
// Single-threaded: every method and callback runs on the loop thread; store
// calls are synchronous LMDB transactions on that thread.

#include <uv.h>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/address.h"
#include "base/crypto.h"
#include "base/random.h"
#include "base/result.h"
#include "node/agent/transfer_rate.h"
#include "storage/transfer_store.h"
#include "transfer/connection.h"

namespace shoal::agent {

inline constexpr std::size_t kTransferConnectionsMax = 64;             // Open at once, both directions.
inline constexpr std::size_t kTransferWriteQueueBytesMax = 1 << 20;    // Per connection, handed to uv_write.
// Space offered to each socket read, in the connection's own receive buffer
// (frames are decrypted where they land): about this plus one frame per connection.
inline constexpr std::size_t kTransferReadBufferBytes = 256 * 1024;
inline constexpr std::size_t kTransfersRecentMax = 64;                 // Finished transfers remembered.
inline constexpr std::size_t kTransfersActiveMax = 256;
// Inbound connections still in the handshake. A new one past this closes the
// oldest (counted): a flood of silent or stalled connections cannot lock real
// peers out, whose handshake takes about a millisecond.
inline constexpr std::size_t kTransferHandshakingInboundMax = 16;
// A transfer this node started (push or pull) that fails for a reason a new
// connection may cure (Aborted, DeadlineExceeded, Unavailable, IOError,
// ResourceExhausted) is tried again, up to this many attempts in all, after
// kTransferRetryFirst, doubling to kTransferRetryMax (each +-25%).
inline constexpr std::uint32_t kTransferAttemptsMax = 6;
inline constexpr Duration kTransferRetryFirst = milliseconds(250);
inline constexpr Duration kTransferRetryMax = seconds(8);
// Progress events (set_on_event) at most this often per transfer.
inline constexpr Duration kTransferProgressEventInterval = seconds(1);
// The transfer preamble's first byte ("SHOALTX"); gossip frames start with 0x00.
inline constexpr std::uint8_t kTransferFirstByte = 'S';

struct TransferPeer {
  std::string name;
  Address address;
  PublicKey key{};
};

enum class TransferDirection : std::uint8_t { kSend, kReceive };
// kRetrying: an attempt failed and another is scheduled (error holds why).
enum class TransferState : std::uint8_t { kConnecting, kActive, kRetrying, kDone, kFailed };
std::string_view transfer_state_name(TransferState state);

struct TransferInfo {
  std::uint64_t id = 0;
  TransferDirection direction = TransferDirection::kSend;
  std::string peer;  // Name for dialed peers, address for accepted ones.
  std::string project;
  storage::ChunkId snapshot{};
  TransferState state = TransferState::kConnecting;
  Error error{Code::kOk, ""};
  transfer::SyncProgress progress;
  Instant started{};
  std::optional<Instant> finished;
  std::uint32_t attempts = 1;         // Connections tried so far (retries + 1).
  std::optional<Instant> retry_at;    // While kRetrying.
  Instant last_progress_event{};      // For the rate limit of progress events.
};

// What set_on_event reports: one transfer's start, progress (at most once per
// kTransferProgressEventInterval), a scheduled retry, and its end.
enum class TransferEventKind : std::uint8_t { kStarted, kProgress, kRetrying, kCompleted, kFailed };
std::string_view transfer_event_name(TransferEventKind kind);

struct TransferMetrics {
  std::uint64_t bytes_sent = 0;        // Chunk bytes (as stored) of finished sessions.
  std::uint64_t bytes_received = 0;
  std::uint64_t chunks_sent = 0;
  std::uint64_t chunks_received = 0;
  std::uint64_t chunks_refused_corrupt = 0;  // The only refusal reason today: bytes not their id.
  std::uint64_t wire_bytes_out = 0;    // Everything written to sockets (handshakes, framing).
  std::uint64_t wire_bytes_in = 0;
  std::uint64_t transfers_done = 0;
  std::uint64_t transfers_failed = 0;
  std::uint64_t connections_out = 0;
  std::uint64_t connections_in = 0;
  std::uint64_t connections_refused = 0;  // Over kTransferConnectionsMax.
  std::uint64_t connections_evicted = 0;  // Handshaking inbound, closed for a newer one.
  std::uint64_t transfer_retries = 0;     // Attempts scheduled after a failed one.
  double transfer_seconds_sum = 0;        // Of finished transfers (done or failed).
  transfer::ChannelMetrics channel;       // Handshake failures by reason live here.
};

class TransferNet {
 public:
  using FinishedFn = std::function<void(const TransferInfo&)>;
  using EventFn = std::function<void(TransferEventKind, const TransferInfo&)>;

  // identity, keyring and store must outlive this object. authorize decides
  // on inbound peers' keys (the agent compares with the member table).
  TransferNet(uv_loop_t* loop, const Identity& identity, const Keyring& keyring, Random& random,
              storage::SnapshotStore& store, transfer::PeerAuthorizer authorize);
  ~TransferNet();
  TransferNet(const TransferNet&) = delete;
  TransferNet& operator=(const TransferNet&) = delete;

  // A listener of its own (tests, or a dedicated port). Port 0: the kernel picks.
  Status listen(const Address& bind);
  const Address& bound_address() const { return bound_; }
  // Takes over an accepted TCP socket whose first bytes (starting with
  // kTransferFirstByte) were already read by another listener. The fd is
  // owned from here on, closed on every path.
  void adopt(uv_os_sock_t fd, ByteView first_bytes);

  // Starts sending `snapshot` of `project` to the peer, dialing it (pinned to
  // peer.key) or reusing an open connection to it. NotFound if the snapshot is
  // not committed here; ResourceExhausted at a limit. If this node is already
  // sending that snapshot to that peer (or waiting to retry), returns that
  // transfer's id.
  Result<std::uint64_t> push(const TransferPeer& peer, const std::string& project, const storage::ChunkId& snapshot);
  // Asks the peer to send `snapshot` of `project` here (a pull), dialing it or
  // reusing an open connection. The peer refuses (NotFound) if it lacks it.
  Result<std::uint64_t> pull(const TransferPeer& peer, const std::string& project, const storage::ChunkId& snapshot);

  // Active transfers, then recent ones, newest first.
  std::vector<TransferInfo> transfers() const;
  std::optional<TransferInfo> transfer(std::uint64_t id) const;
  // Called once per transfer when it ends (done or failed).
  void set_on_finished(FinishedFn fn) { on_finished_ = std::move(fn); }
  // Called on every transfer event (see TransferEventKind).
  void set_on_event(EventFn fn) { on_event_ = std::move(fn); }
  // Attempts per locally started transfer (1 = no retries); tests shorten it.
  void set_attempts_max(std::uint32_t attempts) { attempts_max_ = std::max<std::uint32_t>(1, attempts); }
  // Names an authenticated inbound peer by its key (e.g. its member name) for
  // the transfer list; "" keeps its address.
  void set_peer_namer(std::function<std::string(const PublicKey&)> namer) { namer_ = std::move(namer); }
  // Asked before a received snapshot is cataloged (fencing of older epochs).
  using CommitCheck = std::function<Status(const std::string& project, const storage::ChunkId& snapshot,
                                           const storage::Commit& commit)>;
  void set_commit_check(CommitCheck check) { commit_check_ = std::move(check); }
  // Bytes per second for all transfer connections together; 0 = unlimited.
  void set_rate_limit(std::uint64_t bytes_per_second);
  std::uint64_t rate_limit() const { return bucket_.rate(); }
  const TransferMetrics& metrics() const { return metrics_; }
  std::size_t connections() const { return conns_.size(); }

  // Ends every transfer (failed, "shutting down") and closes every handle.
  void close();

  struct Conn;  // Public for the libuv callbacks; opaque elsewhere.
  struct WriteReq;
  void erase(Conn& conn);

 private:
  Conn* new_conn(bool outbound, const std::string& peer_label);
  Result<Conn*> connection_to(const TransferPeer& peer);
  // A transfer of the same snapshot with the same peer this node started and
  // that is still running (or waiting to retry): push and pull return it
  // instead of starting a second one that would fetch the same chunks.
  std::optional<std::uint64_t> running(TransferDirection direction, const TransferPeer& peer,
                                       const std::string& project, const storage::ChunkId& snapshot) const;
  // Checks shared by push and pull before anything is dialed or recorded.
  Status admit_transfer(const std::string& project) const;
  // Records a new transfer on conn and queues its offer (or, receiving, its
  // request); starts it now if the channel is already up. Returns its id.
  // retry_of: an existing transfer's id (a new attempt) or 0.
  std::uint64_t begin_transfer(Conn& conn, TransferDirection direction, const std::string& peer_name,
                               const std::string& project, const storage::ChunkId& snapshot, std::uint64_t size_hint,
                               std::uint64_t retry_of = 0);
  // Records what a locally started transfer needs for another attempt.
  void remember_for_retry(std::uint64_t id, const TransferPeer& peer, TransferDirection direction,
                          std::uint64_t size_hint);
  // finish() of a failed attempt: schedules another and returns true if allowed.
  bool schedule_retry(TransferInfo& info, const Error& error, Instant now);
  void arm_retry_timer(Instant now);
  void run_retries();
  void evict_handshaking();
  void emit(TransferEventKind kind, const TransferInfo& info);
  Result<transfer::SyncSource*> accept_request(Conn& conn, const std::string& project,
                                               const storage::ChunkId& snapshot);
  void start_reading(Conn& conn);
  void pump(Conn& conn);
  void handle_event(Conn& conn, transfer::ConnectionEvent& event);
  void start_pending_offers(Conn& conn, Instant now);
  void name_peer(Conn& conn);  // Inbound, once authenticated: key and label.
  void fail_conn(Conn& conn, const Error& error);
  void finish(std::uint64_t transfer_id, TransferState state, const Error& error,
              const transfer::SyncProgress& progress, Instant now);
  void close_conn(Conn& conn);
  void on_read(Conn& conn, ssize_t nread, const uv_buf_t* buf);
  void on_connected(Conn& conn, int status);
  void on_written(WriteReq* req, int status);
  void pump_all();
  Result<transfer::SyncSink*> accept_offer(Conn& conn, const std::string& project, const storage::ChunkId& snapshot);
  transfer::ConnectionConfig config_for(Conn& conn, transfer::ChannelRole role);

  static void on_connection(uv_stream_t* server, int status);

  uv_loop_t* loop_;
  const Identity& identity_;
  const Keyring& keyring_;
  Random& random_;
  storage::SnapshotStore& store_;
  storage::StoreSource source_;
  transfer::PeerAuthorizer authorize_;
  uv_tcp_t listener_{};
  bool listening_ = false;
  Address bound_;
  bool closing_ = false;
  std::list<std::unique_ptr<Conn>> conns_;
  TokenBucket bucket_;
  std::uint64_t next_transfer_id_ = 1;
  std::vector<TransferInfo> active_;
  std::deque<TransferInfo> recent_;  // <= kTransfersRecentMax, newest first.
  TransferMetrics metrics_;
  FinishedFn on_finished_;
  EventFn on_event_;
  struct Retry {
    TransferPeer peer;
    TransferDirection direction = TransferDirection::kSend;
    std::uint64_t size_hint = 0;
  };
  std::map<std::uint64_t, Retry> retries_;  // Locally started transfers, by id.
  std::uint32_t attempts_max_ = kTransferAttemptsMax;
  uv_timer_t retry_timer_{};
  std::function<std::string(const PublicKey&)> namer_;
  CommitCheck commit_check_;
};

}  // namespace shoal::agent
