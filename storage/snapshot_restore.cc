// storage/snapshot_restore.cc: SnapshotStore::restore().
//
// The calling thread walks the snapshot (directories before their contents),
// creates directories and symlinks, and hands files to worker threads that
// read chunks (each re-hashed by ChunkStore::get), write them, and punch
// holes for all-zero chunks so sparse files stay sparse. Directory modes and
// mtimes are applied last, children before parents, so writing into a
// read-only directory works and a directory's mtime is not disturbed by its
// children being created. A file with a missing or corrupt chunk is removed
// and reported; everything else is still restored.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "base/assert.h"
#include "storage/snapshot_internal.h"
#include "storage/snapshot_store.h"

namespace shoal::storage {
namespace {

using internal::from_errno;

struct timespec to_timespec(std::int64_t ns) {
  struct timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  if (ts.tv_nsec < 0) {
    ts.tv_nsec += 1'000'000'000;
    ts.tv_sec -= 1;
  }
  return ts;
}

bool all_zero(const Bytes& b) {
  return b.empty() || (b[0] == 0 && std::memcmp(b.data(), b.data() + 1, b.size() - 1) == 0);
}

// Makes room for a new entry at abs when --force: anything there that is not
// a directory we are about to reuse goes.
Status clear_path(const std::string& abs, bool keep_dir) {
  struct stat st{};
  if (::lstat(abs.c_str(), &st) != 0) {
    return errno == ENOENT ? Status{} : std::unexpected(from_errno(errno, "inspect " + abs));
  }
  if (keep_dir && S_ISDIR(st.st_mode)) {
    return {};
  }
  std::error_code ec;
  std::filesystem::remove_all(abs, ec);
  if (ec) {
    return make_error(Code::kIOError, "remove " + abs + ": " + ec.message());
  }
  return {};
}

// All-zero chunks already verified by one restore worker: id -> length.
using ZeroChunks = std::unordered_map<ChunkId, std::size_t, ChunkIdHash>;

struct FileJob {
  std::string rel;
  TreeEntry entry;
};

}  // namespace

Result<RestoreReport> SnapshotStore::restore(const SnapshotInfo& snapshot, const std::string& target,
                                             const RestoreOptions& options) {
  struct stat st{};
  if (::lstat(target.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return make_error(Code::kFailedPrecondition, "restore target " + target + " exists and is not a directory");
    }
    std::error_code ec;
    const bool empty = std::filesystem::is_empty(target, ec);
    if (ec) {
      return make_error(Code::kIOError, "read " + target + ": " + ec.message());
    }
    if (!empty && !options.force) {
      return make_error(Code::kFailedPrecondition, "restore target " + target +
                                                       " is not empty; restore into a new or empty directory, "
                                                       "or pass --force to overwrite what is there");
    }
  } else if (errno != ENOENT) {
    return std::unexpected(from_errno(errno, "restore target " + target));
  } else if (::mkdir(target.c_str(), 0700) != 0) {
    return std::unexpected(from_errno(errno, "create restore target " + target));
  }

  auto txn = Txn::begin_read(*env_);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  auto commit = internal::load_commit(*txn, chunks_, snapshot.id);
  if (!commit) {
    return std::unexpected(Error{commit.error().code, "snapshot " + to_hex(snapshot.id).substr(0, 12) + ": " + commit.error().message});
  }

  RestoreReport report;
  std::mutex mutex;  // Guards report and first_error across workers.
  std::optional<Error> first_error;
  Progress progress{.files_done = 0, .files_total = commit->files, .bytes_done = 0, .bytes_total = commit->logical_bytes};

  std::deque<FileJob> queue;
  bool closed = false;
  std::condition_variable cv_items;
  std::condition_variable cv_space;
  constexpr std::size_t kQueueMax = 256;

  // zero_ok: ids of all-zero chunks this worker already read and verified in
  // its read transaction (a snapshot: same id, same bytes). A sparse file's
  // holes are thousands of references to one zero chunk; each becomes a
  // skipped offset (a hole) without decompressing and re-hashing it again.
  auto restore_file = [&](Txn& read_txn, ZeroChunks& zero_ok, const FileJob& job) -> Status {
    const std::string abs = target + "/" + job.rel;
    if (options.force) {
      SHOAL_TRY_STATUS(clear_path(abs, false));
    }
    const int fd = ::open(abs.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      return std::unexpected(from_errno(errno, "create " + abs));
    }
    std::uint64_t offset = 0;
    std::optional<Damage> damage;
    Status io = {};
    for (const auto& id : job.entry.chunks) {
      if (auto z = zero_ok.find(id); z != zero_ok.end()) {
        offset += z->second;  // A hole: nothing written; ftruncate sets the size.
        continue;
      }
      auto plain = chunks_.get(read_txn, id);
      if (!plain) {
        damage = Damage{.path = job.rel, .chunk = id,
                        .problem = plain.error().code == Code::kNotFound ? "missing" : "corrupt: " + plain.error().message};
        break;
      }
      if (all_zero(*plain)) {
        zero_ok.emplace(id, plain->size());
      } else if (io = internal::write_all_at(fd, plain->data(), plain->size(), offset, abs); !io) {
        break;
      }
      offset += plain->size();
    }
    if (io && !damage && offset != job.entry.size) {
      damage = Damage{.path = job.rel, .chunk = {}, .problem = "corrupt: chunks hold " + std::to_string(offset) +
                                                            " bytes, the listing says " + std::to_string(job.entry.size)};
    }
    if (io && !damage) {
      const struct timespec times[2] = {to_timespec(job.entry.mtime_ns), to_timespec(job.entry.mtime_ns)};
      if (::ftruncate(fd, static_cast<off_t>(offset)) != 0 || ::fchmod(fd, job.entry.mode) != 0 ||
          ::futimens(fd, times) != 0) {
        io = std::unexpected(from_errno(errno, "set size, mode or time of " + abs));
      }
    }
    ::close(fd);
    if (damage || !io) {
      ::unlink(abs.c_str());  // Never leave a file with wrong contents behind.
    }
    SHOAL_TRY_STATUS(io);
    std::lock_guard lock(mutex);
    if (damage) {
      report.damaged.push_back(std::move(*damage));
    } else {
      ++report.files;
      const std::uint64_t before = report.bytes;
      report.bytes += offset;
      // Every 8 MiB or 512 files: each probe faults in a 64 KiB neighbourhood.
      if (report.bytes / (8u << 20) != before / (8u << 20) || report.files % 512 == 0) {
        env_->release_mapped_pages();  // Chunks were read through the map; keep RSS flat.
      }
    }
    ++progress.files_done;
    progress.bytes_done += job.entry.size;
    if (options.progress) {
      options.progress(progress);
    }
    return {};
  };

  const unsigned worker_count = std::clamp(std::thread::hardware_concurrency(), 1u, 8u);
  std::vector<std::thread> workers;
  for (unsigned w = 0; w < worker_count; ++w) {
    workers.emplace_back([&] {
      auto read_txn = Txn::begin_read(*env_);
      ZeroChunks zero_ok;
      while (true) {
        FileJob job;
        {
          std::unique_lock lock(mutex);
          cv_items.wait(lock, [&] { return !queue.empty() || closed; });
          if (queue.empty()) {
            return;
          }
          job = std::move(queue.front());
          queue.pop_front();
          cv_space.notify_one();
          if (first_error) {
            continue;  // Drain without work after a fatal error.
          }
        }
        Status s = read_txn ? restore_file(*read_txn, zero_ok, job) : Status(std::unexpected(read_txn.error()));
        if (!s) {
          std::lock_guard lock(mutex);
          if (!first_error) {
            first_error = s.error();
          }
        }
      }
    });
  }

  struct DirMeta {
    std::string abs;
    std::uint32_t mode;
    std::int64_t mtime_ns;
  };
  std::vector<DirMeta> dirs;
  Status walk_status = {};
  internal::WalkVisitor v;
  v.entry = [&](const std::string& rel, const TreeEntry& e) {
    if (!walk_status) {
      return;
    }
    {
      std::lock_guard lock(mutex);
      if (first_error) {
        return;
      }
    }
    const std::string abs = target + "/" + rel;
    switch (e.kind) {
      case EntryKind::kDir: {
        if (options.force) {
          if (auto s = clear_path(abs, true); !s) {
            walk_status = s;
            return;
          }
        }
        if (::mkdir(abs.c_str(), 0700) != 0 && !(options.force && errno == EEXIST)) {
          walk_status = std::unexpected(from_errno(errno, "create directory " + abs));
          return;
        }
        dirs.push_back(DirMeta{abs, e.mode, e.mtime_ns});
        std::lock_guard lock(mutex);
        ++report.dirs;
        return;
      }
      case EntryKind::kSymlink: {
        if (options.force) {
          if (auto s = clear_path(abs, false); !s) {
            walk_status = s;
            return;
          }
        }
        const struct timespec times[2] = {to_timespec(e.mtime_ns), to_timespec(e.mtime_ns)};
        if (::symlink(e.target.c_str(), abs.c_str()) != 0 ||
            ::utimensat(AT_FDCWD, abs.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
          walk_status = std::unexpected(from_errno(errno, "create symlink " + abs));
          return;
        }
        std::lock_guard lock(mutex);
        ++report.symlinks;
        return;
      }
      case EntryKind::kFile: {
        std::unique_lock lock(mutex);
        cv_space.wait(lock, [&] { return queue.size() < kQueueMax; });
        queue.push_back(FileJob{rel, e});
        cv_items.notify_one();
        return;
      }
    }
  };
  v.tree_error = [&](const std::string& dir, const ChunkId& id, const Error& e) {
    std::lock_guard lock(mutex);
    report.damaged.push_back(Damage{.path = dir.empty() ? "/" : dir + "/", .chunk = id,
                                    .problem = (e.code == Code::kNotFound ? "missing" : "corrupt: " + e.message) +
                                               " (directory listing; its contents are not restored)"});
  };
  auto walked = internal::walk_tree(*txn, chunks_, commit->tree, v);
  {
    std::lock_guard lock(mutex);
    closed = true;
    cv_items.notify_all();
  }
  for (auto& w : workers) {
    w.join();
  }
  SHOAL_TRY_STATUS(walked);
  SHOAL_TRY_STATUS(walk_status);
  if (first_error) {
    return std::unexpected(*first_error);
  }
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
    const struct timespec times[2] = {to_timespec(it->mtime_ns), to_timespec(it->mtime_ns)};
    if (::chmod(it->abs.c_str(), it->mode) != 0 || ::utimensat(AT_FDCWD, it->abs.c_str(), times, 0) != 0) {
      return std::unexpected(from_errno(errno, "set mode or time of " + it->abs));
    }
  }
  std::sort(report.damaged.begin(), report.damaged.end(), [](const Damage& a, const Damage& b) { return a.path < b.path; });
  return report;
}

}  // namespace shoal::storage
