#pragma once
// transfer/connection.h: everything one TCP connection between two nodes
// carries for transfers: a SecureChannel and the chunk-sync sessions
// multiplexed over it, in both directions. Owns the sessions, routes
// messages by session id, and shares the channel fairly between senders.
// Does not own stores (SyncSource/SyncSink outlive their sessions) and does
// no I/O: the libuv adapter moves bytes and arms the timer. Single-threaded.
//
// Call order after any on_*() or offer(): poll_transmit() while the socket
// has room (each call pulls at most about fill_bytes from the sessions), then
// poll_event() until empty, then next_deadline(). Stop reading the socket
// while wants_bytes() is false.

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "transfer/chunk_sync.h"
#include "transfer/secure_channel.h"

namespace shoal::transfer {

inline constexpr std::size_t kSessionsPerConnectionMax = 64;

// Decides whether to receive an offered snapshot, and into which store.
// Return the sink (it must outlive the session), or an error sent back to
// the offering peer (e.g. FailedPrecondition "not a replica of P").
using OfferAcceptor = std::function<Result<SyncSink*>(const std::string& project, const ChunkId& snapshot)>;
// Decides whether to serve a snapshot the peer asks for (a pull), and from
// which store. Return the source (it must outlive the session) or an error
// sent back to the requesting peer (e.g. NotFound "not held here").
using RequestAcceptor = std::function<Result<SyncSource*>(const std::string& project, const ChunkId& snapshot)>;

struct ConnectionConfig {
  ChannelConfig channel;
  SyncConfig sync;
  OfferAcceptor accept_offer;  // REQUIRES: set if the peer may offer snapshots.
  RequestAcceptor accept_request;  // Unset: pulls are refused (FailedPrecondition).
  // Application bytes pulled from the sessions per poll_transmit().
  std::size_t fill_bytes = 256 * 1024;
};

enum class SessionRole : std::uint8_t { kSender, kReceiver };

struct ConnectionEvent {
  enum class Kind : std::uint8_t {
    kEstablished,     // The handshake completed; offer() may now be called.
    kSessionDone,     // Sender: the receiver holds S. Receiver: S committed (or already held).
    kSessionFailed,   // error says why.
    kChannelFailed,   // The connection is unusable; every open session was failed before this.
    kChannelClosed,   // The peer closed cleanly (or we did); open sessions were failed. Flush, then close the socket.
  };
  Kind kind = Kind::kEstablished;
  std::uint64_t session = 0;
  SessionRole role = SessionRole::kSender;
  std::string project;
  ChunkId snapshot{};
  Error error{Code::kOk, ""};
  SyncProgress progress;
};

class TransferConnection {
 public:
  TransferConnection(const ConnectionConfig& config, const Identity& identity, Random& random, Instant now,
                     ChannelMetrics* metrics = nullptr);

  // Inputs.
  void on_bytes(Instant now, ByteView bytes);
  // Zero-copy on_bytes() (SecureChannel::receive_space): read the socket into
  // the span, then on_received() with the count.
  std::span<std::uint8_t> receive_space(std::size_t bytes_min);
  void on_received(Instant now, std::size_t bytes);
  void on_eof(Instant now);
  void on_timer(Instant now);

  // Starts sending `snapshot` to the peer. Returns the session id.
  // FailedPrecondition until established (or after failure); ResourceExhausted
  // at kSessionsPerConnectionMax open sessions.
  [[nodiscard]] Result<std::uint64_t> offer(Instant now, SyncSource& source, const std::string& project,
                                            const ChunkId& snapshot, std::uint64_t size_hint);
  // Asks the peer to send `snapshot` (a pull): opens a receiver session into
  // `sink` that waits for the peer's OFFER of exactly that snapshot, and sends
  // REQUEST. The session ends like any other (kSessionDone/kSessionFailed with
  // role kReceiver; a refusal carries the peer's code and text). Same errors
  // as offer(); ResourceExhausted also when the channel's buffer is full.
  [[nodiscard]] Result<std::uint64_t> request(Instant now, SyncSink& sink, const std::string& project,
                                              const ChunkId& snapshot);
  // Ends one session (either role), telling the peer. No-op if unknown.
  void cancel(Instant now, std::uint64_t session, const Error& error);
  // Ends every session (Aborted, "closing") and sends the channel's close frame.
  void close(Instant now);

  // Outputs.
  std::optional<Bytes> poll_transmit(Instant now);
  // A buffer poll_transmit() returned, once written (SecureChannel::recycle_transmit).
  void recycle_transmit(Bytes&& buffer) { channel_.recycle_transmit(std::move(buffer)); }
  std::optional<ConnectionEvent> poll_event();
  std::optional<Instant> next_deadline() const;

  // Getters.
  const SecureChannel& channel() const { return channel_; }
  bool wants_bytes() const { return channel_.wants_bytes(); }
  std::size_t sessions() const { return sessions_.size(); }
  // Progress of an open session, nullopt if it is not open.
  std::optional<SyncProgress> progress(std::uint64_t session) const;
  // Messages for sessions that no longer exist (late pieces after a cancel).
  std::uint64_t stray_messages() const { return stray_messages_; }

 private:
  struct Session {
    SessionRole role;
    std::string project;
    ChunkId snapshot{};
    std::unique_ptr<SyncSender> sender;
    std::unique_ptr<SyncReceiver> receiver;
    bool requested = false;  // Receiver opened by request(): the offer must match.
  };

  void route(Instant now, ByteView message);
  void fill(Instant now);
  void reap();
  void after_channel_input(Instant now);
  std::uint64_t new_session_id(bool peer_sends = false);
  void serve_request(Instant now, const SyncMessage& request);
  bool ours(std::uint64_t session) const;
  void refuse_offer(Instant now, std::uint64_t session, const Error& error);

  ConnectionConfig config_;
  Random& random_;
  SecureChannel channel_;
  bool established_reported_ = false;
  bool failure_reported_ = false;
  bool close_reported_ = false;
  std::map<std::uint64_t, Session> sessions_;  // Ordered: round-robin is deterministic.
  std::uint64_t next_turn_ = 0;                // Session id to start the next fill round at.
  std::deque<ConnectionEvent> events_;
  std::uint64_t stray_messages_ = 0;
};

}  // namespace shoal::transfer
