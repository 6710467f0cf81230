// storage/snapshot_store.cc: opening a store, the catalog (list, find, prune),
// gc, stats, quotas, verify, diff and the transfer-layer API. create() lives
// in snapshot_create.cc, restore() in snapshot_restore.cc.

#include "storage/snapshot_store.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

#include "base/assert.h"
#include "base/codec.h"
#include "storage/file_cache.h"
#include "storage/snapshot_internal.h"

namespace shoal::storage {

using internal::catalog_key;
using internal::load_commit;
using internal::parse_catalog_key;
using internal::project_prefix;

GcFence::~GcFence() { internal::unlock_file(fd_); }

Status validate_project(std::string_view project) {
  if (project.empty() || project.size() > 128) {
    return make_error(Code::kInvalidArgument, "project name must be 1 to 128 characters");
  }
  if (project.front() == '.') {
    return make_error(Code::kInvalidArgument, "project name must not start with '.'");
  }
  for (char c : project) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) {
      return make_error(Code::kInvalidArgument,
                        "project name '" + std::string(project) + "' may only use letters, digits, '.', '_' and '-'");
    }
  }
  return {};
}

SnapshotStore::SnapshotStore(std::string dir, StoreOptions options, std::unique_ptr<Env> env, ChunkStore chunks,
                             Tables tables)
    : dir_(std::move(dir)), options_(options), env_(std::move(env)), chunks_(chunks), tables_(tables) {}

SnapshotStore::~SnapshotStore() = default;

namespace {

// Store layout version in snap.meta["format"]: 2 = chunk bytes in pack files.
// Version 1 (no meta entry) kept chunk bytes in snap.chunks values; its index
// entries would read as malformed, so such a store is refused by name.
constexpr std::string_view kFormatKey = "format";
constexpr std::uint8_t kFormat = 2;

Status check_format(Env& env, ChunkStore& chunks, const std::string& dir) {
  auto meta = env.table("snap.meta");
  if (!meta) {
    return std::unexpected(meta.error());
  }
  auto txn = Txn::begin_write(env);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  auto format = txn->get(*meta, as_bytes(kFormatKey));
  if (!format) {
    return std::unexpected(format.error());
  }
  if (*format) {
    if (**format != Bytes{kFormat}) {
      return make_error(Code::kFailedPrecondition, "store " + dir + " has layout version " +
                                                       std::to_string((*format)->empty() ? 0 : (**format)[0]) +
                                                       "; this shoal reads version " + std::to_string(kFormat));
    }
    return {};
  }
  bool empty = true;
  SHOAL_TRY_STATUS(txn->scan(chunks.table(), {}, [&](ByteView, ByteView) {
    empty = false;
    return false;
  }));
  if (!empty) {
    return make_error(Code::kFailedPrecondition,
                      "store " + dir + " was written by an older shoal that kept chunk bytes in LMDB (layout 1); "
                      "this shoal keeps them in pack files (layout 2). Restore what you need with the older binary "
                      "and save it into a new store.");
  }
  SHOAL_TRY_STATUS(txn->put(*meta, as_bytes(kFormatKey), Bytes{kFormat}));
  return txn->commit();
}

// File caches lived in LMDB (tables snap.file_cache and snap.cache_base)
// until they moved to caches/<project>.cache. The tables are dropped the
// first time a newer shoal opens the store; each project's next save reads
// its files once. The layout version is unchanged: an older shoal finds no
// cache entries and reads files again too.
Status drop_legacy_file_cache(Env& env) {
  auto txn = Txn::begin_write(env);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  bool dropped = false;
  for (const char* name : {"snap.file_cache", "snap.cache_base"}) {
    MDB_dbi dbi = 0;
    const int rc = mdb_dbi_open(txn->raw(), name, 0, &dbi);
    if (rc == MDB_NOTFOUND) {
      continue;
    }
    if (rc != 0) {
      return std::unexpected(from_mdb(rc, std::string("open ") + name));
    }
    if (const int drc = mdb_drop(txn->raw(), dbi, 1); drc != 0) {
      return std::unexpected(from_mdb(drc, std::string("drop ") + name));
    }
    dropped = true;
  }
  if (!dropped) {
    txn->abort();
    return {};
  }
  return txn->commit();
}

}  // namespace

Result<std::unique_ptr<SnapshotStore>> SnapshotStore::open(const std::string& dir, const StoreOptions& options) {
  auto env = Env::open(dir, EnvOptions{.map_size_bytes = options.map_size_bytes});
  if (!env) {
    return std::unexpected(env.error());
  }
  auto chunks = ChunkStore::open(**env, dir);
  if (!chunks) {
    return std::unexpected(chunks.error());
  }
  Tables t;
  for (auto [name, slot] : {std::pair{"snap.catalog", &t.catalog}, std::pair{"snap.by_id", &t.by_id},
                            std::pair{"snap.quota", &t.quota}}) {
    auto dbi = (*env)->table(name);
    if (!dbi) {
      return std::unexpected(dbi.error());
    }
    *slot = *dbi;
  }
  SHOAL_TRY_STATUS(check_format(**env, *chunks, dir));
  SHOAL_TRY_STATUS(drop_legacy_file_cache(**env));
  return std::unique_ptr<SnapshotStore>(new SnapshotStore(dir, options, std::move(*env), *chunks, t));
}

Result<GcFence> SnapshotStore::hold_gc() {
  auto fd = internal::lock_file(dir_, "gc", /*exclusive=*/false, /*blocking=*/true);
  if (!fd) {
    return std::unexpected(fd.error());
  }
  return GcFence(*fd);
}

namespace internal {

Result<std::vector<SnapshotInfo>> list_in(Txn& txn, ChunkStore& chunks, MDB_dbi catalog,
                                          const std::optional<std::string>& project) {
  std::vector<internal::CatalogKey> keys;
  const Bytes prefix = project ? project_prefix(*project) : Bytes{};
  Status bad = {};
  auto s = txn.scan(catalog, prefix, [&](ByteView key, ByteView) {
    if (!std::equal(prefix.begin(), prefix.end(), key.begin(), key.begin() + std::min(key.size(), prefix.size())) ||
        key.size() < prefix.size()) {
      return false;
    }
    auto parsed = parse_catalog_key(key);
    if (!parsed) {
      bad = make_error(Code::kCorruption, "malformed catalog key");
      return false;
    }
    keys.push_back(std::move(*parsed));
    return true;
  });
  if (!s) {
    return std::unexpected(s.error());
  }
  if (!bad) {
    return std::unexpected(bad.error());
  }
  if (!project) {
    std::stable_sort(keys.begin(), keys.end(), [](const auto& a, const auto& b) { return a.time_ns < b.time_ns; });
  }
  std::vector<SnapshotInfo> out;
  out.reserve(keys.size());
  for (const auto& k : keys) {
    SnapshotInfo info{.id = k.id, .commit = {}};
    auto commit = load_commit(txn, chunks, k.id);
    if (commit) {
      info.commit = std::move(*commit);
    } else {
      // A damaged commit still lists (verify reports it); keep what the key says.
      info.commit.project = k.project;
      info.commit.time_ns = k.time_ns;
    }
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace internal

using internal::list_in;

Result<std::vector<SnapshotInfo>> SnapshotStore::list(const std::optional<std::string>& project) {
  auto txn = Txn::begin_read(*env_);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  return list_in(*txn, chunks_, tables_.catalog, project);
}

Result<SnapshotInfo> SnapshotStore::find(std::string_view spec, const std::optional<std::string>& project) {
  auto all = list(project);
  if (!all) {
    return std::unexpected(all.error());
  }
  if (spec == "latest") {
    if (!project) {
      return make_error(Code::kInvalidArgument, "'latest' needs a project (--project ID)");
    }
    if (all->empty()) {
      return make_error(Code::kNotFound, "project '" + *project + "' has no snapshots");
    }
    return all->back();
  }
  if (spec.size() < 6 || spec.size() > 2 * kHashBytes ||
      spec.find_first_not_of("0123456789abcdef") != std::string_view::npos) {
    return make_error(Code::kInvalidArgument, "snapshot '" + std::string(spec) +
                                                  "' is not an id: give 6 to 64 lowercase hex digits or 'latest'");
  }
  std::optional<SnapshotInfo> found;
  for (const auto& s : *all) {
    if (to_hex(s.id).starts_with(spec)) {
      if (found) {
        return make_error(Code::kInvalidArgument, "snapshot prefix '" + std::string(spec) + "' is ambiguous; give more digits");
      }
      found = s;
    }
  }
  if (!found) {
    return make_error(Code::kNotFound, "no snapshot " + std::string(spec) + (project ? " in project '" + *project + "'" : std::string()) +
                                           " (see `shoal snapshot list`)");
  }
  return *found;
}

Result<PruneReport> SnapshotStore::prune(const std::string& project, const RetentionPolicy& policy, bool dry_run) {
  SHOAL_TRY_STATUS(validate_project(project));
  if (policy.keeps_nothing()) {
    return make_error(Code::kInvalidArgument, "a retention policy must keep something (e.g. --keep-last 1)");
  }
  return remove_snapshots(project, [&](std::span<const std::int64_t> times) { return select_kept(times, policy); },
                          dry_run);
}

Result<PruneReport> SnapshotStore::forget_project(const std::string& project) {
  SHOAL_TRY_STATUS(validate_project(project));
  auto report = remove_snapshots(
      project, [](std::span<const std::int64_t> times) { return std::vector<bool>(times.size(), false); }, false);
  if (report) {
    // The cache names chunks of snapshots that are gone; a save running now
    // may write a new one, which is valid (its base is that save's snapshot).
    ::unlink(file_cache_path(dir_, project).c_str());
  }
  return report;
}

Result<PruneReport> SnapshotStore::remove_snapshots(
    const std::string& project, const std::function<std::vector<bool>(std::span<const std::int64_t>)>& keep_fn,
    bool dry_run) {
  auto txn = Txn::begin_write(*env_);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  auto snaps = list_in(*txn, chunks_, tables_.catalog, project);
  if (!snaps) {
    return std::unexpected(snaps.error());
  }
  std::vector<std::int64_t> times;
  for (const auto& s : *snaps) {
    times.push_back(s.commit.time_ns);
  }
  const std::vector<bool> keep = keep_fn(times);
  SHOAL_ASSERT(keep.size() == times.size());
  PruneReport report;
  for (std::size_t i = 0; i < snaps->size(); ++i) {
    const auto& s = (*snaps)[i];
    if (keep[i]) {
      report.kept.push_back(s);
      continue;
    }
    report.removed.push_back(s);
    if (!dry_run) {
      fault_point("prune_delete");
      auto a = txn->del(tables_.catalog, catalog_key(project, s.commit.time_ns, s.id));
      auto b = txn->del(tables_.by_id, s.id);
      if (!a || !b) {
        return std::unexpected(!a ? a.error() : b.error());
      }
    }
  }
  SHOAL_ASSERT(report.kept.size() + report.removed.size() == snaps->size());
  if (dry_run) {
    txn->abort();
    return report;
  }
  fault_point("prune_before_commit");
  SHOAL_TRY_STATUS(txn->commit());
  return report;
}

namespace {

void remove_stale_caches(const std::string& store_dir, const std::set<std::string>& projects) {
  const std::string dir = caches_dir(store_dir);
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return;
  }
  while (const dirent* de = ::readdir(d)) {
    const std::string_view name = de->d_name;
    const bool tmp = name.ends_with(kCacheTmpSuffix);
    const bool orphan = !tmp && name.ends_with(kCacheSuffix) &&
                        !projects.contains(std::string(name.substr(0, name.size() - kCacheSuffix.size())));
    if (tmp || orphan) {
      ::unlinkat(::dirfd(d), de->d_name, 0);
    }
  }
  ::closedir(d);
}

std::uint64_t cache_file_bytes(const std::string& store_dir) {
  std::uint64_t total = 0;
  const std::string dir = caches_dir(store_dir);
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return 0;
  }
  struct stat st{};
  while (const dirent* de = ::readdir(d)) {
    if (de->d_name[0] != '.' && ::fstatat(::dirfd(d), de->d_name, &st, 0) == 0 && S_ISREG(st.st_mode)) {
      total += static_cast<std::uint64_t>(st.st_blocks) * 512;
    }
  }
  ::closedir(d);
  return total;
}

}  // namespace

Result<GcReport> SnapshotStore::gc() {
  // Two phases, so that saves are kept waiting only for the deletions:
  //  1. mark, without any lock, in a read transaction: every chunk reachable
  //     from the catalog as it is then; the candidates are the chunks stored
  //     then that are not marked. Saves of any project run meanwhile.
  //  2. take the gc lock exclusively (waits for running saves, holds off new
  //     ones), then in one write transaction mark the snapshots cataloged
  //     since phase 1 (trees already marked are not walked again) and delete
  //     the candidates still unmarked.
  // Safe: a chunk can become referenced after phase 1 only by a save or a
  // transfer, which holds the gc lock shared until its snapshot is cataloged;
  // phase 2 starts after every such holder is done, so each of those snapshots
  // is in the catalog phase 2 reads and marks. Chunks stored after phase 1 are
  // not candidates (the next gc sees them). Snapshots removed after phase 1
  // keep their chunks until the next gc: conservative, never wrong.
  using Clock = std::chrono::steady_clock;
  const auto started = Clock::now();
  GcReport report;
  ChunkIdSet live;
  ChunkIdSet marked_snapshots;
  std::vector<ChunkId> candidates;
  {
    auto txn = Txn::begin_read(*env_);
    if (!txn) {
      return std::unexpected(txn.error());
    }
    auto snaps = list_in(*txn, chunks_, tables_.catalog, std::nullopt);
    if (!snaps) {
      return std::unexpected(snaps.error());
    }
    for (const auto& s : *snaps) {
      if (auto m = internal::mark_reachable(*txn, chunks_, s.id, live); !m) {
        return make_error(Code::kFailedPrecondition,
                          "gc stopped without deleting anything: " + m.error().message +
                              ". Run `shoal snapshot verify`, then repair or prune the damaged snapshot.");
      }
      marked_snapshots.insert(s.id);
    }
    env_->release_mapped_pages();
    std::uint64_t seen = 0;
    SHOAL_TRY_STATUS(txn->scan(chunks_.table(), {}, [&](ByteView key, ByteView) {
      ChunkId id{};
      SHOAL_ASSERT(key.size() == id.size());  // We only ever write 32-byte keys.
      std::memcpy(id.data(), key.data(), id.size());
      if (!live.contains(id)) {
        candidates.push_back(id);
      }
      if (++seen % 256 == 0) {  // Each probe of an overflow value maps its neighbourhood.
        env_->release_mapped_pages();
      }
      return true;
    }));
  }
  env_->release_mapped_pages();
  report.mark_seconds = std::chrono::duration<double>(Clock::now() - started).count();
  fault_point("gc_marked");

  auto fd = internal::lock_file(dir_, "gc", /*exclusive=*/true, /*blocking=*/false);
  if (!fd && fd.error().code == Code::kUnavailable) {
    report.waited_for_saves = true;
    fd = internal::lock_file(dir_, "gc", /*exclusive=*/true, /*blocking=*/true);
  }
  if (!fd) {
    return std::unexpected(fd.error());
  }
  GcFence lock(*fd);  // Same RAII type; here it holds the exclusive side.
  const auto locked = Clock::now();
  auto txn = Txn::begin_write(*env_);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  auto snaps = list_in(*txn, chunks_, tables_.catalog, std::nullopt);
  if (!snaps) {
    return std::unexpected(snaps.error());
  }
  for (const auto& s : *snaps) {
    if (marked_snapshots.contains(s.id)) {
      continue;
    }
    if (auto m = internal::mark_reachable(*txn, chunks_, s.id, live); !m) {
      return make_error(Code::kFailedPrecondition,
                        "gc stopped without deleting anything: " + m.error().message +
                            ". Run `shoal snapshot verify`, then repair or prune the damaged snapshot.");
    }
  }
  for (const auto& id : candidates) {
    if (live.contains(id)) {
      continue;
    }
    auto size = chunks_.stored_size(*txn, id);
    if (!size) {
      return std::unexpected(size.error());
    }
    fault_point("gc_delete");
    auto removed = chunks_.remove(*txn, id);
    if (!removed) {
      return std::unexpected(removed.error());
    }
    if (*removed) {
      ++report.chunks_removed;
      report.bytes_removed += size->value_or(0);
    }
  }
  MDB_stat st{};
  if (const int rc = mdb_stat(txn->raw(), chunks_.table(), &st); rc != 0) {
    return std::unexpected(from_mdb(rc, "gc stat"));
  }
  report.chunks_kept = st.ms_entries;
  std::set<std::string> projects;
  for (const auto& s : *snaps) {
    projects.insert(s.commit.project);
  }
  fault_point("gc_before_commit");
  SHOAL_TRY_STATUS(txn->commit());
  // Still holding the lock, so no save is writing a file cache: temporary
  // ones are leftovers of killed saves, and a project without snapshots
  // needs no cache.
  remove_stale_caches(dir_, projects);
  // Still holding the lock: no writer appends to a pack while gc reclaims.
  auto compacted = internal::compact_packs(*env_, chunks_, [this](std::string_view point) { fault_point(point); });
  if (!compacted) {
    return std::unexpected(compacted.error());
  }
  report.packs_deleted = compacted->packs_deleted;
  report.packs_rewritten = compacted->packs_rewritten;
  report.bytes_copied = compacted->bytes_copied;
  report.bytes_reclaimed = compacted->bytes_reclaimed;
  report.locked_seconds = std::chrono::duration<double>(Clock::now() - locked).count();
  env_->release_mapped_pages();
  return report;
}

namespace {

Bytes encode_quota(const Quota& q) {
  Encoder enc;
  enc.array(2).u64(q.live_bytes_max).u64(q.stored_bytes_max);
  return enc.take();
}

}  // namespace

Status SnapshotStore::set_quota(const std::string& project, const Quota& quota) {
  SHOAL_TRY_STATUS(validate_project(project));
  auto txn = Txn::begin_write(*env_);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  if (quota.live_bytes_max == 0 && quota.stored_bytes_max == 0) {
    auto d = txn->del(tables_.quota, as_bytes(project));
    if (!d) {
      return std::unexpected(d.error());
    }
  } else {
    SHOAL_TRY_STATUS(txn->put(tables_.quota, as_bytes(project), encode_quota(quota)));
  }
  return txn->commit();
}

namespace internal {

Result<Quota> read_quota(Txn& txn, MDB_dbi table, const std::string& project) {
  auto v = txn.get(table, as_bytes(project));
  if (!v) {
    return std::unexpected(v.error());
  }
  Quota q;
  if (!*v) {
    return q;
  }
  auto decoded = Decoded::parse(**v);
  if (!decoded) {
    return make_error(Code::kCorruption, "quota record of '" + project + "': " + decoded.error().message);
  }
  Reader r = decoded->root(2);
  q.live_bytes_max = r.u64();
  q.stored_bytes_max = r.u64();
  r.expect_end();
  if (!r.ok()) {
    return make_error(Code::kCorruption, "quota record of '" + project + "': " + r.error().message);
  }
  return q;
}

}  // namespace internal

Result<Quota> SnapshotStore::quota(const std::string& project) {
  SHOAL_TRY_STATUS(validate_project(project));
  auto txn = Txn::begin_read(*env_);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  return internal::read_quota(*txn, tables_.quota, project);
}

Result<StoreStats> SnapshotStore::stats() {
  auto txn = Txn::begin_read(*env_);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  StoreStats out;
  auto snaps = list_in(*txn, chunks_, tables_.catalog, std::nullopt);
  if (!snaps) {
    return std::unexpected(snaps.error());
  }
  std::map<std::string, std::vector<const SnapshotInfo*>> by_project;
  for (const auto& s : *snaps) {
    by_project[s.commit.project].push_back(&s);
    out.logical_bytes += s.commit.logical_bytes;
  }
  out.snapshots = snaps->size();
  ChunkIdSet all_live;
  for (const auto& [project, list] : by_project) {
    ProjectStats p;
    p.project = project;
    p.snapshots = list.size();
    p.live_bytes = list.back()->commit.logical_bytes;
    ChunkIdSet live;
    for (const auto* s : list) {
      p.logical_bytes += s->commit.logical_bytes;
      auto marked = internal::mark_reachable(*txn, chunks_, s->id, live);
      if (!marked) {
        return std::unexpected(marked.error());
      }
    }
    for (const auto& id : live) {
      auto loc = chunks_.locate(*txn, id);
      if (!loc) {
        return std::unexpected(loc.error());
      }
      if (*loc) {
        p.stored_bytes += (*loc)->length;
        p.unique_plain_bytes += (*loc)->plain;
      }
    }
    auto q = internal::read_quota(*txn, tables_.quota, project);
    if (!q) {
      return std::unexpected(q.error());
    }
    p.quota = *q;
    all_live.merge(live);
    out.projects.push_back(std::move(p));
  }
  auto s = txn->scan(chunks_.table(), {}, [&](ByteView key, ByteView value) {
    ++out.chunks;
    const auto loc = decode_location(value);
    out.stored_bytes += loc ? loc->length : 0;
    out.plain_bytes += loc ? loc->plain : 0;
    ChunkId id{};
    std::memcpy(id.data(), key.data(), std::min(key.size(), id.size()));
    if (!all_live.contains(id)) {
      ++out.unreferenced_chunks;
    }
    return true;
  });
  if (!s) {
    return std::unexpected(s.error());
  }
  struct stat st{};
  if (::stat((dir_ + "/data.mdb").c_str(), &st) == 0) {
    out.index_file_bytes = static_cast<std::uint64_t>(st.st_blocks) * 512;
  }
  auto packs = internal::list_packs(dir_);
  if (!packs) {
    return std::unexpected(packs.error());
  }
  for (const auto& p : *packs) {
    ++out.pack_files;
    out.pack_bytes += p.size;
    out.pack_file_bytes += p.allocated;
  }
  out.cache_file_bytes = cache_file_bytes(dir_);
  out.file_bytes = out.index_file_bytes + out.cache_file_bytes + out.pack_file_bytes;
  return out;
}

Result<VerifyReport> SnapshotStore::verify(const std::vector<SnapshotInfo>& snapshots) {
  auto txn = Txn::begin_read(*env_);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  VerifyReport report;
  // Result per chunk, so a chunk shared by many files is checked once.
  std::unordered_map<ChunkId, std::string, ChunkIdHash> checked;
  auto check = [&](const ChunkId& id) -> const std::string& {
    auto it = checked.find(id);
    if (it != checked.end()) {
      return it->second;
    }
    std::string problem;
    auto plain = chunks_.get(*txn, id);
    if (!plain) {
      problem = plain.error().code == Code::kNotFound ? "missing" : "corrupt: " + plain.error().message;
    } else {
      ++report.chunks_checked;
      const std::uint64_t before = report.bytes_checked;
      report.bytes_checked += plain->size();
      if (report.bytes_checked / (16u << 20) != before / (16u << 20)) {
        env_->release_mapped_pages();
      }
    }
    return checked.emplace(id, std::move(problem)).first->second;
  };
  for (const auto& snap : snapshots) {
    VerifyReport::PerSnapshot per{.snapshot = snap, .damage = {}};
    auto commit = load_commit(*txn, chunks_, snap.id);
    if (!commit) {
      per.damage.push_back(Damage{.path = "", .chunk = snap.id,
                                  .problem = commit.error().code == Code::kNotFound ? "missing" : "corrupt: " + commit.error().message});
      report.snapshots.push_back(std::move(per));
      continue;
    }
    ++report.chunks_checked;
    per.snapshot.commit = *commit;
    internal::WalkVisitor v;
    v.entry = [&](const std::string& path, const TreeEntry& e) {
      if (e.kind != EntryKind::kFile) {
        return;
      }
      for (const auto& id : e.chunks) {
        const std::string& problem = check(id);
        if (!problem.empty()) {
          per.damage.push_back(Damage{.path = path, .chunk = id, .problem = problem});
        }
      }
    };
    v.tree_error = [&](const std::string& dir, const ChunkId& id, const Error& e) {
      per.damage.push_back(Damage{.path = dir.empty() ? "/" : dir + "/", .chunk = id,
                                  .problem = e.code == Code::kNotFound ? "missing (directory listing)" : "corrupt: " + e.message});
    };
    auto walked = internal::walk_tree(*txn, chunks_, commit->tree, v);
    if (!walked) {
      return std::unexpected(walked.error());
    }
    report.chunks_checked += 0;
    report.snapshots.push_back(std::move(per));
  }
  return report;
}

namespace {

// Compares two sorted directory listings; recurses through a stack.
struct DiffWalker {
  Txn& txn;
  ChunkStore& chunks;
  std::vector<DiffEntry>& out;

  // Lists every path under a tree with the given change mark.
  Status all_under(const std::string& dir, const ChunkId& tree, char mark) {
    internal::WalkVisitor v;
    v.entry = [&](const std::string& path, const TreeEntry& e) {
      out.push_back(DiffEntry{mark, join(dir, path) + (e.kind == EntryKind::kDir ? "/" : "")});
    };
    return internal::walk_tree(txn, chunks, tree, v);
  }
  static std::string join(const std::string& dir, const std::string& name) { return internal::join_path(dir, name); }

  Status run(const ChunkId& a_root, const ChunkId& b_root) {
    std::vector<std::tuple<std::string, ChunkId, ChunkId>> stack{{std::string(), a_root, b_root}};
    while (!stack.empty()) {
      auto [dir, ta, tb] = std::move(stack.back());
      stack.pop_back();
      if (ta == tb) {
        continue;  // Identical subtrees: the Merkle property makes diff proportional to the change.
      }
      auto a = internal::load_tree(txn, chunks, ta);
      auto b = internal::load_tree(txn, chunks, tb);
      if (!a || !b) {
        return std::unexpected(!a ? a.error() : b.error());
      }
      std::size_t i = 0;
      std::size_t j = 0;
      std::vector<std::tuple<std::string, ChunkId, ChunkId>> sub;
      while (i < a->size() || j < b->size()) {
        const TreeEntry* ea = i < a->size() ? &(*a)[i] : nullptr;
        const TreeEntry* eb = j < b->size() ? &(*b)[j] : nullptr;
        if (eb == nullptr || (ea != nullptr && ea->name < eb->name)) {
          SHOAL_TRY_STATUS(removed_or_added(dir, *ea, '-'));
          ++i;
        } else if (ea == nullptr || eb->name < ea->name) {
          SHOAL_TRY_STATUS(removed_or_added(dir, *eb, '+'));
          ++j;
        } else {
          const std::string path = join(dir, ea->name);
          if (ea->kind != eb->kind) {
            SHOAL_TRY_STATUS(removed_or_added(dir, *ea, '-'));
            SHOAL_TRY_STATUS(removed_or_added(dir, *eb, '+'));
          } else if (ea->kind == EntryKind::kDir) {
            if (ea->mode != eb->mode || ea->mtime_ns != eb->mtime_ns) {
              out.push_back(DiffEntry{'m', path + "/"});
            }
            sub.emplace_back(path, ea->tree, eb->tree);
          } else if (ea->chunks != eb->chunks || ea->target != eb->target || ea->size != eb->size) {
            out.push_back(DiffEntry{'M', path});
          } else if (ea->mode != eb->mode || ea->mtime_ns != eb->mtime_ns) {
            out.push_back(DiffEntry{'m', path});
          }
          ++i;
          ++j;
        }
      }
      stack.insert(stack.end(), sub.rbegin(), sub.rend());
    }
    return {};
  }

  Status removed_or_added(const std::string& dir, const TreeEntry& e, char mark) {
    const std::string path = join(dir, e.name);
    if (e.kind != EntryKind::kDir) {
      out.push_back(DiffEntry{mark, path});
      return {};
    }
    out.push_back(DiffEntry{mark, path + "/"});
    return all_under(path, e.tree, mark);
  }
};

}  // namespace

Result<std::vector<DiffEntry>> SnapshotStore::diff(const SnapshotInfo& a, const SnapshotInfo& b) {
  auto txn = Txn::begin_read(*env_);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  auto ca = load_commit(*txn, chunks_, a.id);
  auto cb = load_commit(*txn, chunks_, b.id);
  if (!ca || !cb) {
    return std::unexpected(!ca ? ca.error() : cb.error());
  }
  std::vector<DiffEntry> out;
  DiffWalker walker{*txn, chunks_, out};
  SHOAL_TRY_STATUS(walker.run(ca->tree, cb->tree));
  return out;
}

Result<std::vector<ChunkId>> SnapshotStore::lacking(const ChunkId& snapshot_id) {
  auto txn = Txn::begin_read(*env_);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  std::vector<ChunkId> out;
  auto commit = load_commit(*txn, chunks_, snapshot_id);
  if (!commit) {
    if (commit.error().code == Code::kNotFound) {
      return std::vector<ChunkId>{snapshot_id};
    }
    return std::unexpected(commit.error());
  }
  ChunkIdSet seen;
  auto add_if_missing = [&](const ChunkId& id) -> Status {
    if (!seen.insert(id).second) {
      return {};
    }
    auto has = chunks_.contains(*txn, id);
    if (!has) {
      return std::unexpected(has.error());
    }
    if (!*has) {
      out.push_back(id);
    }
    return {};
  };
  Status failed = {};
  internal::WalkVisitor v;
  v.entry = [&](const std::string&, const TreeEntry& e) {
    if (e.kind == EntryKind::kFile) {
      for (const auto& id : e.chunks) {
        if (auto s = add_if_missing(id); !s && failed) {
          failed = s;
        }
      }
    }
  };
  v.tree_error = [&](const std::string&, const ChunkId& id, const Error& e) {
    if (e.code == Code::kNotFound) {
      out.push_back(id);  // What lies below is unknown until it arrives.
    } else if (failed) {
      failed = std::unexpected(e);
    }
  };
  SHOAL_TRY_STATUS(internal::walk_tree(*txn, chunks_, commit->tree, v));
  SHOAL_TRY_STATUS(failed);
  return out;
}

Result<std::optional<Bytes>> SnapshotStore::get_raw_chunk(const ChunkId& id) {
  auto txn = Txn::begin_read(*env_);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  return chunks_.get_raw(*txn, id);
}

Result<bool> SnapshotStore::put_raw_chunk(const ChunkId& id, ByteView stored) {
  if (auto plain = decode_chunk(stored, id); !plain) {
    return std::unexpected(plain.error());
  }
  {
    auto txn = Txn::begin_read(*env_);
    if (!txn) {
      return std::unexpected(txn.error());
    }
    auto has = chunks_.contains(*txn, id);
    if (!has || *has) {
      return has ? Result<bool>(false) : std::unexpected(has.error());
    }
  }
  // A pack writer must hold the gc fence (gc deletes unlocked, unindexed
  // packs only while it holds the lock exclusively); the caller's fence, if
  // any, is another open file description, so this does not wait for it.
  auto fence = hold_gc();
  if (!fence) {
    return std::unexpected(fence.error());
  }
  ChunkWriter writer(chunks_);
  SHOAL_TRY_STATUS(writer.add(id, stored));
  SHOAL_TRY_STATUS(writer.sync());
  auto txn = Txn::begin_write(*env_);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  auto added = writer.index_into(*txn);
  if (!added) {
    return std::unexpected(added.error());
  }
  SHOAL_TRY_STATUS(txn->commit());
  return added->chunks_new > 0;
}

Result<SnapshotInfo> SnapshotStore::commit_received(const ChunkId& snapshot_id) {
  auto missing = lacking(snapshot_id);
  if (!missing) {
    return std::unexpected(missing.error());
  }
  if (!missing->empty()) {
    return make_error(Code::kFailedPrecondition, std::to_string(missing->size()) + " chunks of snapshot " +
                                                     to_hex(snapshot_id).substr(0, 12) + " are still missing");
  }
  auto txn = Txn::begin_write(*env_);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  auto commit = load_commit(*txn, chunks_, snapshot_id);
  if (!commit) {
    return std::unexpected(commit.error());
  }
  SHOAL_TRY_STATUS(validate_project(commit->project));
  const Bytes key = catalog_key(commit->project, commit->time_ns, snapshot_id);
  SHOAL_TRY_STATUS(txn->put(tables_.catalog, key, {}));
  SHOAL_TRY_STATUS(txn->put(tables_.by_id, snapshot_id, key));
  SHOAL_TRY_STATUS(txn->commit());
  return SnapshotInfo{.id = snapshot_id, .commit = *commit};
}

}  // namespace shoal::storage
