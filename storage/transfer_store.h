#pragma once
// storage/transfer_store.h: the snapshot store as the two ends of chunk sync
// (transfer/chunk_sync.h). StoreSource hands out stored (compressed) chunks;
// StoreSink receives one offered snapshot into a store: it decodes commits and
// trees to tell the protocol what a manifest references, verifies every chunk
// before storing it, holds the store's gc fence from its first store call
// until the snapshot is committed, and commits through SnapshotStore::commit_received.
// Does not decide which offers to accept (the agent does) and does no network
// I/O. Built as its own library (shoal_transfer_store) so that shoal_storage
// does not depend on transfer/.
//
// Threading: every call is one short LMDB transaction on the caller's thread
// (SnapshotStore's rules). A sink belongs to one session on one thread; its
// only other thread is its verifier (put_deferred), which touches no store.
//
// Batching: put() verifies at once but stores in batches (kSinkBatchChunksMax
// chunks or kSinkBatchBytesMax bytes per batch: appended to the session's own
// pack file, synced, then indexed in one write transaction), because each
// batch costs two fsyncs. Every other call, and the destructor, stores the
// open batch first, so the protocol always sees its own puts. A crash loses
// at most one batch of verified chunks, which the resumed transfer fetches again.
//
// Manifest size: storage lets a manifest grow to kStoredChunkPlainMax
// (256 MiB, a directory of about a million entries); chunk sync's default
// limit is 32 MiB. A snapshot that storage can make but transfer refuses to
// carry would be a replica that can never complete, so store_sync_config()
// raises the limit to the largest chunk storage can hold. The price is the
// per-transfer memory bound: one chunk as large as the largest manifest the
// snapshot actually contains (data chunks stay at most 4 MiB).

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <functional>
#include <optional>
#include <thread>
#include <string>
#include <vector>

#include "storage/snapshot_store.h"
#include "transfer/chunk_sync.h"

namespace shoal::storage {

// The largest stored form of any chunk: raw plaintext plus the chunk header
// (encode_chunk falls back to raw when zstd does not shrink the data).
inline constexpr std::uint64_t kStoredChunkBytesMax = std::uint64_t{kStoredChunkPlainMax} + kChunkHeaderBytes;
static_assert(kStoredChunkBytesMax <= transfer::kSyncChunkBytesMax,
              "chunk sync must be able to carry every chunk storage can hold");
static_assert(std::uint64_t{kChunkBytesMax} + kChunkHeaderBytes <= kStoredChunkBytesMax);

// Chunk-sync settings for stores: the defaults with chunk_bytes_max raised to
// kStoredChunkBytesMax.
transfer::SyncConfig store_sync_config();

// The sender's side: any chunk of the store, as stored.
class StoreSource final : public transfer::SyncSource {
 public:
  explicit StoreSource(SnapshotStore& store) : store_(store) {}
  // NotFound if the chunk is absent; the stored bytes unverified otherwise
  // (the receiver verifies).
  Result<Bytes> read(const ChunkId& id) override;

 private:
  SnapshotStore& store_;
};

inline constexpr std::size_t kSinkBatchChunksMax = 256;
inline constexpr std::size_t kSinkBatchBytesMax = 4u << 20;  // Bounds what a crash makes the resume refetch.
// Data chunks waiting for the sink's verifier thread; past this, put_deferred
// verifies on the caller's thread (backpressure, and the memory bound).
inline constexpr std::size_t kSinkVerifyQueueBytesMax = 8u << 20;

struct SinkCounters {
  std::uint64_t chunks_accepted = 0;    // put() verified them (stored now or with the batch).
  std::uint64_t bytes_accepted = 0;
  std::uint64_t chunks_stored = 0;      // New chunks written (committed).
  std::uint64_t chunks_duplicate = 0;   // put() of a chunk already held.
  std::uint64_t chunks_refused = 0;     // Bytes did not decode to their id.
  std::uint64_t bytes_stored = 0;       // Stored bytes of new chunks.
};

// The receiver's side for one offered snapshot `snapshot` of `project`.
class StoreSink final : public transfer::SyncSink {
 public:
  // Decides, from the offered snapshot's commit (project, epoch, ...), whether
  // this store may catalog it; an error refuses the commit (the chunks stay
  // until the next gc). The agent fences older epochs with it.
  using CommitCheck = std::function<Status(const ChunkId& snapshot, const Commit& commit)>;

  StoreSink(SnapshotStore& store, std::string project, const ChunkId& snapshot, CommitCheck check = {});
  ~StoreSink() override;  // Stores the open batch (errors are logged by nobody: the chunks are refetched).
  StoreSink(const StoreSink&) = delete;
  StoreSink& operator=(const StoreSink&) = delete;

  // The first call of has_snapshot, missing or put takes the store's gc fence
  // (Unavailable while a gc runs: retry the transfer later); it is held until
  // commit() or the sink's destruction, so nothing the walk found present
  // disappears before the commit.
  // True if `snapshot` is in this store's catalog under the project.
  Result<bool> has_snapshot(const ChunkId& snapshot) override;
  Result<std::vector<ChunkId>> missing(std::span<const ChunkId> ids) override;
  // Verifies, then stores (in the open batch). Corruption if the bytes are
  // not chunk `id` (nothing stored); a failed batch write is reported here.
  Status put(const ChunkId& id, ByteView bytes) override;
  Result<Bytes> read(const ChunkId& id) override;
  // The offered snapshot's commit references its root tree only (never the
  // parent snapshot: history is not replicated by this transfer); a tree
  // references its subtrees (manifests) and its files' chunks (data).
  // Corruption if the bytes are not a manifest; FailedPrecondition if the
  // commit belongs to another project than the one offered.
  Result<std::vector<transfer::ChunkRef>> references(const ChunkId& manifest, ByteView bytes) override;
  // True for the root tree of any snapshot committed in this store.
  Result<bool> complete_below(const ChunkId& manifest) override;
  // Catalogs the snapshot (atomically; FailedPrecondition if a chunk is
  // missing) and releases the gc fence.
  Status commit(const ChunkId& snapshot) override;

  // Data chunks: verified by the sink's own thread (started on first use), so
  // that decompressing and hashing run on another core than the event loop.
  // Verified chunks join the batch on the caller's next call; refused ones are
  // reported by take_refused(). Above kSinkVerifyQueueBytesMax queued, verifies
  // at once like put().
  Status put_deferred(const ChunkId& id, Bytes&& bytes) override;
  std::vector<ChunkId> take_refused() override;
  std::size_t verifying() override;

  const std::string& project() const { return project_; }
  const ChunkId& snapshot() const { return snapshot_; }
  const std::optional<SnapshotInfo>& committed() const { return committed_; }
  const SinkCounters& counters() const { return counters_; }
  bool holds_gc_fence() const { return fence_.has_value(); }

 private:
  Status ensure_fence();
  // Moves what the verifier finished into the batch (flushing a full one).
  Status absorb();
  void verifier_loop();
  void stop_verifier();
  Status add_to_batch(const ChunkId& id, Bytes bytes);
  // Writes the open batch in one transaction.
  Status flush();
  Result<Commit> load_offered_commit(ByteView stored);

  SnapshotStore& store_;
  std::string project_;
  ChunkId snapshot_;
  std::optional<GcFence> fence_;
  std::optional<ChunkWriter> writer_;  // The session's pack writer, from the first flush to commit().
  std::optional<ChunkIdSet> committed_roots_;  // Built on the first complete_below().
  std::optional<SnapshotInfo> committed_;
  CommitCheck check_;
  SinkCounters counters_;
  std::vector<std::pair<ChunkId, Bytes>> batch_;
  std::size_t batch_bytes_ = 0;

  // The verifier thread and what it shares with the caller's thread (under mu_).
  std::thread verifier_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::deque<std::pair<ChunkId, Bytes>> queue_;    // To verify.
  std::size_t queue_bytes_ = 0;
  std::size_t verifying_ = 0;                      // Queued or being verified.
  ChunkIdSet pending_;                             // Their ids: present for missing().
  std::vector<std::pair<ChunkId, Bytes>> verified_;
  std::vector<ChunkId> refused_;
};

}  // namespace shoal::storage
