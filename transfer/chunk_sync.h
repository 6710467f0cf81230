#pragma once
// transfer/chunk_sync.h: the chunk-sync protocol, "make the receiver hold
// snapshot S of project P". Owns the message formats, the sender's and the
// receiver's state machines, and their progress figures. Does not own the
// chunk store: each side talks to a narrow interface (SyncSource, SyncSink)
// that storage/ implements in the node, and in-memory fakes implement in
// tests. Does no I/O and reads no clock: messages in through on_message(),
// out through poll_message(); time is passed in. Single-threaded.
// docs/protocol.md ("Chunk sync") is the specification.
//
// Call order after any on_*(): poll_message() until it returns nothing (call
// it only while the channel accepts more: that is the sender's backpressure),
// then next_deadline(). state() is final once kDone or kFailed and every
// message has been polled.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/bytes.h"
#include "base/crypto.h"
#include "base/result.h"
#include "base/time.h"
#include "transfer/secure_channel.h"

namespace shoal::transfer {

using ChunkId = Hash256;

struct ChunkIdHasher {
  std::size_t operator()(const ChunkId& id) const noexcept {
    std::size_t h = 0;
    for (std::size_t i = 0; i < sizeof h; ++i) {
      h = (h << 8) | id[i];  // Ids are uniform hashes: any 8 bytes spread well.
    }
    return h;
  }
};

// ---- Protocol limits (both ends enforce them on the peer's messages) ----
inline constexpr std::size_t kChunkPieceBytesMax = 128 * 1024;  // Data per kChunk message.
inline constexpr std::size_t kGetIdsMax = 1024;                 // Ids per kGet message.
inline constexpr std::size_t kWindowChunksMax = 1024;           // Requested, not yet answered.
inline constexpr std::size_t kProjectBytesMax = 256;
inline constexpr std::size_t kEndTextBytesMax = 1024;
// storage's manifest limit (256 MiB of plaintext) plus room for its stored-chunk
// header: every chunk a store can hold must be transferable.
inline constexpr std::uint64_t kSyncChunkBytesMax = (256ull << 20) + 64;
// How often a receiver that waits only for its sink's deferred verifications polls it.
inline constexpr Duration kVerifyPollInterval = milliseconds(1);
// Manifests a receiver expands per poll while requests are in flight: their
// answers bring the next poll, so the walk of a large unchanged tree goes on
// between them instead of holding back the requests for what it already found.
inline constexpr std::size_t kWalkManifestsPerPoll = 32;
// Worst-case encodings, to prove every message fits one channel frame.
inline constexpr std::size_t kChunkMessageOverheadMax = 1 + 1 + 9 + 2 + kHashBytes + 9 + 9 + 5;
inline constexpr std::size_t kGetMessageBytesMax = 1 + 1 + 9 + 5 + kGetIdsMax * (2 + kHashBytes);
static_assert(kChunkPieceBytesMax + kChunkMessageOverheadMax <= kMessageBytesMax);
static_assert(kGetMessageBytesMax <= kMessageBytesMax);
static_assert(kGetIdsMax <= kWindowChunksMax);

// kRequest (a pull) travels before any session exists on the sender; the
// connection layer handles it (transfer/connection.h), never the state machines.
enum class SyncMessageType : std::uint8_t { kOffer = 1, kGet = 2, kChunk = 3, kMissing = 4, kEnd = 5, kRequest = 6 };

// One protocol message; which fields matter depends on type (docs/protocol.md).
struct SyncMessage {
  SyncMessageType type = SyncMessageType::kEnd;
  std::uint64_t session = 0;
  std::string project;             // kOffer, kRequest.
  ChunkId id{};                    // kOffer, kRequest: the snapshot. kChunk, kMissing: the chunk.
  std::uint64_t size_hint = 0;     // kOffer: sender's estimate of the snapshot's bytes (0 = unknown).
  std::vector<ChunkId> ids;        // kGet.
  std::uint64_t total = 0;         // kChunk: the chunk's full size.
  std::uint64_t offset = 0;        // kChunk: where this piece starts.
  Bytes data;                      // kChunk.
  Code code = Code::kOk;           // kEnd: kOk = receiver holds the snapshot.
  std::string text;                // kEnd.
  // kChunk decoded by decode_sync_message_view(): the piece, pointing into the
  // decoded bytes (data stays empty). Readers use piece().
  ByteView borrowed{};

  ByteView piece() const { return borrowed.data() != nullptr ? borrowed : ByteView(data); }
};

Bytes encode_sync_message(const SyncMessage& message);
// Strict: InvalidArgument on anything malformed, unknown or above a limit.
Result<SyncMessage> decode_sync_message(ByteView bytes);
// The same decision on the same bytes, but a kChunk's data is not copied: the
// result's piece() points into `bytes` and is valid only as long as they are.
// Chunk pieces are most of what a transfer receives; a general msgpack parse
// copies each one twice (into its zone, then out of it).
Result<SyncMessage> decode_sync_message_view(ByteView bytes);
// A kChunk message as a head (everything before the piece's bytes, exactly as
// encode_sync_message writes it) to be followed by the piece itself, so that
// the piece is copied only once, into the channel's frame.
Bytes encode_chunk_head(std::uint64_t session, const ChunkId& id, std::uint64_t total, std::uint64_t offset,
                        std::size_t piece_bytes);
// The session id of an encoded message, for a driver that runs several
// transfers over one channel. nullopt if it does not parse that far.
std::optional<std::uint64_t> peek_sync_session(ByteView bytes);

enum class ChunkKind : std::uint8_t { kData = 0, kManifest = 1 };

struct ChunkRef {
  ChunkId id{};
  ChunkKind kind = ChunkKind::kData;
  bool operator==(const ChunkRef&) const = default;
};

// What the sender needs from its store.
class SyncSource {
 public:
  virtual ~SyncSource() = default;
  // The stored bytes of a chunk, exactly what the receiver's put() verifies
  // (storage hands out its compressed form). NotFound if absent.
  virtual Result<Bytes> read(const ChunkId& id) = 0;
};

// What the receiver needs from its store. The hash function lives here, not
// in the protocol: put() decides whether bytes are the chunk they claim to be.
class SyncSink {
 public:
  virtual ~SyncSink() = default;
  // True if the snapshot is committed here already (the no-change fast path).
  virtual Result<bool> has_snapshot(const ChunkId& snapshot) = 0;
  // The ids among `ids` that are not stored, in input order, without duplicates.
  virtual Result<std::vector<ChunkId>> missing(std::span<const ChunkId> ids) = 0;
  // Verifies that `bytes` are chunk `id` and stores them. Corruption if they
  // are not (nothing stored); other codes are local failures.
  virtual Status put(const ChunkId& id, ByteView bytes) = 0;
  // The stored bytes of a chunk held here (used to walk manifests already present).
  virtual Result<Bytes> read(const ChunkId& id) = 0;
  // The chunks a manifest references, given its stored bytes. Corruption if
  // they are not a manifest.
  virtual Result<std::vector<ChunkRef>> references(const ChunkId& manifest, ByteView bytes) = 0;
  // Optional shortcut: true if everything below this (present) manifest is
  // known to be present, e.g. it belongs to a committed snapshot. The walk
  // then skips it. Returning false is always correct, only slower.
  virtual Result<bool> complete_below(const ChunkId& manifest) {
    (void)manifest;
    return false;
  }
  // Atomically records the snapshot as held. FailedPrecondition if any chunk it
  // references is missing (the protocol calls it only when none should be).
  virtual Status commit(const ChunkId& snapshot) = 0;

  // Optional: verification of data chunks off the caller's thread, so that
  // hashing (and decompressing) runs on another core while the caller keeps
  // receiving. put_deferred() may return before the bytes are verified; until
  // then the chunk counts as present for missing() and verifying() counts it.
  // A chunk that then fails verification is stored nowhere and is reported
  // once by take_refused(). The defaults verify at once (put()).
  virtual Status put_deferred(const ChunkId& id, Bytes&& bytes) { return put(id, bytes); }
  virtual std::vector<ChunkId> take_refused() { return {}; }
  virtual std::size_t verifying() { return 0; }
};

struct SyncConfig {
  // Receiver: chunks requested and not yet fully received (pipelining depth).
  std::size_t window_chunks = 64;
  // Receiver: ids per kGet. REQUIRES: <= kGetIdsMax.
  std::size_t get_batch = 64;
  // Receiver: ids passed to SyncSink::missing() at once.
  std::size_t missing_batch = 512;
  // Receiver: the walk pauses while this many wanted ids wait to be requested.
  std::size_t want_queue_max = 8192;
  // Both: the largest chunk accepted or sent (memory per transfer is about this much).
  std::uint64_t chunk_bytes_max = 32ull << 20;
  // Sender: bytes of chunk data per kChunk message. REQUIRES: <= kChunkPieceBytesMax.
  std::size_t piece_bytes = kChunkPieceBytesMax;
  // Receiver: times a chunk may arrive damaged before the transfer fails as Corruption.
  std::uint32_t chunk_attempts_max = 3;
  // Both: no progress from the peer for this long while waiting on it: fail.
  Duration stall_timeout = seconds(60);
};

enum class SyncState : std::uint8_t { kActive, kDone, kFailed };

// Progress of one transfer, as seen from one end.
struct SyncProgress {
  std::uint64_t chunks_transferred = 0;   // Fully sent (sender) or stored (receiver).
  std::uint64_t bytes_transferred = 0;    // Chunk bytes, as stored (compressed).
  std::uint64_t chunks_requested = 0;     // Ids asked for (receiver) or served (sender), retries included.
  std::uint64_t chunks_already_held = 0;  // Receiver: references found present (resume, dedup).
  std::uint64_t chunks_wanted = 0;        // Receiver: distinct missing chunks found so far.
  std::uint64_t chunks_refused = 0;       // Receiver: arrived damaged, refused, fetched again.
  std::uint64_t manifests_walked = 0;     // Receiver.
  std::uint64_t size_hint = 0;            // From the offer.
  bool walk_complete = false;             // Receiver: chunks_wanted is final.
  bool snapshot_already_held = false;     // Receiver had S committed before the transfer.
  std::size_t in_flight_max = 0;          // Receiver: the deepest the window got.
  double bytes_per_second = 0;            // Over the last few seconds.
  std::optional<Duration> eta;            // Receiver, once an estimate exists.
};

// Bytes per second over a sliding window of samples, fed with a monotonic total.
class RateMeter {
 public:
  static constexpr std::size_t kSamples = 8;
  static constexpr Duration kSampleInterval = seconds(1);
  void start(Instant now) { samples_.assign(1, Sample{now, 0}); }
  void update(Instant now, std::uint64_t total_bytes);
  double bytes_per_second() const { return rate_; }

 private:
  struct Sample {
    Instant at;
    std::uint64_t total = 0;
  };
  std::vector<Sample> samples_;
  double rate_ = 0;
};

// The end that holds the snapshot. Created when it offers it.
class SyncSender {
 public:
  SyncSender(const SyncConfig& config, SyncSource& source, std::uint64_t session, std::string project,
             const ChunkId& snapshot, std::uint64_t size_hint, Instant now);

  void on_message(Instant now, ByteView bytes);
  void on_message(Instant now, const SyncMessage& message);
  void on_timer(Instant now);
  // Gives up: sends kEnd with this error (once), then kFailed.
  void abort(Instant now, const Error& error);

  // The next message to send, produced lazily: chunk data is read from the
  // source only when the driver asks, so memory stays at one chunk.
  std::optional<Bytes> poll_message(Instant now);
  // The same message in two parts, head then body, to be sent as one (a chunk
  // piece's body is a view of the chunk being streamed, valid until the next
  // call). poll_message() is head + body.
  struct Parts {
    Bytes head;
    ByteView body;
  };
  std::optional<Parts> poll_parts(Instant now);
  std::optional<Instant> next_deadline() const;

  SyncState state() const { return state_; }
  const Error& error() const { return error_; }
  const SyncProgress& progress() const { return progress_; }
  std::uint64_t session() const { return session_; }
  std::size_t requests_queued() const { return requests_.size(); }

 private:
  void fail(Instant now, Code code, std::string message, bool tell_peer);

  SyncConfig config_;
  SyncSource& source_;
  std::uint64_t session_;
  std::string project_;
  ChunkId snapshot_;
  SyncState state_ = SyncState::kActive;
  Error error_{Code::kOk, ""};
  SyncProgress progress_;
  RateMeter rate_;

  bool offer_sent_ = false;
  std::optional<SyncMessage> end_to_send_;
  std::deque<ChunkId> requests_;  // <= kWindowChunksMax.
  std::optional<ChunkId> current_id_;
  Bytes current_;                 // The chunk being streamed.
  std::size_t current_offset_ = 0;
  Bytes finished_;                // The chunk whose last piece poll_parts() returned a view of.
  Instant last_heard_;
};

// The end that wants the snapshot. Created when an offer arrives (or before,
// waiting for it).
class SyncReceiver {
 public:
  SyncReceiver(const SyncConfig& config, SyncSink& sink, Instant now);

  void on_message(Instant now, ByteView bytes);
  void on_message(Instant now, const SyncMessage& message);
  void on_timer(Instant now);
  void abort(Instant now, const Error& error);

  // Walks manifests and requests chunks as the window allows; commits when
  // everything is present and the sink has verified every deferred chunk
  // (data chunks go to SyncSink::put_deferred; refused ones are fetched again).
  std::optional<Bytes> poll_message(Instant now);
  std::optional<Instant> next_deadline() const;

  SyncState state() const { return state_; }
  const Error& error() const { return error_; }
  const SyncProgress& progress() const { return progress_; }
  std::uint64_t session() const { return session_; }
  const std::string& project() const { return project_; }
  const ChunkId& snapshot() const { return snapshot_; }
  std::size_t in_flight() const { return in_flight_.size(); }
  // Bytes held for the chunk being received (the receiver's main memory use).
  std::size_t assembly_bytes() const { return assembly_.size(); }

 private:
  struct Want {
    ChunkRef ref;
    std::uint32_t attempts = 0;
  };

  void handle_offer(Instant now, const SyncMessage& message);
  void handle_chunk(Instant now, const SyncMessage& message);
  void chunk_complete(Instant now);
  // Expands present manifests until the want queues are full or the stack is
  // empty; at most manifests_max of them (the walk then continues at the next poll).
  Status walk(std::size_t manifests_max);
  Status expand(const ChunkId& manifest);
  void maybe_commit(Instant now);
  void update_eta(Instant now);
  void fail(Instant now, Code code, std::string message, bool tell_peer);

  SyncConfig config_;
  SyncSink& sink_;
  SyncState state_ = SyncState::kActive;
  Error error_{Code::kOk, ""};
  SyncProgress progress_;
  RateMeter rate_;

  bool offer_seen_ = false;
  std::uint64_t session_ = 0;
  std::string project_;
  ChunkId snapshot_{};

  std::vector<ChunkId> expand_stack_;  // Present manifests still to walk (depth first).
  std::deque<Want> want_manifests_;    // Requested before data so the walk moves on.
  std::deque<Want> want_data_;
  std::unordered_set<ChunkId, ChunkIdHasher> wanted_;  // Queued or in flight; never asked twice.
  std::deque<Want> in_flight_;         // In request order; the sender answers in order.
  Bytes assembly_;
  std::uint64_t assembly_total_ = 0;
  bool assembling_ = false;
  std::optional<SyncMessage> end_to_send_;
  Instant started_;
  Instant last_heard_;
  Instant last_poll_;
  bool verifying_ = false;  // The sink was still verifying deferred chunks at the last poll.
  std::unordered_map<ChunkId, std::uint32_t, ChunkIdHasher> refused_attempts_;  // Deferred chunks refused so far.
};

}  // namespace shoal::transfer
