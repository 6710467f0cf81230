// storage/snapshot_create.cc: SnapshotStore::create().
//
// Design note. A save streams the tree once, so its memory does not grow
// with the number of files:
//  - the calling thread walks the source depth-first with lstat, holding
//    only the listings of the directories on the current path; it handles a
//    directory's files after its subdirectories (post-order), looking each
//    file up in the project's file cache (file_cache.h, read as a stream in
//    the same order); hits reuse their chunk lists unread, the others are
//    read and cut into chunks (FastCDC) that go to worker threads to be
//    hashed and, when new, compressed;
//  - one builder thread takes the workers' results and the walker's finished
//    directories (in post-order): it appends new chunks to this save's pack
//    and, every 32 MiB or 16,384 chunks, syncs it and indexes them in one LMDB
//    transaction; it builds each directory's tree as soon as the chunk ids of
//    its files are in, appends it to a listings pack of its own, and streams
//    the next file cache to a temporary file. Results are addressed by (file,
//    chunk index), so the snapshot is the same whatever the thread count or
//    timing;
//  - commit: the listings pack is synced; then the trees' index entries and
//    the catalog entry go in one final transaction; then the file cache is
//    renamed into place (after the commit: a cache never names chunks of a
//    snapshot that does not exist).
// The project's save lock is held from the start, the shared gc lock too, so
// gc cannot delete a chunk this save deduplicated against.

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <dirent.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <semaphore>
#include <thread>
#include <unordered_map>
#include <variant>

#include "base/assert.h"
#include "base/codec.h"
#include "storage/file_cache.h"
#include "storage/snapshot_internal.h"
#include "storage/snapshot_store.h"

namespace shoal::storage {
namespace internal {
Result<Quota> read_quota(Txn& txn, MDB_dbi table, const std::string& project);
Result<std::vector<SnapshotInfo>> list_in(Txn& txn, ChunkStore& chunks, MDB_dbi catalog,
                                          const std::optional<std::string>& project);
}  // namespace internal

namespace {

using internal::from_errno;
using internal::join_path;

constexpr std::string_view kQuotaExceeded = "quota exceeded";

// Per chunk batch (one pack sync, one index transaction): bounds the bytes
// a crash can orphan and the dirty index pages LMDB holds in memory until
// commit (each put of a random id dirties a whole 4 KiB leaf).
constexpr std::size_t kBatchBytesMax = 32u << 20;
// Each batch rewrites (copy-on-write) every index leaf it touches, and random
// ids touch nearly all of them, so a batch holds up to min(puts, index
// leaves) dirty 4 KiB pages in memory until it commits. 4,096 puts bound that
// at 16 MiB however large the index grows (16,384 let a 300,000-chunk save
// peak at 88 MiB), and left a smaller data.mdb there too (54 vs 74 MiB):
// fewer pages are dirty, and freed, per commit.
constexpr std::size_t kBatchPutsMax = 4096;
// The workers' presence probes each fault in a random index leaf of the
// map; dropping the mapped pages this often keeps RSS flat as the index grows.
constexpr std::uint64_t kReleaseMapEveryProbes = 64;
constexpr std::uint64_t kReleaseMapEveryBytes = 4u << 20;
// Chunks travel between the walker, the workers and the builder in batches:
// a queue hand-off (a lock, often a futex wake and a context switch) per
// chunk cost ~10 % of a save's CPU when most files are one small chunk.
constexpr std::size_t kJobBatchBytes = 256u << 10;  // Ship a batch at this many bytes of chunk data
constexpr std::size_t kJobBatchChunks = 64;         // or this many chunks.
constexpr std::size_t kQueueBatchesMax = 2;         // Batches in flight per queue (~512 KiB of chunks).
constexpr std::size_t kReadBufferBytes = 1u << 20;
constexpr unsigned kWorkersMax = 16;
// Directories the walker may finish ahead of the builder (which waits for
// their files' chunks): bounds the listings held in memory.
constexpr std::ptrdiff_t kDirsAheadMax = 1024;

std::int64_t ns_of(const struct timespec& ts) {
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// One directory entry, from the walker's listing to the builder's tree.
struct Node {
  std::string name;
  EntryKind kind = EntryKind::kFile;
  std::uint32_t mode = 0;
  std::int64_t mtime_ns = 0;
  CachedStat stat;              // kFile: as listed.
  std::string target;           // kSymlink.
  // Set by the walker:
  std::uint64_t seq = 0;          // kFile read: key of its chunk results; kDir: the directory's record number.
  std::uint64_t chunk_count = 0;  // kFile read: chunk jobs pushed.
  std::uint64_t read_size = 0;    // kFile: the recorded size.
  bool failed = false;            // kFile: skipped, a warning says why.
  bool hit = false;               // kFile: chunks from the file cache.
  bool cacheable = false;         // kFile: goes into the next file cache.
  std::vector<ChunkId> chunks;    // kFile hit.
};

// A directory the walker has finished (post-order), for the builder.
struct DirRecord {
  std::uint64_t seq = 0;
  std::string rel;
  std::vector<Node> nodes;  // Sorted by name.
};

// Lists one directory, sorted by name. Unreadable entries are skipped with a
// warning; a directory that cannot be listed is saved empty (the root fails).
Result<std::vector<Node>> list_dir(const std::string& root, const std::string& rel, std::vector<std::string>& warnings,
                                   std::uint64_t& logical_bytes) {
  const std::string abs = rel.empty() ? root : root + "/" + rel;
  std::vector<Node> nodes;
  DIR* dir = ::opendir(abs.c_str());
  if (dir == nullptr) {
    if (rel.empty()) {
      return std::unexpected(from_errno(errno, "source " + root));
    }
    warnings.push_back(rel + ": directory not readable (" + std::strerror(errno) + "), saved empty");
    return nodes;
  }
  const int dfd = ::dirfd(dir);
  struct stat st{};
  while (const dirent* de = ::readdir(dir)) {
    const std::string_view name = de->d_name;
    if (name == "." || name == "..") {
      continue;
    }
    if (::fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      warnings.push_back(join_path(rel, std::string(name)) + ": vanished or not readable (" + std::strerror(errno) + "), skipped");
      continue;
    }
    Node node;
    node.name = name;
    node.mode = st.st_mode & 07777;
    node.mtime_ns = ns_of(st.st_mtim);
    if (S_ISREG(st.st_mode)) {
      node.kind = EntryKind::kFile;
      node.stat = CachedStat{.size = static_cast<std::uint64_t>(st.st_size), .mtime_ns = node.mtime_ns,
                             .inode = st.st_ino, .ctime_ns = ns_of(st.st_ctim)};
      logical_bytes += static_cast<std::uint64_t>(st.st_size);
    } else if (S_ISDIR(st.st_mode)) {
      node.kind = EntryKind::kDir;
    } else if (S_ISLNK(st.st_mode)) {
      node.kind = EntryKind::kSymlink;
      std::string target(static_cast<std::size_t>(st.st_size > 0 ? st.st_size : 255) + 1, '\0');
      const ssize_t n = ::readlinkat(dfd, de->d_name, target.data(), target.size());
      if (n < 0 || static_cast<std::size_t>(n) >= target.size() || static_cast<std::size_t>(n) > kSymlinkTargetBytesMax) {
        warnings.push_back(join_path(rel, std::string(name)) + ": symlink target not readable, skipped");
        continue;
      }
      target.resize(static_cast<std::size_t>(n));
      node.target = std::move(target);
    } else {
      warnings.push_back(join_path(rel, std::string(name)) + ": special file (device, fifo or socket) not saved");
      continue;
    }
    nodes.push_back(std::move(node));
  }
  ::closedir(dir);
  std::sort(nodes.begin(), nodes.end(), [](const Node& a, const Node& b) { return a.name < b.name; });
  return nodes;
}

// Files and bytes under `root`, for the live-size quota and progress totals:
// a walk of lstat calls that keeps only the directories still to visit.
Result<std::pair<std::uint64_t, std::uint64_t>> count_tree(const std::string& root) {
  std::uint64_t files = 0;
  std::uint64_t bytes = 0;
  std::vector<std::string> todo{root};
  while (!todo.empty()) {
    const std::string abs = std::move(todo.back());
    todo.pop_back();
    DIR* dir = ::opendir(abs.c_str());
    if (dir == nullptr) {
      if (abs == root) {
        return std::unexpected(from_errno(errno, "source " + root));
      }
      continue;
    }
    struct stat st{};
    while (const dirent* de = ::readdir(dir)) {
      const std::string_view name = de->d_name;
      if (name == "." || name == ".." || ::fstatat(::dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        continue;
      }
      if (S_ISREG(st.st_mode)) {
        ++files;
        bytes += static_cast<std::uint64_t>(st.st_size);
      } else if (S_ISDIR(st.st_mode)) {
        todo.push_back(abs + "/" + std::string(name));
      }
    }
    ::closedir(dir);
  }
  return std::pair{files, bytes};
}

struct WalkDir {
  std::string rel;
  std::vector<Node> nodes;  // Sorted by name.
  std::size_t next = 0;     // Next node to look at for a subdirectory to descend into.
};

template <class T>
class BoundedQueue {
 public:
  explicit BoundedQueue(std::size_t capacity) : capacity_(capacity) {}
  void push(T item) {
    std::unique_lock lock(mutex_);
    not_full_.wait(lock, [&] { return items_.size() < capacity_; });
    items_.push_back(std::move(item));
    not_empty_.notify_one();
  }
  std::optional<T> pop() {
    std::unique_lock lock(mutex_);
    not_empty_.wait(lock, [&] { return !items_.empty() || closed_; });
    if (items_.empty()) {
      return std::nullopt;
    }
    T item = std::move(items_.front());
    items_.pop_front();
    not_full_.notify_one();
    return item;
  }
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    not_empty_.notify_all();
  }

 private:
  std::mutex mutex_;
  std::condition_variable not_full_;
  std::condition_variable not_empty_;
  std::deque<T> items_;
  std::size_t capacity_;
  bool closed_ = false;
};

struct ChunkJob {
  std::size_t file = 0;
  std::size_t index = 0;
  Bytes data;
  std::uint64_t zero_bytes = 0;  // > 0: a chunk of that many zeros (a hole), data empty.
};

using ChunkJobs = std::vector<ChunkJob>;

// Collects the walker's chunks and pushes them to the workers a batch at a time.
class JobBatcher {
 public:
  explicit JobBatcher(BoundedQueue<ChunkJobs>& queue) : queue_(queue) {}
  void add(ChunkJob job) {
    bytes_ += job.data.size();
    pending_.push_back(std::move(job));
    if (bytes_ >= kJobBatchBytes || pending_.size() >= kJobBatchChunks) {
      flush();
    }
  }
  void flush() {
    if (!pending_.empty()) {
      queue_.push(std::move(pending_));
      pending_ = ChunkJobs();
      pending_.reserve(kJobBatchChunks);
    }
    bytes_ = 0;
  }

 private:
  BoundedQueue<ChunkJobs>& queue_;
  ChunkJobs pending_;
  std::size_t bytes_ = 0;
};

struct ChunkResult {
  std::size_t file = 0;
  std::size_t index = 0;
  ChunkId id{};
  std::optional<Bytes> stored;  // Set when this chunk may be new to the store.
};

// What the builder thread receives: chunk results from the workers and
// finished directories from the walker.
using BuilderMsg = std::variant<std::vector<ChunkResult>, DirRecord>;

// First error wins; every stage checks failed() to stop early.
class ErrorSlot {
 public:
  void set(Error e) {
    std::lock_guard lock(mutex_);
    if (!failed_.exchange(true)) {
      error_ = std::move(e);
    }
  }
  bool failed() const { return failed_.load(); }
  Error take() { std::lock_guard lock(mutex_); return error_; }

 private:
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  Error error_;
};

std::string human(std::uint64_t bytes) {
  char buf[32];
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace

Status SnapshotStore::commit_at(Txn& txn, std::string_view point) {
  if (const int rc = fault_error_hook_ ? fault_error_hook_(point) : 0; rc != 0) {
    txn.abort();
    return std::unexpected(from_mdb(rc, "commit"));
  }
  return txn.commit();
}

Result<CreateResult> SnapshotStore::create(const CreateOptions& options) {
  auto r = create_locked(options);
  if (r) {
    return r;
  }
  // A full disk surfaces as ResourceExhausted (ENOSPC, EDQUOT, LMDB's map
  // limit) from a put or a commit, or as EIO from a commit: LMDB turns a short
  // write (the disk filled up part-way) into EIO. So an I/O error while the
  // file system has less room than a chunk batch left is reported as full.
  // Quota refusals carry their own message. Nothing of the failed save is
  // visible: its last transaction was aborted and chunks it committed earlier
  // are unreferenced until gc.
  const Error& e = r.error();
  std::string why = e.message;
  bool full = e.code == Code::kResourceExhausted && !e.message.starts_with(kQuotaExceeded);
  struct statvfs vfs{};
  if (e.code == Code::kIOError && ::statvfs(dir_.c_str(), &vfs) == 0) {
    const std::uint64_t avail = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    if (avail < 2 * kBatchBytesMax) {
      full = true;
      why += "; " + human(avail) + " left on its file system";
    }
  }
  if (!full) {
    return r;
  }
  return make_error(Code::kResourceExhausted,
                    "store " + dir_ + " is full (" + why + ") while saving project '" + options.project +
                        "'. No snapshot was added and existing snapshots are untouched. Free space on the file system "
                        "holding " + dir_ + ", then retry; `shoal snapshot gc --store " + dir_ +
                        "` removes chunks this save left behind, and `shoal snapshot prune --store " + dir_ +
                        " --project ID --keep-last N` followed by gc frees room (gc deletes and compacts pack files "
                        "holding garbage).");
}

Result<CreateResult> SnapshotStore::create_locked(const CreateOptions& options) {
  SHOAL_TRY_STATUS(validate_project(options.project));
  const std::string& project = options.project;

  // The save lock: never two writers of one project, across processes.
  auto save_lock = internal::lock_file(dir_, project + ".save", /*exclusive=*/true, /*blocking=*/false);
  if (!save_lock) {
    if (save_lock.error().code == Code::kUnavailable) {
      return make_error(Code::kFailedPrecondition,
                        "save in progress: another snapshot of project '" + project +
                            "' is being saved; wait for it to finish, then retry");
    }
    return std::unexpected(save_lock.error());
  }
  GcFence save_guard(*save_lock);
  auto gc_fence = hold_gc();
  if (!gc_fence) {
    return std::unexpected(gc_fence.error());
  }

  CreateResult result;
  const Bytes prefix = internal::project_prefix(project);
  FileCacheReader cache = FileCacheReader::open(file_cache_path(dir_, project));
  Quota quota;
  // The file cache is trusted wholesale when the snapshot it was written
  // with still exists (then every chunk it names is referenced and gc is
  // fenced off); otherwise each hit's chunks are checked for presence.
  bool base_present = false;
  {
    auto txn = Txn::begin_read(*env_);
    if (!txn) {
      return std::unexpected(txn.error());
    }
    auto q = internal::read_quota(*txn, tables_.quota, project);
    if (!q) {
      return std::unexpected(q.error());
    }
    quota = *q;
    if (cache.base()) {
      auto present = txn->get(tables_.by_id, *cache.base());
      if (!present) {
        return std::unexpected(present.error());
      }
      base_present = present->has_value();
    }
  }
  Progress progress;
  if (quota.live_bytes_max != 0 || options.progress) {
    auto counted = count_tree(options.source_dir);
    if (!counted) {
      return std::unexpected(counted.error());
    }
    progress.files_total = counted->first;
    progress.bytes_total = counted->second;
    if (quota.live_bytes_max != 0 && counted->second > quota.live_bytes_max) {
      return make_error(Code::kResourceExhausted,
                        std::string(kQuotaExceeded) + ": project '" + project + "' holds " + human(counted->second) + " (" +
                            std::to_string(counted->second) + " bytes) in " + options.source_dir +
                            ", above its live-size limit of " + human(quota.live_bytes_max) +
                            ". Nothing was stored. Delete files from the project, or raise the limit with "
                            "`shoal snapshot quota set --store " + dir_ + " --project " + project + " --live BYTES`.");
    }
  }
  std::vector<WalkDir> stack;
  {
    std::uint64_t ignored = 0;
    struct stat st{};
    if (::lstat(options.source_dir.c_str(), &st) != 0) {
      return std::unexpected(from_errno(errno, "source " + options.source_dir));
    }
    if (!S_ISDIR(st.st_mode)) {
      return make_error(Code::kInvalidArgument, "source " + options.source_dir + " is not a directory");
    }
    auto root = list_dir(options.source_dir, "", result.warnings, ignored);
    if (!root) {
      return std::unexpected(root.error());
    }
    stack.push_back(WalkDir{.rel = {}, .nodes = std::move(*root)});
  }

  // Read, cut, hash, compress, store; trees as directories complete.
  ErrorSlot error;
  BoundedQueue<ChunkJobs> jobs(kQueueBatchesMax);
  JobBatcher batcher(jobs);
  BoundedQueue<BuilderMsg> results(kQueueBatchesMax);
  std::counting_semaphore<kDirsAheadMax> dirs_ahead(kDirsAheadMax);
  std::uint64_t new_bytes = 0;
  std::uint64_t chunks_new = 0;
  // Ids a worker is storing or the builder has not indexed yet: a chunk
  // that appears twice in a save is compressed and stored once. Entries
  // leave when their batch commits (or when found already stored), so the
  // set holds at most a batch and what is in flight.
  ChunkIdSet claimed;
  std::atomic<std::uint64_t> probes{0};
  std::mutex claimed_mutex;

  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  const unsigned worker_count = std::min(kWorkersMax, options.threads != 0 ? options.threads : cores);
  const int level = options_.zstd_level;
  // Holes of sparse files: a chunk starting in a run of at least max_bytes
  // zeros is cut at max_bytes when the chunker finds no cut point in zeros
  // (true of the format's gear table; checked, not assumed).
  const Bytes zeros(options_.chunker.max_bytes, 0);
  const bool zero_chunks_known = Chunker(options_.chunker).cut(zeros) == zeros.size();
  const ChunkId zero_id = chunk_id_of(zeros);
  std::vector<std::thread> workers;
  for (unsigned w = 0; w < worker_count; ++w) {
    workers.emplace_back([&] {
      std::vector<bool> first;
      while (auto batch = jobs.pop()) {
        std::vector<ChunkResult> out;
        out.reserve(batch->size());
        for (const ChunkJob& job : *batch) {
          out.push_back(ChunkResult{.file = job.file, .index = job.index,
                                    .id = job.zero_bytes != 0 ? zero_id : chunk_id_of(job.data), .stored = std::nullopt});
        }
        first.assign(out.size(), false);
        bool any_first = false;
        {
          std::lock_guard lock(claimed_mutex);
          for (std::size_t k = 0; k < out.size(); ++k) {
            first[k] = claimed.insert(out[k].id).second;
            any_first = any_first || first[k];
          }
        }
        if (any_first && !error.failed()) {
          // One short read snapshot per batch: a long-lived one would pin the
          // pages each batch commit frees, and the file would grow by them.
          // It begins after the claims, so it sees any batch that committed
          // these ids before the builder released their claims.
          std::vector<bool> present(out.size(), true);
          {
            auto t = Txn::begin_read(*env_);
            if (!t) {
              error.set(t.error());
            }
            for (std::size_t k = 0; t && k < out.size(); ++k) {
              if (!first[k]) {
                continue;
              }
              auto has = chunks_.contains(*t, out[k].id);
              if (!has) {
                error.set(has.error());
                break;
              }
              present[k] = *has;
              if (++probes % kReleaseMapEveryProbes == 0) {
                env_->release_mapped_pages();
              }
            }
          }
          std::vector<ChunkId> already_stored;
          for (std::size_t k = 0; k < out.size() && !error.failed(); ++k) {
            if (!first[k]) {
              continue;
            }
            if (!present[k]) {
              const ChunkJob& job = (*batch)[k];
              out[k].stored = encode_chunk(job.zero_bytes != 0 ? Bytes(job.zero_bytes, 0) : job.data, level);
            } else {
              already_stored.push_back(out[k].id);
            }
          }
          if (!already_stored.empty()) {
            std::lock_guard lock(claimed_mutex);
            for (const ChunkId& id : already_stored) {
              claimed.erase(id);
            }
          }
        }
        batch->clear();  // Free the read bytes before waiting on the builder.
        results.push(BuilderMsg(std::move(out)));
      }
    });
  }

  // The builder: one pack writer for the save's data chunks, one for its
  // trees (listings apart from data: damage to a data pack, a truncated
  // file, then costs only the files whose chunks are in it, and walking
  // trees, for gc's mark, verify and diff, reads a few small packs). Each
  // data batch: append, sync the pack, index in one transaction (never an
  // entry for bytes a crash could lose).
  ChunkWriter chunk_writer(chunks_);
  ChunkWriter tree_writer(chunks_);
  std::optional<FileCacheWriter> cache_out;
  std::string cache_warning;
  if (auto w = FileCacheWriter::create(dir_, project); w) {
    cache_out.emplace(std::move(*w));
  } else {
    cache_warning = w.error().message;
  }
  Commit commit{.project = project, .time_ns = options.now_ns, .parent = std::nullopt, .tree = {},
                .epoch = options.epoch};
  std::uint64_t logical = 0;
  ChunkId root_tree{};
  std::thread builder([&] {
    std::size_t batch_bytes = 0;
    std::vector<ChunkId> batch_ids;
    auto commit_batch = [&] {
      if (chunk_writer.pending() > 0 && !error.failed()) {
        fault_point("chunk_batch_commit");
        Status s = chunk_writer.sync();
        if (s) {
          auto txn = Txn::begin_write(*env_);
          if (!txn) {
            s = std::unexpected(txn.error());
          } else if (auto added = chunk_writer.index_into(*txn); !added) {
            s = std::unexpected(added.error());
          } else {
            new_bytes += added->bytes_new;
            chunks_new += added->chunks_new;
            s = commit_at(*txn, "chunk_batch_commit");
          }
        }
        if (!s) {
          error.set(s.error());
        } else {
          std::lock_guard lock(claimed_mutex);
          for (const auto& id : batch_ids) {
            claimed.erase(id);
          }
        }
        env_->release_mapped_pages();  // Index puts touched leaf pages; keep RSS flat.
      }
      batch_ids.clear();
      batch_bytes = 0;
    };
    struct PendingFile {
      std::vector<ChunkId> ids;
      std::uint64_t received = 0;
    };
    std::unordered_map<std::uint64_t, PendingFile> files;  // Files being read, by seq.
    std::unordered_map<std::uint64_t, ChunkId> trees;      // Finished directories not yet in their parent's tree.
    std::deque<DirRecord> dirs;                            // Finished by the walker, waiting for chunks.
    ChunkIdSet added_trees;
    std::uint64_t trees_built = 0;
    auto complete = [&](const DirRecord& d) {
      for (const auto& n : d.nodes) {
        if (n.kind == EntryKind::kFile && !n.hit && n.chunk_count > 0) {
          auto it = files.find(n.seq);
          if (it == files.end() || it->second.received < n.chunk_count) {
            return false;
          }
        }
      }
      return true;
    };
    auto build = [&](DirRecord& d) -> Status {
      std::vector<TreeEntry> entries;
      entries.reserve(d.nodes.size());
      for (auto& n : d.nodes) {
        TreeEntry e{.name = std::move(n.name), .kind = n.kind, .mode = n.mode, .mtime_ns = n.mtime_ns};
        if (n.kind == EntryKind::kFile) {
          std::vector<ChunkId> chunks = std::move(n.chunks);
          if (!n.hit) {
            if (auto it = files.find(n.seq); it != files.end()) {
              chunks = std::move(it->second.ids);
              files.erase(it);
            }
          }
          if (n.failed) {
            continue;
          }
          if (n.cacheable && cache_out) {
            if (auto s = cache_out->add(join_path(d.rel, e.name), n.stat, chunks); !s) {
              cache_warning = s.error().message;
              cache_out.reset();
            }
          }
          e.size = n.read_size;
          e.chunks = std::move(chunks);
          logical += n.read_size;
          ++commit.files;
        } else if (n.kind == EntryKind::kDir) {
          auto it = trees.find(n.seq);
          SHOAL_ASSERT(it != trees.end());  // Post-order: children were built first.
          e.tree = it->second;
          trees.erase(it);
          ++commit.dirs;
        } else {
          e.target = std::move(n.target);
          ++commit.symlinks;
        }
        entries.push_back(std::move(e));
      }
      const Bytes plain = encode_tree(entries);
      const ChunkId id = chunk_id_of(plain);
      if (++trees_built % 256 == 0) {
        env_->release_mapped_pages();  // Each lookup probes a random leaf.
      }
      if (!added_trees.contains(id)) {
        auto txn = Txn::begin_read(*env_);
        auto has = txn ? chunks_.contains(*txn, id) : Result<bool>(std::unexpected(txn.error()));
        if (!has) {
          return std::unexpected(has.error());
        }
        if (!*has) {
          added_trees.insert(id);
          const Bytes stored = encode_chunk(plain, level);
          SHOAL_TRY_STATUS(tree_writer.add(id, stored));
          new_bytes += stored.size();
          ++chunks_new;
        }
      }
      trees.emplace(d.seq, id);
      root_tree = id;  // The root is the last directory finished.
      return {};
    };
    while (auto msg = results.pop()) {
      if (auto* batch = std::get_if<std::vector<ChunkResult>>(&*msg)) {
        for (const ChunkResult& r : *batch) {
          auto& f = files[r.file];
          if (f.ids.size() <= r.index) {
            f.ids.resize(r.index + 1);
          }
          f.ids[r.index] = r.id;
          ++f.received;
          if (!r.stored || error.failed()) {
            continue;
          }
          if (auto s = chunk_writer.add(r.id, *r.stored); !s) {
            error.set(s.error());
            continue;
          }
          batch_ids.push_back(r.id);
          batch_bytes += r.stored->size();
          fault_point("chunk_put");
          if (batch_bytes >= kBatchBytesMax || chunk_writer.pending() >= kBatchPutsMax) {
            commit_batch();
          }
        }
      } else {
        dirs.push_back(std::move(std::get<DirRecord>(*msg)));
      }
      while (!dirs.empty() && complete(dirs.front())) {
        if (!error.failed()) {
          if (auto s = build(dirs.front()); !s) {
            error.set(s.error());
          }
        }
        dirs.pop_front();
        dirs_ahead.release();
      }
    }
    commit_batch();
    SHOAL_ASSERT(error.failed() || dirs.empty());
  });

  // The walker: this thread.
  const Chunker chunker(options_.chunker);
  Bytes buffer(std::max<std::size_t>(kReadBufferBytes, 2 * options_.chunker.max_bytes));
  std::uint64_t next_file_seq = 0;
  std::uint64_t next_dir_seq = 0;
  std::uint64_t hits_since_release = 0;
  // Reads one file into chunk jobs; sets its failed, read_size, chunk_count and cacheable.
  auto read_file = [&](const std::string& rel, Node& nd, std::uint64_t seq) {
    const std::string abs = options.source_dir + "/" + rel;
    // O_NONBLOCK: a path replaced by a fifo since the scan must not block the
    // save in open(); the fstat below then skips anything not regular.
    int fd = ::open(abs.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOATIME);
    if (fd < 0 && errno == EPERM) {
      fd = ::open(abs.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);  // O_NOATIME needs ownership.
    }
    if (fd < 0) {
      result.warnings.push_back(rel + ": " + (errno == ENOENT ? "vanished during the save" : std::string("not readable (") + std::strerror(errno) + ")") + ", skipped");
      nd.failed = true;
      return;
    }
    struct stat before{};
    if (::fstat(fd, &before) != 0 || !S_ISREG(before.st_mode)) {
      result.warnings.push_back(rel + ": no longer a regular file (replaced during the save), skipped");
      nd.failed = true;
      ::close(fd);
      return;
    }
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    // Sparse files: where a hole covers a whole chunk that starts at a chunk
    // boundary, the chunk is max_bytes of zeros (the chunker never cuts inside
    // a zero run, checked once above), so its id is known without reading or
    // hashing. The result is exactly what reading the zeros would give.
    const std::uint64_t max_bytes = options_.chunker.max_bytes;
    bool sparse = zero_chunks_known && static_cast<std::uint64_t>(before.st_blocks) * 512 < static_cast<std::uint64_t>(before.st_size) &&
                  static_cast<std::uint64_t>(before.st_size) >= max_bytes;
    std::uint64_t seg_begin = 0;  // Cached segment [seg_begin, seg_end): a hole if seg_hole.
    std::uint64_t seg_end = 0;
    bool seg_hole = false;
    // End of the hole containing `off`, or `off` if it is data.
    auto hole_end_at = [&](std::uint64_t off) -> std::uint64_t {
      if (off < seg_begin || off >= seg_end) {
        const off_t d = ::lseek(fd, static_cast<off_t>(off), SEEK_DATA);
        if (d < 0 && errno == ENXIO) {  // Only a hole up to the end.
          seg_begin = off, seg_end = static_cast<std::uint64_t>(before.st_size), seg_hole = true;
        } else if (d < 0) {
          sparse = false;  // SEEK_DATA unsupported: read everything.
          return off;
        } else if (static_cast<std::uint64_t>(d) > off) {
          seg_begin = off, seg_end = static_cast<std::uint64_t>(d), seg_hole = true;
        } else {
          const off_t h = ::lseek(fd, static_cast<off_t>(off), SEEK_HOLE);
          if (h < 0 || static_cast<std::uint64_t>(h) <= off) {
            sparse = false;
            return off;
          }
          seg_begin = off, seg_end = static_cast<std::uint64_t>(h), seg_hole = false;
        }
        if (off >= seg_end) {
          return off;  // Past the size seen at open: the file grew; read it.
        }
      }
      return seg_hole ? std::min<std::uint64_t>(seg_end, static_cast<std::uint64_t>(before.st_size)) : off;
    };
    std::size_t have = 0;   // Bytes in buffer, from file offset `total`.
    std::size_t index = 0;
    bool eof = false;
    std::uint64_t total = 0;  // File offset of buffer[0]: a chunk boundary.
    while (!error.failed()) {
      if (sparse) {
        const std::uint64_t end = hole_end_at(total);
        if (end >= total + max_bytes) {
          const std::uint64_t n = (end - total) / max_bytes;
          for (std::uint64_t k = 0; k < n; ++k) {
            batcher.add(ChunkJob{.file = seq, .index = index++, .data = {}, .zero_bytes = max_bytes});
          }
          total += n * max_bytes;
          result.bytes_skipped_in_holes += n * max_bytes;
          have = 0;      // What was read ahead lies in the hole: drop it
          eof = false;   // and read on from the hole's end.
          continue;
        }
      }
      while (!eof && have < buffer.size()) {
        const ssize_t n = ::pread(fd, buffer.data() + have, buffer.size() - have, static_cast<off_t>(total + have));
        if (n < 0 && errno == EINTR) {
          continue;
        }
        if (n < 0) {
          result.warnings.push_back(rel + ": read error (" + std::strerror(errno) + "), skipped");
          nd.failed = true;
          eof = true;
          break;
        }
        if (n == 0) {
          eof = true;
        }
        have += static_cast<std::size_t>(n);
      }
      if (nd.failed) {
        break;
      }
      std::size_t offset = 0;
      while (have - offset >= max_bytes || (eof && offset < have)) {
        if (sparse && offset > 0 && hole_end_at(total + offset) >= total + offset + max_bytes) {
          break;  // A whole zero chunk starts here: the fast path above takes it.
        }
        const std::size_t len = chunker.cut(ByteView(buffer.data() + offset, have - offset));
        SHOAL_ASSERT(len > 0);
        SHOAL_ASSERT(len <= options_.chunker.max_bytes);
        batcher.add(ChunkJob{.file = seq, .index = index++, .data = Bytes(buffer.begin() + static_cast<std::ptrdiff_t>(offset),
                                                                      buffer.begin() + static_cast<std::ptrdiff_t>(offset + len))});
        offset += len;
      }
      std::memmove(buffer.data(), buffer.data() + offset, have - offset);
      have -= offset;
      total += offset;
      if (eof && have == 0) {
        break;
      }
    }
    nd.chunk_count = index;
    struct stat after{};
    const bool changed = ::fstat(fd, &after) == 0 &&
                         (ns_of(after.st_mtim) != nd.stat.mtime_ns || static_cast<std::uint64_t>(after.st_size) != nd.stat.size);
    ::close(fd);
    if (nd.failed) {
      return;
    }
    nd.cacheable = std::max(nd.stat.mtime_ns, nd.stat.ctime_ns) + kRacyWindowNs <= options.now_ns;  // The racy rule.
    if (changed || total != nd.stat.size) {
      result.warnings.push_back(rel + ": changed while being saved; saved " + std::to_string(total) +
                                " bytes as read, the next snapshot reads it again");
      nd.cacheable = false;
    }
    nd.read_size = total;
    ++result.files_read;
    result.bytes_read += total;
    if (result.bytes_read / kReleaseMapEveryBytes != (result.bytes_read - total) / kReleaseMapEveryBytes) {
      env_->release_mapped_pages();
    }
  };
  while (!stack.empty() && !error.failed()) {
    WalkDir& top = stack.back();
    while (top.next < top.nodes.size() && top.nodes[top.next].kind != EntryKind::kDir) {
      ++top.next;
    }
    if (top.next < top.nodes.size()) {
      std::string rel = join_path(top.rel, top.nodes[top.next++].name);
      std::uint64_t ignored = 0;
      auto listed = list_dir(options.source_dir, rel, result.warnings, ignored);
      if (!listed) {
        error.set(listed.error());
        break;
      }
      stack.push_back(WalkDir{.rel = std::move(rel), .nodes = std::move(*listed)});  // `top` is invalid from here.
      continue;
    }
    // Subdirectories done: this directory's files, in name order (the file cache's order).
    for (Node& n : top.nodes) {
      if (n.kind != EntryKind::kFile || error.failed()) {
        continue;
      }
      const std::string rel = join_path(top.rel, n.name);
      if (const std::vector<ChunkId>* ids = cache.find(rel, n.stat)) {
        bool usable = base_present;
        if (!usable) {
          auto txn = Txn::begin_read(*env_);
          auto missing = txn ? chunks_.missing(*txn, *ids) : Result<std::vector<ChunkId>>(std::unexpected(txn.error()));
          usable = missing && missing->empty();
          if (++hits_since_release % 1024 == 0) {
            env_->release_mapped_pages();
          }
        }
        if (usable) {
          n.hit = true;
          n.cacheable = true;
          n.chunks = *ids;
          n.read_size = n.stat.size;
          ++result.cache_hits;
        }
      }
      if (!n.hit) {
        n.seq = next_file_seq++;
        read_file(rel, n, n.seq);
      }
      ++progress.files_done;
      progress.bytes_done += n.stat.size;
      if (options.progress && !n.hit) {
        options.progress(progress);
      }
    }
    DirRecord record{.seq = next_dir_seq++, .rel = std::move(top.rel), .nodes = std::move(top.nodes)};
    stack.pop_back();
    if (!stack.empty()) {
      stack.back().nodes[stack.back().next - 1].seq = record.seq;
    }
    if (!dirs_ahead.try_acquire()) {
      // The builder waits for the chunks of the directories ahead: ship the
      // ones still batched here before waiting for it.
      batcher.flush();
      dirs_ahead.acquire();
    }
    results.push(BuilderMsg(std::move(record)));
  }
  batcher.flush();
  jobs.close();
  for (auto& w : workers) {
    w.join();
  }
  results.close();
  builder.join();
  if (error.failed()) {
    return std::unexpected(error.take());
  }

  // Commit: the listings pack is synced, then the trees' index entries and
  // the catalog entry go in one transaction.
  {
    auto rtxn = Txn::begin_read(*env_);
    if (!rtxn) {
      return std::unexpected(rtxn.error());
    }
    // Parent: the project's newest snapshot (saves of this project are
    // excluded by the save lock, so it cannot change before the commit).
    Bytes last_key;
    SHOAL_TRY_STATUS(rtxn->scan(tables_.catalog, prefix, [&](ByteView key, ByteView) {
      if (key.size() < prefix.size() || !std::equal(prefix.begin(), prefix.end(), key.begin())) {
        return false;
      }
      last_key.assign(key.begin(), key.end());
      return true;
    }));
    if (auto parsed = internal::parse_catalog_key(last_key)) {
      commit.parent = parsed->id;
    }
  }
  commit.tree = root_tree;
  commit.logical_bytes = logical;
  commit.new_bytes = new_bytes;
  const Bytes commit_plain = encode_commit(commit);
  const ChunkId snapshot_id = chunk_id_of(commit_plain);
  SHOAL_TRY_STATUS(tree_writer.add(snapshot_id, encode_chunk(commit_plain, 0)));
  SHOAL_TRY_STATUS(tree_writer.sync());
  env_->release_mapped_pages();

  auto txn = Txn::begin_write(*env_);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  if (auto indexed = tree_writer.index_into(*txn); !indexed) {
    return std::unexpected(indexed.error());
  }

  // Stored-size quota: the distinct chunks the project's snapshots reference, plus this one's.
  if (quota.stored_bytes_max != 0) {
    ChunkIdSet before;
    auto snaps = internal::list_in(*txn, chunks_, tables_.catalog, project);
    if (!snaps) {
      return std::unexpected(snaps.error());
    }
    for (const auto& s : *snaps) {
      SHOAL_TRY_STATUS(internal::mark_reachable(*txn, chunks_, s.id, before));
    }
    ChunkIdSet after = before;
    after.insert(commit.tree);
    internal::WalkVisitor v;
    v.enter_tree = [&](const std::string&, const ChunkId& t) { return after.insert(t).second || t == commit.tree; };
    v.entry = [&](const std::string&, const TreeEntry& e) {
      if (e.kind == EntryKind::kFile) after.insert(e.chunks.begin(), e.chunks.end());
    };
    SHOAL_TRY_STATUS(internal::walk_tree(*txn, chunks_, commit.tree, v));
    auto sum = [&](const ChunkIdSet& set) -> Result<std::uint64_t> {
      std::uint64_t total = 0;
      for (const auto& id : set) {
        auto size = chunks_.stored_size(*txn, id);
        if (!size) return std::unexpected(size.error());
        total += size->value_or(0);
      }
      return total;
    };
    auto used = sum(before);
    auto would = sum(after);
    if (!used || !would) {
      return std::unexpected(!used ? used.error() : would.error());
    }
    if (*would > quota.stored_bytes_max) {
      txn->abort();
      return make_error(Code::kResourceExhausted,
                        std::string(kQuotaExceeded) + ": project '" + project + "' stores " + human(*used) + "; this snapshot would make it " +
                            human(*would) + ", above its stored-size limit of " + human(quota.stored_bytes_max) +
                            ". No snapshot was added and existing ones are untouched. Prune old snapshots "
                            "(`shoal snapshot prune --store " + dir_ + " --project " + project + " --keep-last N`, then `shoal snapshot gc`) "
                            "or raise the limit with `shoal snapshot quota set --store " + dir_ + " --project " + project + " --stored BYTES`.");
    }
  }

  const Bytes key = internal::catalog_key(project, commit.time_ns, snapshot_id);
  SHOAL_TRY_STATUS(txn->put(tables_.catalog, key, {}));
  SHOAL_TRY_STATUS(txn->put(tables_.by_id, snapshot_id, key));
  env_->release_mapped_pages();
  fault_point("before_final_commit");
  SHOAL_TRY_STATUS(commit_at(*txn, "before_final_commit"));
  fault_point("after_final_commit");
  // The file cache names the snapshot just committed. A crash before the
  // rename leaves the previous cache, whose base is the parent.
  if (cache_out) {
    if (auto s = cache_out->commit(snapshot_id); !s) {
      cache_warning = s.error().message;
    }
    fault_point("after_cache_write");
  }
  if (!cache_warning.empty()) {
    result.warnings.push_back("file cache not written (" + cache_warning + "); the next snapshot reads every file again");
  }
  result.snapshot = SnapshotInfo{.id = snapshot_id, .commit = commit};
  result.chunks_new = chunks_new;
  return result;
}

}  // namespace shoal::storage
