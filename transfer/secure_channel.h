#pragma once
// transfer/secure_channel.h: one end of an authenticated, encrypted TCP
// stream between two nodes. Owns the handshake (ephemeral X25519, Ed25519
// static keys signed over the transcript, cluster key mixed into every key),
// the per-direction traffic keys and their rekeying, and the record framing.
// Does no I/O: bytes in via on_bytes(), bytes out via poll_transmit(); time is
// passed in; randomness comes from the injected Random. Single-threaded.
// docs/protocol.md ("Secure channel") is the specification and threat model.
//
// Call order after any on_*() or send(): poll_message() (or peek_message() and
// pop_message()) until empty, then poll_transmit() until empty, then
// next_deadline() to arm the timer. When state() becomes kFailed the driver
// closes the socket; nothing more comes out of the channel.
//
// Copies: a driver that reads the socket straight into receive_space() and
// takes messages with peek_message() touches each received byte twice (the
// kernel's copy and the in-place decryption); one that hands written buffers
// back through recycle_transmit() sends without allocating, and seals each
// payload straight into the frame (transfer/frame_seal.h). on_bytes() and
// poll_message() are the same operations with one copy each, for callers that
// do not care (tests, the handshake).

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <span>
#include <string_view>

#include "base/bytes.h"
#include "base/crypto.h"
#include "base/random.h"
#include "base/result.h"
#include "base/time.h"

namespace shoal::transfer {

// Wire limits. A record is u32 big-endian length, then that many bytes.
inline constexpr std::uint8_t kChannelVersion = 1;
// The initiator's first bytes. 'S' (0x53) can never begin a gossip stream
// frame (its length would be above 1 GiB), so a listener shared with gossip
// push-pull can tell the two apart from the first byte.
inline constexpr std::array<std::uint8_t, 8> kChannelPreamble = {'S', 'H', 'O', 'A', 'L', 'T', 'X', kChannelVersion};
inline constexpr std::size_t kRecordHeaderBytes = 4;
inline constexpr std::size_t kFrameCounterBytes = 8;
inline constexpr std::size_t kFrameTagBytes = 16;
inline constexpr std::size_t kFrameTypeBytes = 1;
// Largest application message carried by one frame (chunk pieces are smaller).
inline constexpr std::size_t kMessageBytesMax = 256 * 1024;
// Most parts one send_parts() call may give (they are sealed from where they lie).
inline constexpr std::size_t kSendPartsMax = 8;
inline constexpr std::size_t kFramePlaintextBytesMax = kFrameTypeBytes + kMessageBytesMax;
// Largest record body after the handshake: counter, ciphertext, tag.
inline constexpr std::size_t kFrameBytesMax = kFrameCounterBytes + kFramePlaintextBytesMax + kFrameTagBytes;
inline constexpr std::size_t kFrameBytesMin = kFrameCounterBytes + kFrameTypeBytes + kFrameTagBytes;
// Largest handshake record body (the biggest, message 2, is about 170 bytes).
inline constexpr std::size_t kHandshakeBytesMax = 512;
static_assert(kFrameBytesMax < (std::size_t{1} << 31), "record length must fit a u32 with room to spare");
static_assert(kHandshakeBytesMax < kFrameBytesMax);
static_assert(kFrameBytesMin > kFrameCounterBytes + kFrameTagBytes, "a frame always carries its type byte");

enum class ChannelRole : std::uint8_t { kInitiator, kResponder };

enum class ChannelState : std::uint8_t {
  kHandshaking,
  kEstablished,
  kClosed,  // Both directions ended cleanly (close frames), or we closed and the peer hung up.
  kFailed,
};

// Why a channel failed. Each has a counter in ChannelMetrics.
enum class FailReason : std::uint8_t {
  kNone = 0,
  kMalformed,         // A handshake record that does not parse, or a frame shorter than its minimum.
  kVersion,           // The peer speaks another channel version.
  kWrongClusterKey,   // Message 1 opens under none of our cluster keys.
  kPeerKeyRejected,   // The peer's static key is not the one pinned for it.
  kBadSignature,      // The peer's transcript signature does not verify.
  kBadDh,             // The peer's ephemeral key is a low-order point.
  kDecryptFailed,     // A handshake payload or frame failed authentication (tampered).
  kReplayed,          // A frame carried a counter we already accepted.
  kReordered,         // A frame carried a counter from the future (a frame was dropped or reordered).
  kOversize,          // A record length above the limit (checked before buffering it).
  kTruncated,         // The stream ended mid-record or without a close frame.
  kUnexpectedFrame,   // An unknown frame type or data after close.
  kHandshakeTimeout,
  kIdleTimeout,
  kCount,
};
std::string_view fail_reason_name(FailReason reason);

// Counters shared by all channels of a node (owned by the driver).
struct ChannelMetrics {
  std::array<std::uint64_t, static_cast<std::size_t>(FailReason::kCount)> failures{};
  std::uint64_t handshakes_completed = 0;
  std::uint64_t frames_sent = 0;
  std::uint64_t frames_received = 0;
  std::uint64_t rekeys = 0;  // Both directions.

  std::uint64_t failed(FailReason reason) const { return failures[static_cast<std::size_t>(reason)]; }
};

// Decides whether a peer's static key is acceptable. Returns ok, or an error
// (PermissionDenied) saying why not. The node id passed is hash(public key),
// so a callback that compares the key the mesh gossips for that id pins it.
using PeerAuthorizer = std::function<Status(const NodeId& id, const PublicKey& key)>;

struct ChannelConfig {
  ChannelRole role = ChannelRole::kInitiator;
  // Initiator: message 1 is bound to keyring.primary(). Responder: accepts any key of the ring.
  Keyring keyring{ClusterKey{}};  // REQUIRES: set to the node's keyring (the all-zero default is refused).
  // The key we expect the peer to hold (the initiator knows whom it dialed).
  // When set, any other key is refused before the authorizer runs.
  std::optional<PublicKey> expected_peer_key;
  // Called for the peer's key when expected_peer_key is unset (the responder's
  // usual case). REQUIRES: one of the two is set.
  PeerAuthorizer authorize_peer;

  Duration handshake_timeout = seconds(10);
  Duration idle_timeout = seconds(60);         // No bytes from the peer for this long: fail.
  Duration keepalive_interval = seconds(15);   // Send an empty frame after this long silent.
  // Rekey a direction after this many frames or plaintext bytes, whichever comes first.
  std::uint64_t rekey_frames = std::uint64_t{1} << 20;
  std::uint64_t rekey_bytes = std::uint64_t{1} << 30;
  // send() refuses (ResourceExhausted) while this many bytes await poll_transmit().
  std::size_t transmit_bytes_max = 4 * 1024 * 1024;
  // Decrypted messages held for poll_message(); past this, frames wait encrypted.
  std::size_t inbox_bytes_max = 2 * kMessageBytesMax;
};

class SecureChannel {
 public:
  // The identity must outlive the channel. metrics may be null.
  SecureChannel(const ChannelConfig& config, const Identity& identity, Random& random, Instant now,
                ChannelMetrics* metrics = nullptr);
  ~SecureChannel();
  SecureChannel(const SecureChannel&) = delete;
  SecureChannel& operator=(const SecureChannel&) = delete;

  // Inputs.
  // Bytes read from the socket, split anywhere. Errors put the channel in kFailed.
  void on_bytes(Instant now, ByteView bytes);
  // Zero-copy form of on_bytes(): writable space of at least `bytes_min` bytes
  // at the end of the receive buffer (read the socket into it), then
  // on_received() with how many bytes were written there. The span is valid
  // until the next call of a non-const method. Invalidates peek_message() views.
  std::span<std::uint8_t> receive_space(std::size_t bytes_min);
  void on_received(Instant now, std::size_t bytes);
  // The peer closed its sending side (TCP FIN). Fails with kTruncated unless
  // the peer sent a close frame first.
  void on_eof(Instant now);
  // The driver's timer fired (any time at or after next_deadline()).
  void on_timer(Instant now);

  // Queues one application message. FailedPrecondition unless established and
  // not closed by us; InvalidArgument above kMessageBytesMax; ResourceExhausted
  // while transmit_bytes_max bytes are waiting (drain poll_transmit() first).
  [[nodiscard]] Status send(Instant now, ByteView message);
  // The same for a message given in parts (e.g. a header and a view of a
  // chunk), at most kSendPartsMax: parts of 64 bytes or more are encrypted
  // from where they lie straight into the frame, without a copy first.
  [[nodiscard]] Status send_parts(Instant now, std::span<const ByteView> parts);
  // Sends a close frame; no more send() after it. The peer's messages still arrive.
  void close(Instant now);

  // Outputs.
  std::optional<Bytes> poll_transmit();
  // Hands back a buffer poll_transmit() returned, once written: the next frames
  // are sealed into it instead of a fresh allocation (one spare is kept).
  void recycle_transmit(Bytes&& buffer);
  std::optional<Bytes> poll_message();
  // The next delivered message without copying it out of the receive buffer.
  // Valid until pop_message() or any other non-const call.
  std::optional<ByteView> peek_message() const;
  void pop_message();
  std::optional<Instant> next_deadline() const;

  // Getters.
  ChannelState state() const { return state_; }
  FailReason fail_reason() const { return fail_reason_; }
  // Why it failed, with a code chosen for the caller: Aborted (reconnect),
  // PermissionDenied (authentication), DeadlineExceeded (timeouts).
  const Error& error() const { return error_; }
  bool established() const { return state_ == ChannelState::kEstablished; }
  bool peer_closed() const { return peer_closed_; }
  // Set once the peer's key passed the pin and its signature verified.
  const std::optional<PublicKey>& peer_key() const { return peer_key_; }
  // Transcript hash: equal on both ends of one session, unique per session.
  const Hash256& session_hash() const { return h_; }
  // Non-secret fingerprints (BLAKE2b of the current keys) for tests and logs.
  Hash256 send_key_fingerprint() const;
  Hash256 receive_key_fingerprint() const;
  std::uint64_t frames_sent() const { return send_.counter; }
  std::uint64_t frames_received() const { return receive_.counter; }
  std::uint64_t rekeys() const { return send_.rekeys + receive_.rekeys; }
  std::size_t transmit_bytes() const { return transmit_used_; }
  // False while the driver should stop reading the socket (frames wait for poll_message()).
  bool wants_bytes() const;

 private:
  struct Direction {
    std::array<std::uint8_t, 32> key{};
    std::uint64_t counter = 0;           // Next frame's counter.
    std::uint64_t frames_this_key = 0;
    std::uint64_t bytes_this_key = 0;
    std::uint64_t rekeys = 0;
  };
  struct Symmetric {
    std::array<std::uint8_t, 32> ck{};
    Hash256 h{};
    std::array<std::uint8_t, 32> k{};
    std::uint64_t n = 0;
  };

  void start_initiator();
  // body points into receive_buffer_; frames are decrypted in place.
  void handle_record(Instant now, std::span<std::uint8_t> body);
  void handle_message1(ByteView body);
  void handle_message2(ByteView body);
  void handle_message3(ByteView body);
  void handle_frame(Instant now, std::span<std::uint8_t> body);
  void process(Instant now);
  bool check_preamble();
  void queue_record(ByteView body);
  // `bytes` more bytes at the end of what awaits poll_transmit(), to be written
  // by the caller. Valid until the next call.
  std::uint8_t* transmit_room(std::size_t bytes);
  void send_frame(Instant now, std::uint8_t type, std::span<const ByteView> parts);
  void compact_receive_buffer();
  void split(const Symmetric& s);
  Status check_peer(const PublicKey& key);
  void rekey_if_due(Direction& d);
  void fail(FailReason reason, std::string message);
  void wipe_ephemeral();

  ChannelConfig config_;
  const Identity& identity_;
  Random& random_;
  ChannelMetrics* metrics_;

  ChannelState state_ = ChannelState::kHandshaking;
  FailReason fail_reason_ = FailReason::kNone;
  Error error_{Code::kOk, ""};
  int handshake_step_ = 0;  // Records of the handshake seen so far (both directions).
  bool preamble_seen_ = false;  // Responder only.

  Symmetric sym_;
  Hash256 h_{};
  std::array<std::uint8_t, 32> ephemeral_secret_{};
  std::array<std::uint8_t, 32> ephemeral_public_{};
  std::array<std::uint8_t, 32> peer_ephemeral_{};
  std::optional<PublicKey> peer_key_;

  Direction send_;
  Direction receive_;
  bool closed_by_us_ = false;
  bool peer_closed_ = false;

  Instant handshake_deadline_;
  Instant last_received_;
  Instant last_sent_;

  // Received bytes live in receive_buffer_[0, receive_end_); its size() is
  // its capacity (grown, never shrunk, so nothing is zero-filled twice).
  // Frames are decrypted in place; delivered messages stay where they are
  // (inbox_ holds their offsets) until popped, so the buffer is compacted only
  // while the inbox is empty.
  Bytes receive_buffer_;
  std::size_t receive_offset_ = 0;  // Start of the first record not yet handled.
  std::size_t receive_end_ = 0;
  struct Delivered {
    std::size_t offset = 0;
    std::size_t size = 0;
  };
  std::deque<Delivered> inbox_;
  std::size_t inbox_bytes_ = 0;
  // Bytes awaiting poll_transmit() are transmit_[0, transmit_used_). Its size()
  // may be larger: a recycled buffer keeps the size it was sent with, so
  // frames sealed into it again do not zero-fill it first.
  Bytes transmit_;
  std::size_t transmit_used_ = 0;
  Bytes transmit_spare_;  // A written buffer handed back by the driver (its size kept likewise).
};

}  // namespace shoal::transfer
