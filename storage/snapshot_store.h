#pragma once
// storage/snapshot_store.h: a node's snapshot store. Owns the snapshot catalog,
// the per-project file caches, quotas and the save/gc locks of one store
// directory; chunks live in chunk_store.h, object formats in manifest.h.
//
// Layout of a store directory DIR (it may be an agent's data directory):
//   DIR/data.mdb, DIR/lock.mdb  the LMDB environment (tables "snap.*")
//   DIR/locks/<project>.save    flock: held by the one save of that project
//   DIR/locks/gc                flock: shared by saves and transfers, exclusive by gc
//   DIR/caches/<project>.cache  the project's file cache (file_cache.h)
// Both lock kinds are flock(2) locks, so they work across processes and die
// with their holder (kill -9 releases them); nothing needs a liveness check.
//
// Crash safety: chunks are committed in batches while a save runs; the
// snapshot (its Commit chunk and its catalog entry) becomes visible in one
// final LMDB transaction, then the file cache is replaced atomically, so after a crash at any
// instant the snapshot is either absent or complete. Chunks of an interrupted
// save are unreferenced and the next gc() removes them.
//
// Threading: one SnapshotStore per process per directory (LMDB's rule). Its
// methods may be called from several threads; create() runs its own reader,
// hashing/compression workers and a writer thread and joins them before it
// returns. Never call create() from inside one of its own callbacks for a
// different project (LMDB allows one write transaction at a time).

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "storage/chunk_store.h"
#include "storage/chunker.h"
#include "storage/lmdb.h"
#include "storage/manifest.h"
#include "storage/retention.h"

namespace shoal::storage {

struct StoreOptions {
  ChunkerParams chunker = kDefaultChunkerParams;
  int zstd_level = kDefaultZstdLevel;
  std::size_t map_size_bytes = std::size_t{1} << 40;  // Address space, not disk.
};

struct SnapshotInfo {
  ChunkId id{};
  Commit commit;
};

struct Progress {
  std::uint64_t files_done = 0;
  std::uint64_t files_total = 0;
  std::uint64_t bytes_done = 0;
  std::uint64_t bytes_total = 0;
};
using ProgressFn = std::function<void(const Progress&)>;

struct CreateOptions {
  std::string project;
  std::string source_dir;
  // The snapshot's time (Unix ns). Also the reference for the file cache's
  // "racy" rule: a file changed less than kRacyWindowNs before it is re-read
  // next time, because a later change within the timestamp granularity could
  // leave size and mtime unchanged.
  std::int64_t now_ns = 0;
  std::uint64_t epoch = 0;
  unsigned threads = 0;  // Hashing/compression workers; 0 = one per core.
  ProgressFn progress;   // Called from the reading thread.
};
inline constexpr std::int64_t kRacyWindowNs = 2'000'000'000;

struct CreateResult {
  SnapshotInfo snapshot;
  std::uint64_t files_read = 0;     // Files whose contents were read.
  std::uint64_t bytes_read = 0;     // Logical bytes of those files, holes included.
  std::uint64_t bytes_skipped_in_holes = 0;  // Zeros of sparse files' holes taken as known chunks, not read.
  std::uint64_t cache_hits = 0;     // Files taken from the file cache unread.
  std::uint64_t chunks_new = 0;
  std::vector<std::string> warnings;  // One per skipped or changed path.
};

struct RestoreOptions {
  bool force = false;  // Allow a non-empty target; existing entries are replaced.
  ProgressFn progress;
};

struct Damage {
  std::string path;     // Path in the snapshot ("" = the snapshot object itself).
  ChunkId chunk{};
  std::string problem;  // "missing" or "corrupt: ..."
};

struct RestoreReport {
  std::uint64_t files = 0;
  std::uint64_t dirs = 0;
  std::uint64_t symlinks = 0;
  std::uint64_t bytes = 0;
  std::vector<Damage> damaged;  // Files left out because a chunk was missing or corrupt.
};

struct VerifyReport {
  struct PerSnapshot {
    SnapshotInfo snapshot;  // commit may be empty if the commit chunk is damaged.
    std::vector<Damage> damage;
  };
  std::vector<PerSnapshot> snapshots;
  std::uint64_t chunks_checked = 0;
  std::uint64_t bytes_checked = 0;
  bool clean() const {
    for (const auto& s : snapshots) {
      if (!s.damage.empty()) return false;
    }
    return true;
  }
};

struct DiffEntry {
  char change = '?';  // '+' added, '-' removed, 'M' content or type changed, 'm' metadata only.
  std::string path;   // Directories end with '/'.
};

struct PruneReport {
  std::vector<SnapshotInfo> kept;
  std::vector<SnapshotInfo> removed;
};

struct GcReport {
  std::uint64_t chunks_kept = 0;
  std::uint64_t chunks_removed = 0;
  std::uint64_t bytes_removed = 0;
  std::uint64_t packs_deleted = 0;    // Pack files that held only garbage.
  std::uint64_t packs_rewritten = 0;  // Mostly-garbage packs whose live chunks were copied.
  std::uint64_t bytes_copied = 0;
  std::uint64_t bytes_reclaimed = 0;  // Disk space given back, net of copies.
  bool waited_for_saves = false;
  double mark_seconds = 0;    // Marking, without any lock: saves run meanwhile.
  double locked_seconds = 0;  // Holding the gc lock: saves starting now wait this long at most.
};

struct Quota {
  std::uint64_t live_bytes_max = 0;    // 0 = unlimited.
  std::uint64_t stored_bytes_max = 0;  // 0 = unlimited.
};

struct ProjectStats {
  std::string project;
  std::uint64_t snapshots = 0;
  std::uint64_t live_bytes = 0;     // Logical size of the latest snapshot.
  std::uint64_t logical_bytes = 0;  // Sum over all its snapshots.
  std::uint64_t unique_plain_bytes = 0;   // Distinct chunks reachable, before compression.
  std::uint64_t stored_bytes = 0;         // The same chunks as stored.
  Quota quota;
};

struct StoreStats {
  std::vector<ProjectStats> projects;
  std::uint64_t snapshots = 0;
  std::uint64_t logical_bytes = 0;   // Sum over all snapshots of all projects.
  std::uint64_t chunks = 0;
  std::uint64_t plain_bytes = 0;     // Sum of all stored chunks before compression.
  std::uint64_t stored_bytes = 0;    // Sum of the stored sizes of all indexed chunks.
  std::uint64_t file_bytes = 0;      // Disk space of the store: index, caches and packs.
  std::uint64_t index_file_bytes = 0;  // data.mdb's allocated bytes.
  std::uint64_t cache_file_bytes = 0;  // The projects' file caches (caches/).
  std::uint64_t pack_files = 0;
  std::uint64_t pack_bytes = 0;        // Sum of pack file sizes (stored_bytes + headers + garbage).
  std::uint64_t pack_file_bytes = 0;   // Their allocated bytes (gc punches holes over garbage).
  std::uint64_t unreferenced_chunks = 0;
};

// Holds the shared side of the gc lock: while one exists, gc() waits and no
// chunk disappears. Used by create() and by transfers that put chunks before
// commit_received().
class GcFence {
 public:
  GcFence() = default;
  explicit GcFence(int fd) : fd_(fd) {}
  GcFence(GcFence&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  GcFence& operator=(GcFence&&) = delete;
  ~GcFence();

 private:
  int fd_ = -1;
};

class SnapshotStore {
 public:
  // Opens (creating if needed) the store in directory `dir`.
  static Result<std::unique_ptr<SnapshotStore>> open(const std::string& dir, const StoreOptions& options = {});
  ~SnapshotStore();

  // Saves the tree under options.source_dir as a new snapshot of the project.
  // FailedPrecondition "save in progress" when another save of this project
  // runs (in any process); ResourceExhausted when a quota or the disk refuses
  // it (nothing stored is touched); InvalidArgument for a bad project name or
  // source. Unreadable or vanishing files are skipped and listed in warnings.
  Result<CreateResult> create(const CreateOptions& options);

  // Snapshots, oldest first; of one project if given.
  Result<std::vector<SnapshotInfo>> list(const std::optional<std::string>& project = std::nullopt);
  // Resolves a full id, a unique hex prefix (>= 6 digits), or "latest" (needs project).
  Result<SnapshotInfo> find(std::string_view spec, const std::optional<std::string>& project = std::nullopt);

  // Writes the snapshot's tree into `target`, which must be absent or empty
  // unless options.force. Every chunk is re-hashed; files with a missing or
  // corrupt chunk are left out and listed in the report, the rest is restored.
  Result<RestoreReport> restore(const SnapshotInfo& snapshot, const std::string& target,
                                const RestoreOptions& options = {});
  Result<VerifyReport> verify(const std::vector<SnapshotInfo>& snapshots);
  Result<std::vector<DiffEntry>> diff(const SnapshotInfo& a, const SnapshotInfo& b);

  // Removes the catalog entries the policy does not keep (chunks stay until gc).
  Result<PruneReport> prune(const std::string& project, const RetentionPolicy& policy, bool dry_run = false);
  // Removes every snapshot of the project (a copy this node no longer needs);
  // its chunks go at the next gc. The caller decides that it is safe.
  Result<PruneReport> forget_project(const std::string& project);
  // Deletes every chunk no snapshot references. Marks without a lock (saves
  // run meanwhile), then waits for running saves and holds new ones off only
  // while it deletes; refuses (FailedPrecondition) if a manifest is
  // unreadable, since it could not tell what that manifest references.
  Result<GcReport> gc();
  Result<StoreStats> stats();

  Status set_quota(const std::string& project, const Quota& quota);
  Result<Quota> quota(const std::string& project);

  // Transfer-layer API. A receiver calls lacking(S) (ids it must fetch; a
  // missing manifest hides what is below it, so call again after fetching),
  // put_raw_chunk() for each, and commit_received(S), which checks that
  // everything is present and catalogs S in one transaction. Hold a GcFence
  // from the first put until commit_received returns.
  Result<std::vector<ChunkId>> lacking(const ChunkId& snapshot_id);
  Result<std::optional<Bytes>> get_raw_chunk(const ChunkId& id);
  Result<bool> put_raw_chunk(const ChunkId& id, ByteView stored);
  Result<SnapshotInfo> commit_received(const ChunkId& snapshot_id);
  Result<GcFence> hold_gc();

  // Test hook, called at named points of create, prune and gc (see the .cc
  // files: "chunk_put", "chunk_batch_commit", "before_final_commit", "prune_delete",
  // "gc_delete", ...). Crash tests kill the process from it. Set before use.
  void set_fault_hook(std::function<void(std::string_view point)> hook) { fault_hook_ = std::move(hook); }
  // Test hook: an errno with which to fail the commit at "chunk_batch_commit"
  // or "before_final_commit" (0: commit normally), as if the disk refused the
  // write (ENOSPC, EIO). The transaction is aborted, as LMDB does on failure.
  void set_fault_error_hook(std::function<int(std::string_view point)> hook) { fault_error_hook_ = std::move(hook); }

  Env& env() { return *env_; }
  ChunkStore& chunks() { return chunks_; }
  const std::string& dir() const { return dir_; }

 private:
  struct Tables {
    MDB_dbi catalog = 0;    // project \0 be64(time) id -> "" (ordered listing).
    MDB_dbi by_id = 0;      // id -> catalog key.
    MDB_dbi quota = 0;      // project -> [live_max, stored_max].
  };
  SnapshotStore(std::string dir, StoreOptions options, std::unique_ptr<Env> env, ChunkStore chunks, Tables tables);

  class Impl;
  friend class Impl;

  std::string dir_;
  StoreOptions options_;
  std::unique_ptr<Env> env_;
  ChunkStore chunks_;
  Tables tables_;
  std::function<void(std::string_view point)> fault_hook_;
  std::function<int(std::string_view point)> fault_error_hook_;
  Result<CreateResult> create_locked(const CreateOptions& options);
  // Commits `txn`, or aborts it with the error the fault-error hook injects at `point`.
  Status commit_at(Txn& txn, std::string_view point);
  Result<PruneReport> remove_snapshots(
      const std::string& project, const std::function<std::vector<bool>(std::span<const std::int64_t>)>& keep_fn,
      bool dry_run);
  void fault_point(std::string_view point) const {
    if (fault_hook_) fault_hook_(point);
  }
};

// Project names: 1..128 bytes of [A-Za-z0-9._-], not starting with '.'.
Status validate_project(std::string_view project);

}  // namespace shoal::storage
