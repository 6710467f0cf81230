// storage/pack_gc.cc: reclaiming pack space after gc has dropped index
// entries (compact_packs), and listing pack files (list_packs).
//
// Per pack, from the committed index: no live chunk -> delete the file; live
// bytes under half of the file -> copy the live chunks into a new pack, sync
// it, re-point their entries in one transaction, then delete the old file;
// otherwise punch holes (FALLOC_FL_PUNCH_HOLE) over the garbage between live
// chunks and cut garbage off the end, which frees the blocks without moving
// anything. Crash safety: an entry only ever points at synced bytes that are
// not garbage-collected while it points there: holes and truncation cover
// only ranges no committed entry names, a copy is durable before the entries
// move, and the old file goes only after they moved. A crash leaves at worst
// an unindexed pack (the copy), which the next gc deletes.

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <unordered_map>

#include "storage/snapshot_internal.h"

namespace shoal::storage::internal {
namespace {

constexpr std::uint64_t kBlock = 4096;

std::uint64_t allocated_of(int fd) {
  struct stat st{};
  return ::fstat(fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_blocks) * 512 : 0;
}

// Closes a pack descriptor (and with it our flock) when gc is done with it.
struct LockedPack {
  PackFileInfo info;
  int fd = -1;
  std::vector<std::pair<ChunkId, ChunkLocation>> live;  // By offset.
  std::uint64_t live_bytes = 0;
};

}  // namespace

Result<std::vector<PackFileInfo>> list_packs(const std::string& store_dir) {
  std::vector<PackFileInfo> out;
  const std::string dir = packs_dir(store_dir);
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) {
      return out;  // No chunk stored yet.
    }
    return std::unexpected(from_errno(errno, "list " + dir));
  }
  while (const dirent* de = ::readdir(d)) {
    const auto id = parse_pack_name(de->d_name);
    struct stat st{};
    if (!id || ::fstatat(::dirfd(d), de->d_name, &st, 0) != 0) {
      continue;
    }
    out.push_back(PackFileInfo{.id = *id, .size = static_cast<std::uint64_t>(st.st_size),
                               .allocated = static_cast<std::uint64_t>(st.st_blocks) * 512});
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

Result<CompactReport> compact_packs(Env& env, ChunkStore& chunks, const std::function<void(std::string_view)>& fault_point) {
  CompactReport report;
  std::unordered_map<std::uint64_t, std::vector<std::pair<ChunkId, ChunkLocation>>> live;
  {
    auto txn = Txn::begin_read(env);
    if (!txn) {
      return std::unexpected(txn.error());
    }
    SHOAL_TRY_STATUS(txn->scan(chunks.table(), {}, [&](ByteView key, ByteView value) {
      const auto loc = decode_location(value);
      if (loc && key.size() == kHashBytes) {
        ChunkId id{};
        std::copy(key.begin(), key.end(), id.begin());
        live[loc->pack].emplace_back(id, *loc);
      }
      return true;
    }));
  }
  auto packs = list_packs(chunks.dir());
  if (!packs) {
    return std::unexpected(packs.error());
  }
  std::vector<LockedPack> locked;
  auto close_all = [&] {
    for (auto& p : locked) {
      ::close(p.fd);
    }
  };
  for (const auto& info : *packs) {
    const std::string path = pack_path(chunks.dir(), info.id);
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      continue;  // Vanished (another gc): nothing to do.
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      ::close(fd);  // A writer still appends to it.
      continue;
    }
    LockedPack p{.info = info, .fd = fd, .live = {}, .live_bytes = 0};
    if (auto it = live.find(info.id); it != live.end()) {
      p.live = std::move(it->second);
    }
    std::sort(p.live.begin(), p.live.end(), [](const auto& a, const auto& b) { return a.second.offset < b.second.offset; });
    for (const auto& e : p.live) {
      p.live_bytes += e.second.length;
    }
    locked.push_back(std::move(p));
  }

  std::vector<LockedPack*> rewrite;
  for (auto& p : locked) {
    const std::string path = pack_path(chunks.dir(), p.info.id);
    if (p.live.empty()) {
      fault_point("gc_pack_delete");
      if (::unlink(path.c_str()) == 0) {
        chunks.packs().forget(p.info.id);
        ++report.packs_deleted;
        report.bytes_reclaimed += p.info.allocated;
      }
      continue;
    }
    if (p.live_bytes * 2 < p.info.size) {
      rewrite.push_back(&p);
      continue;
    }
    // Mostly live: free the garbage's blocks in place.
    const std::uint64_t before = allocated_of(p.fd);
    std::uint64_t gap_begin = kPackHeaderBytes;
    for (const auto& [id, loc] : p.live) {
      const std::uint64_t from = (gap_begin + kBlock - 1) / kBlock * kBlock;
      const std::uint64_t to = loc.offset / kBlock * kBlock;
      if (to > from) {
        (void)::fallocate(p.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(from),
                          static_cast<off_t>(to - from));  // Unsupported: the garbage stays until a rewrite.
      }
      gap_begin = std::max<std::uint64_t>(gap_begin, std::uint64_t{loc.offset} + loc.length);
    }
    if (gap_begin < p.info.size) {
      (void)::ftruncate(p.fd, static_cast<off_t>(gap_begin));
    }
    const std::uint64_t after = allocated_of(p.fd);
    report.bytes_reclaimed += before > after ? before - after : 0;
  }

  if (!rewrite.empty()) {
    struct Move {
      ChunkId id;
      ChunkLocation from;
      ChunkLocation to;
    };
    std::vector<Move> moves;
    std::vector<LockedPack*> copied;
    PackWriter writer(chunks.dir());
    for (LockedPack* p : rewrite) {
      const std::size_t first = moves.size();
      bool ok = true;
      for (const auto& [id, loc] : p->live) {
        auto bytes = chunks.packs().read(loc);
        if (!bytes) {
          ok = false;  // Damaged: leave this pack as it is, verify reports it.
          break;
        }
        auto to = writer.append(*bytes, loc.plain);
        if (!to) {
          close_all();
          return std::unexpected(to.error());
        }
        moves.push_back(Move{id, loc, *to});
        report.bytes_copied += loc.length;
      }
      if (ok) {
        copied.push_back(p);
      } else {
        moves.resize(first);  // What was appended is garbage in the new pack.
      }
    }
    if (auto s = writer.sync(); !s) {
      close_all();
      return std::unexpected(s.error());
    }
    fault_point("gc_pack_copied");
    auto txn = Txn::begin_write(env);
    if (!txn) {
      close_all();
      return std::unexpected(txn.error());
    }
    std::unordered_map<std::uint64_t, bool> all_moved;
    for (LockedPack* p : copied) {
      all_moved[p->info.id] = true;
    }
    for (const auto& m : moves) {
      auto moved = chunks.relocate(*txn, m.id, m.from, m.to);
      if (!moved) {
        close_all();
        return std::unexpected(moved.error());
      }
      if (!*moved) {
        all_moved[m.from.pack] = false;  // Changed meanwhile: keep the old file.
      }
    }
    if (auto s = txn->commit(); !s) {
      close_all();
      return std::unexpected(s.error());
    }
    for (LockedPack* p : copied) {
      if (!all_moved[p->info.id]) {
        continue;
      }
      fault_point("gc_pack_delete");
      if (::unlink(pack_path(chunks.dir(), p->info.id).c_str()) == 0) {
        chunks.packs().forget(p->info.id);
        ++report.packs_rewritten;
        report.bytes_reclaimed += p->info.allocated;
      }
    }
    // The copies take space again; what was reclaimed is the difference.
    report.bytes_reclaimed -= std::min(report.bytes_reclaimed, report.bytes_copied);
  }
  close_all();
  return report;
}

}  // namespace shoal::storage::internal
