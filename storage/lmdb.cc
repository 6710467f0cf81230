#include "storage/lmdb.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdio>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/assert.h"

namespace shoal::storage {
namespace {

MDB_val to_val(ByteView bytes) {
  return MDB_val{bytes.size(), const_cast<std::uint8_t*>(bytes.data())};
}
ByteView from_val(const MDB_val& v) { return ByteView(static_cast<const std::uint8_t*>(v.mv_data), v.mv_size); }

}  // namespace

Error from_mdb(int rc, std::string_view what) {
  Code code = Code::kIOError;
  switch (rc) {
    case MDB_NOTFOUND: code = Code::kNotFound; break;
    case MDB_MAP_FULL:
    case MDB_DBS_FULL:
    case MDB_READERS_FULL:
    case MDB_TXN_FULL:
    case ENOSPC:
    case EDQUOT:
    case EFBIG: code = Code::kResourceExhausted; break;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH: code = Code::kCorruption; break;
    case EACCES:
    case EROFS: code = Code::kPermissionDenied; break;
    case MDB_KEYEXIST: code = Code::kAlreadyExists; break;
    default: break;
  }
  return Error{code, std::string(what) + ": " + mdb_strerror(rc)};
}

Result<std::unique_ptr<Env>> Env::open(const std::string& path, const EnvOptions& options) {
  if (!options.read_only && ::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return make_error(errno == EACCES ? Code::kPermissionDenied : Code::kIOError,
                      "cannot create directory " + path + ": " + std::strerror(errno));
  }
  MDB_env* env = nullptr;
  int rc = mdb_env_create(&env);
  if (rc != 0) {
    return std::unexpected(from_mdb(rc, "mdb_env_create"));
  }
  mdb_env_set_mapsize(env, options.map_size_bytes);
  mdb_env_set_maxdbs(env, options.tables_max);
  mdb_env_set_maxreaders(env, 256);
  // MDB_NORDAHEAD: madvise(MADV_RANDOM) on the map. Reads are random B-tree
  // probes; read-ahead and fault-around would map neighbouring pages too and
  // inflate resident memory several times over.
  const unsigned flags = MDB_NOTLS | MDB_NORDAHEAD | (options.read_only ? MDB_RDONLY : 0u);
  rc = mdb_env_open(env, path.c_str(), flags, 0600);
  if (rc != 0) {
    mdb_env_close(env);
    return std::unexpected(from_mdb(rc, "cannot open LMDB environment in " + path));
  }
  auto out = std::unique_ptr<Env>(new Env(env, path));
  out->find_map();
  return out;
}

Env::~Env() { mdb_env_close(env_); }

void Env::find_map() {
  struct stat st{};
  if (::stat((path_ + "/data.mdb").c_str(), &st) != 0) {
    return;
  }
  std::FILE* maps = std::fopen("/proc/self/maps", "r");
  if (maps == nullptr) {
    return;
  }
  char line[4096];
  while (std::fgets(line, sizeof line, maps) != nullptr) {
    unsigned long start = 0;
    unsigned long end = 0;
    unsigned long inode = 0;
    unsigned dev_major = 0;
    unsigned dev_minor = 0;
    if (std::sscanf(line, "%lx-%lx %*s %*x %x:%x %lu", &start, &end, &dev_major, &dev_minor, &inode) == 5 &&
        inode == st.st_ino && makedev(dev_major, dev_minor) == st.st_dev && end - start > map_bytes_) {
      map_addr_ = reinterpret_cast<void*>(start);
      map_bytes_ = end - start;
    }
  }
  std::fclose(maps);
}

void Env::release_mapped_pages() {
  if (map_addr_ == nullptr) {
    return;
  }
  // Only the used part of the (mostly reserved) map can hold pages.
  MDB_envinfo info{};
  std::size_t bytes = map_bytes_;
  if (mdb_env_info(env_, &info) == 0) {
    bytes = std::min(bytes, (static_cast<std::size_t>(info.me_last_pgno) + 1) * static_cast<std::size_t>(::getpagesize()));
  }
  ::madvise(map_addr_, bytes, MADV_DONTNEED);
}

Result<MDB_dbi> Env::table(const std::string& name) {
  auto txn = Txn::begin_write(*this);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  MDB_dbi dbi = 0;
  const int rc = mdb_dbi_open(txn->raw(), name.c_str(), MDB_CREATE, &dbi);
  if (rc != 0) {
    return std::unexpected(from_mdb(rc, "open table " + name));
  }
  if (auto s = txn->commit(); !s) {
    return std::unexpected(s.error());
  }
  return dbi;
}

Result<Txn> Txn::begin_read(Env& env) {
  MDB_txn* txn = nullptr;
  const int rc = mdb_txn_begin(env.raw(), nullptr, MDB_RDONLY, &txn);
  if (rc != 0) {
    return std::unexpected(from_mdb(rc, "begin read transaction"));
  }
  return Txn(txn, true);
}

Result<Txn> Txn::begin_write(Env& env) {
  MDB_txn* txn = nullptr;
  const int rc = mdb_txn_begin(env.raw(), nullptr, 0, &txn);
  if (rc != 0) {
    return std::unexpected(from_mdb(rc, "begin write transaction"));
  }
  return Txn(txn, false);
}

Txn::~Txn() { abort(); }

Result<std::optional<Bytes>> Txn::get(MDB_dbi table, ByteView key) {
  SHOAL_ASSERT(txn_ != nullptr);
  MDB_val k = to_val(key);
  MDB_val v{};
  const int rc = mdb_get(txn_, table, &k, &v);
  if (rc == MDB_NOTFOUND) {
    return std::optional<Bytes>();
  }
  if (rc != 0) {
    return std::unexpected(from_mdb(rc, "get"));
  }
  const ByteView value = from_val(v);
  return std::optional<Bytes>(Bytes(value.begin(), value.end()));
}

Status Txn::put(MDB_dbi table, ByteView key, ByteView value) {
  SHOAL_ASSERT(txn_ != nullptr);
  MDB_val k = to_val(key);
  MDB_val v = to_val(value);
  const int rc = mdb_put(txn_, table, &k, &v, 0);
  if (rc != 0) {
    return std::unexpected(from_mdb(rc, "put"));
  }
  return {};
}

Result<bool> Txn::del(MDB_dbi table, ByteView key) {
  SHOAL_ASSERT(txn_ != nullptr);
  MDB_val k = to_val(key);
  const int rc = mdb_del(txn_, table, &k, nullptr);
  if (rc == MDB_NOTFOUND) {
    return false;
  }
  if (rc != 0) {
    return std::unexpected(from_mdb(rc, "del"));
  }
  return true;
}

Status Txn::scan(MDB_dbi table, ByteView start, const std::function<bool(ByteView, ByteView)>& visit) {
  SHOAL_ASSERT(txn_ != nullptr);
  MDB_cursor* cursor = nullptr;
  int rc = mdb_cursor_open(txn_, table, &cursor);
  if (rc != 0) {
    return std::unexpected(from_mdb(rc, "cursor open"));
  }
  MDB_val k = to_val(start);
  MDB_val v{};
  rc = start.empty() ? mdb_cursor_get(cursor, &k, &v, MDB_FIRST) : mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE);
  while (rc == 0) {
    if (!visit(from_val(k), from_val(v))) {
      break;
    }
    rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cursor);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    return std::unexpected(from_mdb(rc, "cursor scan"));
  }
  return {};
}

Status Txn::commit() {
  SHOAL_ASSERT(txn_ != nullptr);
  const int rc = mdb_txn_commit(txn_);
  txn_ = nullptr;  // mdb_txn_commit frees the handle even on failure.
  if (rc != 0) {
    return std::unexpected(from_mdb(rc, "commit"));
  }
  return {};
}

void Txn::abort() {
  if (txn_ != nullptr) {
    mdb_txn_abort(txn_);
    txn_ = nullptr;
  }
}

}  // namespace shoal::storage
