// storage/snapshot_create.cc: SnapshotStore::create().
//
// Design note. A save runs in three phases:
//  1. scan: walk the source with lstat only, building the directory tree in
//     memory; the live-size quota is checked here, before anything is written;
//  2. contents: files whose (size, mtime, inode, ctime) match the project's
//     file cache reuse their chunk lists unread; the others flow through a
//     pipeline: the calling thread reads and cuts chunks (FastCDC), worker
//     threads hash and compress, one writer thread appends new chunks to this
//     save's pack file and, every 32 MiB or 16,384 chunks, syncs it and
//     indexes them in one LMDB transaction. Results are addressed by (file,
//     chunk index), so the snapshot is the same whatever the thread count or
//     timing;
//  3. commit: trees are built bottom-up and appended with the Commit to a
//     pack of their own, which is synced; then their index entries, the
//     catalog entry and the file-cache updates go in one final transaction.
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
#include <thread>

#include "base/assert.h"
#include "base/codec.h"
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
// ids touch nearly all of them: fewer, larger batches leave fewer freed pages
// in data.mdb. 16,384 puts dirty at most ~the whole index of a 1 GiB store.
constexpr std::size_t kBatchPutsMax = 16384;
constexpr std::uint64_t kReleaseMapEveryBytes = 4u << 20;
// Chunks travel between the reader, the workers and the writer in batches:
// a queue hand-off (a lock, often a futex wake and a context switch) per
// chunk cost ~10 % of a save's CPU when most files are one small chunk.
constexpr std::size_t kJobBatchBytes = 256u << 10;  // Ship a batch at this many bytes of chunk data
constexpr std::size_t kJobBatchChunks = 64;         // or this many chunks.
constexpr std::size_t kQueueBatchesMax = 2;         // Batches in flight per queue (~512 KiB of chunks).
constexpr std::size_t kReadBufferBytes = 1u << 20;
constexpr unsigned kWorkersMax = 16;

std::int64_t ns_of(const struct timespec& ts) {
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

struct ScanFile {
  std::string rel;
  std::uint64_t size = 0;
  std::uint64_t inode = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  bool cache_hit = false;
  bool failed = false;         // Skipped; a warning says why.
  std::uint64_t read_size = 0; // Bytes actually read (the recorded size).
  std::vector<ChunkId> chunks; // From the cache (hits) or the writer (reads).
};

struct ScanNode {
  std::string name;
  EntryKind kind = EntryKind::kFile;
  std::uint32_t mode = 0;
  std::int64_t mtime_ns = 0;
  std::string target;           // Symlink.
  std::size_t index = SIZE_MAX; // Into files (kFile) or dirs (kDir).
  ScanFile file;                // kFile, until moved into Scan::files.
};

struct ScanDir {
  std::string rel;
  std::vector<ScanNode> children;
};

struct Scan {
  std::vector<ScanDir> dirs;   // Pre-order: a parent's index is below its children's.
  std::vector<ScanFile> files;
  std::vector<std::string> warnings;
  std::uint64_t logical_bytes = 0;
};

Status scan_tree(const std::string& root, Scan& scan) {
  struct stat st{};
  if (::lstat(root.c_str(), &st) != 0) {
    return std::unexpected(from_errno(errno, "source " + root));
  }
  if (!S_ISDIR(st.st_mode)) {
    return make_error(Code::kInvalidArgument, "source " + root + " is not a directory");
  }
  scan.dirs.push_back(ScanDir{});
  for (std::size_t d = 0; d < scan.dirs.size(); ++d) {
    const std::string abs = scan.dirs[d].rel.empty() ? root : root + "/" + scan.dirs[d].rel;
    DIR* dir = ::opendir(abs.c_str());
    if (dir == nullptr) {
      if (d == 0) {
        return std::unexpected(from_errno(errno, "source " + root));
      }
      scan.warnings.push_back(scan.dirs[d].rel + ": directory not readable (" + std::strerror(errno) + "), saved empty");
      continue;
    }
    const int dfd = ::dirfd(dir);
    std::vector<ScanNode> children;
    while (const dirent* de = ::readdir(dir)) {
      const std::string name = de->d_name;
      if (name == "." || name == "..") {
        continue;
      }
      const std::string rel = join_path(scan.dirs[d].rel, name);
      if (::fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        scan.warnings.push_back(rel + ": vanished or not readable (" + std::strerror(errno) + "), skipped");
        continue;
      }
      ScanNode node;
      node.name = name;
      node.mode = st.st_mode & 07777;
      node.mtime_ns = ns_of(st.st_mtim);
      if (S_ISREG(st.st_mode)) {
        node.kind = EntryKind::kFile;
        node.file = ScanFile{.rel = rel, .size = static_cast<std::uint64_t>(st.st_size),
                             .inode = st.st_ino, .mtime_ns = node.mtime_ns, .ctime_ns = ns_of(st.st_ctim)};
        scan.logical_bytes += static_cast<std::uint64_t>(st.st_size);
      } else if (S_ISDIR(st.st_mode)) {
        node.kind = EntryKind::kDir;
        node.index = SIZE_MAX;  // Assigned after sorting, to keep pre-order numbering.
      } else if (S_ISLNK(st.st_mode)) {
        node.kind = EntryKind::kSymlink;
        std::string target(static_cast<std::size_t>(st.st_size > 0 ? st.st_size : 255) + 1, '\0');
        const ssize_t n = ::readlinkat(dfd, de->d_name, target.data(), target.size());
        if (n < 0 || static_cast<std::size_t>(n) >= target.size() || static_cast<std::size_t>(n) > kSymlinkTargetBytesMax) {
          scan.warnings.push_back(rel + ": symlink target not readable, skipped");
          continue;
        }
        target.resize(static_cast<std::size_t>(n));
        node.target = std::move(target);
      } else {
        scan.warnings.push_back(rel + ": special file (device, fifo or socket) not saved");
        continue;
      }
      children.push_back(std::move(node));
    }
    ::closedir(dir);
    std::sort(children.begin(), children.end(), [](const ScanNode& a, const ScanNode& b) { return a.name < b.name; });
    // Indices in name order, so files are read in the order they are listed.
    for (auto& c : children) {
      if (c.kind == EntryKind::kFile) {
        c.index = scan.files.size();
        scan.files.push_back(std::move(c.file));
      } else if (c.kind == EntryKind::kDir) {
        c.index = scan.dirs.size();
        scan.dirs.push_back(ScanDir{.rel = join_path(scan.dirs[d].rel, c.name), .children = {}});
      }
    }
    scan.dirs[d].children = std::move(children);
  }
  return {};
}

// The file cache entry: [size, mtime_ns, inode, ctime_ns, chunk ids (one bin
// of 32-byte ids back to back)]. The key is BLAKE2b(path), so the path itself
// is not repeated (a 256-bit collision is not a practical concern); one bin
// instead of an array of bins saves two bytes per id. An entry that does not
// parse (an older layout, damage) is a miss: the file is read again.
Bytes cache_key(const Bytes& prefix, const std::string& rel) {
  Bytes key = prefix;
  const Hash256 h = blake2b_256(as_bytes(rel));
  key.insert(key.end(), h.begin(), h.end());
  return key;
}

Bytes encode_cache_entry(const ScanFile& f) {
  Bytes ids;
  ids.reserve(f.chunks.size() * kHashBytes);
  for (const auto& id : f.chunks) {
    ids.insert(ids.end(), id.begin(), id.end());
  }
  Encoder enc;
  enc.array(5).u64(f.read_size).i64(f.mtime_ns).u64(f.inode).i64(f.ctime_ns).bin(ids);
  return enc.take();
}

// True and fills f.chunks when the entry matches the file exactly.
bool cache_matches(ByteView value, ScanFile& f) {
  auto decoded = Decoded::parse(value, DecodeLimits{.input_bytes_max = kStoredChunkPlainMax,
                                                    .array_items_max = 8,
                                                    .map_items_max = 0,
                                                    .str_bytes_max = 0,
                                                    .bin_bytes_max = kFileChunksMax * kHashBytes,
                                                    .depth_max = 2});
  if (!decoded) {
    return false;  // A damaged cache entry only costs a re-read.
  }
  Reader r = decoded->root(5);
  const std::uint64_t size = r.u64();
  const std::int64_t mtime = r.i64();
  const std::uint64_t inode = r.u64();
  const std::int64_t ctime = r.i64();
  if (!r.ok() || size != f.size || mtime != f.mtime_ns || inode != f.inode || ctime != f.ctime_ns) {
    return false;
  }
  const Bytes ids = r.bin(kFileChunksMax * kHashBytes);
  r.expect_end();
  if (!r.ok() || ids.size() % kHashBytes != 0) {
    return false;
  }
  std::vector<ChunkId> chunks(ids.size() / kHashBytes);
  for (std::size_t i = 0; i < chunks.size(); ++i) {
    std::memcpy(chunks[i].data(), ids.data() + i * kHashBytes, kHashBytes);
  }
  f.chunks = std::move(chunks);
  return true;
}

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

// Collects the reader's chunks and pushes them to the workers a batch at a time.
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
  Scan scan;
  SHOAL_TRY_STATUS(scan_tree(options.source_dir, scan));
  result.warnings = std::move(scan.warnings);
  scan.warnings.clear();

  const Bytes prefix = internal::project_prefix(project);
  Quota quota;
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
    if (quota.live_bytes_max != 0 && scan.logical_bytes > quota.live_bytes_max) {
      return make_error(Code::kResourceExhausted,
                        std::string(kQuotaExceeded) + ": project '" + project + "' holds " + human(scan.logical_bytes) + " (" +
                            std::to_string(scan.logical_bytes) + " bytes) in " + options.source_dir +
                            ", above its live-size limit of " + human(quota.live_bytes_max) +
                            ". Nothing was stored. Delete files from the project, or raise the limit with "
                            "`shoal snapshot quota set --store " + dir_ + " --project " + project + " --live BYTES`.");
    }
    // File cache: trusted wholesale when the snapshot it was written with
    // still exists (then every chunk it names is referenced and gc is fenced
    // off); otherwise each hit's chunks are checked for presence.
    bool base_present = false;
    auto base = txn->get(tables_.cache_base, as_bytes(project));
    if (!base) {
      return std::unexpected(base.error());
    }
    if (*base && (*base)->size() == kHashBytes) {
      auto present = txn->get(tables_.by_id, **base);
      if (!present) {
        return std::unexpected(present.error());
      }
      base_present = present->has_value();
    }
    std::size_t lookups = 0;
    for (auto& f : scan.files) {
      // Random B-tree probes fault in whole 64 KiB neighbourhoods of the map
      // (kernel fault-around); dropping them often keeps RSS small.
      if (++lookups % 1024 == 0) {
        env_->release_mapped_pages();
      }
      auto v = txn->get(tables_.file_cache, cache_key(prefix, f.rel));
      if (!v) {
        return std::unexpected(v.error());
      }
      if (!*v || !cache_matches(**v, f)) {
        continue;
      }
      if (!base_present) {
        auto missing = chunks_.missing(*txn, f.chunks);
        if (!missing || !missing->empty()) {
          f.chunks.clear();
          continue;
        }
      }
      f.cache_hit = true;
      f.read_size = f.size;
      ++result.cache_hits;
    }
  }

  env_->release_mapped_pages();  // The cache lookups touched its pages.

  // Phase 2: read, cut, hash, compress, store.
  ErrorSlot error;
  BoundedQueue<ChunkJobs> jobs(kQueueBatchesMax);
  BoundedQueue<std::vector<ChunkResult>> results(kQueueBatchesMax);
  std::vector<std::vector<ChunkId>> file_chunks(scan.files.size());  // Owned by the writer until joined.
  std::uint64_t new_bytes = 0;
  std::uint64_t chunks_new = 0;
  ChunkIdSet claimed;
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
            }
          }
          for (std::size_t k = 0; k < out.size() && !error.failed(); ++k) {
            if (first[k] && !present[k]) {
              const ChunkJob& job = (*batch)[k];
              out[k].stored = encode_chunk(job.zero_bytes != 0 ? Bytes(job.zero_bytes, 0) : job.data, level);
            }
          }
        }
        batch->clear();  // Free the read bytes before waiting on the writer.
        results.push(std::move(out));
      }
    });
  }
  // One pack writer for the save's data chunks (trees get their own in
  // phase 3). Each batch: append, sync the pack, index in one
  // transaction (never an entry for bytes a crash could lose).
  ChunkWriter chunk_writer(chunks_);
  std::thread writer([&] {
    std::size_t batch_bytes = 0;
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
        }
        env_->release_mapped_pages();  // Index puts touched leaf pages; keep RSS flat.
      }
      batch_bytes = 0;
    };
    while (auto batch = results.pop()) {
      for (const ChunkResult& r : *batch) {
        auto& list = file_chunks[r.file];
        if (list.size() <= r.index) {
          list.resize(r.index + 1);
        }
        list[r.index] = r.id;
        if (!r.stored || error.failed()) {
          continue;
        }
        if (auto s = chunk_writer.add(r.id, *r.stored); !s) {
          error.set(s.error());
          continue;
        }
        batch_bytes += r.stored->size();
        fault_point("chunk_put");
        if (batch_bytes >= kBatchBytesMax || chunk_writer.pending() >= kBatchPutsMax) {
          commit_batch();
        }
      }
    }
    commit_batch();
  });

  // The reader: this thread.
  const Chunker chunker(options_.chunker);
  JobBatcher batcher(jobs);
  Progress progress{.files_done = result.cache_hits, .files_total = scan.files.size(), .bytes_done = 0,
                    .bytes_total = scan.logical_bytes};
  for (const auto& f : scan.files) {
    if (f.cache_hit) {
      progress.bytes_done += f.size;
    }
  }
  Bytes buffer(std::max<std::size_t>(kReadBufferBytes, 2 * options_.chunker.max_bytes));
  for (std::size_t i = 0; i < scan.files.size() && !error.failed(); ++i) {
    ScanFile& f = scan.files[i];
    if (f.cache_hit) {
      continue;
    }
    const std::string abs = options.source_dir + "/" + f.rel;
    // O_NONBLOCK: a path replaced by a fifo since the scan must not block the
    // save in open(); the fstat below then skips anything not regular.
    int fd = ::open(abs.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOATIME);
    if (fd < 0 && errno == EPERM) {
      fd = ::open(abs.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);  // O_NOATIME needs ownership.
    }
    if (fd < 0) {
      result.warnings.push_back(f.rel + ": " + (errno == ENOENT ? "vanished during the save" : std::string("not readable (") + std::strerror(errno) + ")") + ", skipped");
      f.failed = true;
      continue;
    }
    struct stat before{};
    if (::fstat(fd, &before) != 0 || !S_ISREG(before.st_mode)) {
      result.warnings.push_back(f.rel + ": no longer a regular file (replaced during the save), skipped");
      f.failed = true;
      ::close(fd);
      continue;
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
            batcher.add(ChunkJob{.file = i, .index = index++, .data = {}, .zero_bytes = max_bytes});
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
          result.warnings.push_back(f.rel + ": read error (" + std::strerror(errno) + "), skipped");
          f.failed = true;
          eof = true;
          break;
        }
        if (n == 0) {
          eof = true;
        }
        have += static_cast<std::size_t>(n);
      }
      if (f.failed) {
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
        batcher.add(ChunkJob{.file = i, .index = index++, .data = Bytes(buffer.begin() + static_cast<std::ptrdiff_t>(offset),
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
    struct stat after{};
    const bool changed = ::fstat(fd, &after) == 0 &&
                         (ns_of(after.st_mtim) != f.mtime_ns || static_cast<std::uint64_t>(after.st_size) != f.size);
    ::close(fd);
    if (f.failed) {
      continue;
    }
    if (changed || total != f.size) {
      result.warnings.push_back(f.rel + ": changed while being saved; saved " + std::to_string(total) +
                                " bytes as read, the next snapshot reads it again");
      f.ctime_ns = options.now_ns;  // Forces the racy rule: never cached.
    }
    f.read_size = total;
    ++result.files_read;
    result.bytes_read += total;
    if (result.bytes_read / kReleaseMapEveryBytes != (result.bytes_read - total) / kReleaseMapEveryBytes) {
      env_->release_mapped_pages();
    }
    ++progress.files_done;
    progress.bytes_done += f.size;
    if (options.progress) {
      options.progress(progress);
    }
  }
  batcher.flush();
  jobs.close();
  for (auto& w : workers) {
    w.join();
  }
  results.close();
  writer.join();
  if (error.failed()) {
    return std::unexpected(error.take());
  }
  std::uint64_t logical = 0;
  for (std::size_t i = 0; i < scan.files.size(); ++i) {
    ScanFile& f = scan.files[i];
    if (!f.cache_hit && !f.failed) {
      f.chunks = std::move(file_chunks[i]);
    }
    if (!f.failed) {
      logical += f.read_size;
    }
  }

  // Phase 3: trees and the Commit are appended to a pack of their own and
  // synced; then their index entries, the catalog entry and the file cache
  // go in one transaction. Listings apart from data: damage to a data pack
  // (a truncated file) then costs only the files whose chunks are in it, and
  // walking trees (gc's mark, verify, diff) reads a few small packs.
  SHOAL_ASSERT(chunk_writer.pending() == 0);  // The writer's last batch indexed everything.
  ChunkWriter tree_writer(chunks_);
  Commit commit{.project = project, .time_ns = options.now_ns, .parent = std::nullopt, .tree = {},
                .epoch = options.epoch};
  std::vector<ChunkId> dir_tree(scan.dirs.size());
  {
    auto rtxn = Txn::begin_read(*env_);
    if (!rtxn) {
      return std::unexpected(rtxn.error());
    }
    ChunkIdSet added_trees;
    for (std::size_t d = scan.dirs.size(); d-- > 0;) {
      if (d % 256 == 0) {
        env_->release_mapped_pages();  // Each lookup probes a random leaf (see the cache lookups).
      }
      std::vector<TreeEntry> entries;
      entries.reserve(scan.dirs[d].children.size());
      for (const auto& c : scan.dirs[d].children) {
        TreeEntry e{.name = c.name, .kind = c.kind, .mode = c.mode, .mtime_ns = c.mtime_ns};
        if (c.kind == EntryKind::kFile) {
          const ScanFile& f = scan.files[c.index];
          if (f.failed) {
            continue;
          }
          e.size = f.read_size;
          e.chunks = f.chunks;
          ++commit.files;
        } else if (c.kind == EntryKind::kDir) {
          SHOAL_ASSERT(c.index > d);  // Pre-order numbering: children were built first.
          e.tree = dir_tree[c.index];
          ++commit.dirs;
        } else {
          e.target = c.target;
          ++commit.symlinks;
        }
        entries.push_back(std::move(e));
      }
      const Bytes plain = encode_tree(entries);
      dir_tree[d] = chunk_id_of(plain);
      auto has = chunks_.contains(*rtxn, dir_tree[d]);
      if (!has) {
        return std::unexpected(has.error());
      }
      if (!*has && added_trees.insert(dir_tree[d]).second) {
        const Bytes stored = encode_chunk(plain, level);
        SHOAL_TRY_STATUS(tree_writer.add(dir_tree[d], stored));
        new_bytes += stored.size();
        ++chunks_new;
      }
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
  commit.tree = dir_tree[0];
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

  // File cache: write what was read (unless racy), drop what is gone.
  ChunkIdSet current;  // Hashes of cached paths (the key suffix).
  for (const auto& f : scan.files) {
    const Bytes k = cache_key(prefix, f.rel);
    ChunkId suffix{};
    std::memcpy(suffix.data(), k.data() + prefix.size(), suffix.size());
    if (f.failed) {
      continue;
    }
    if (f.cache_hit) {
      current.insert(suffix);
      continue;
    }
    const bool racy = std::max(f.mtime_ns, f.ctime_ns) + kRacyWindowNs > options.now_ns;
    if (racy) {
      continue;
    }
    current.insert(suffix);
    SHOAL_TRY_STATUS(txn->put(tables_.file_cache, k, encode_cache_entry(f)));
  }
  std::vector<Bytes> stale;
  SHOAL_TRY_STATUS(txn->scan(tables_.file_cache, prefix, [&](ByteView k, ByteView) {
    if (k.size() != prefix.size() + kHashBytes || !std::equal(prefix.begin(), prefix.end(), k.begin())) {
      return k.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), k.begin());
    }
    ChunkId suffix{};
    std::memcpy(suffix.data(), k.data() + prefix.size(), suffix.size());
    if (!current.contains(suffix)) {
      stale.emplace_back(k.begin(), k.end());
    }
    return true;
  }));
  for (const auto& k : stale) {
    auto d = txn->del(tables_.file_cache, k);
    if (!d) {
      return std::unexpected(d.error());
    }
  }
  SHOAL_TRY_STATUS(txn->put(tables_.cache_base, as_bytes(project), snapshot_id));
  env_->release_mapped_pages();
  fault_point("before_final_commit");
  SHOAL_TRY_STATUS(commit_at(*txn, "before_final_commit"));
  fault_point("after_final_commit");
  result.snapshot = SnapshotInfo{.id = snapshot_id, .commit = commit};
  result.chunks_new = chunks_new;
  return result;
}

}  // namespace shoal::storage
