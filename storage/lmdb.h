#pragma once
// storage/lmdb.h: thin RAII wrappers over LMDB. Owns the environment, named
// tables and transactions; converts mdb_* return codes to Error in one place
// (from_mdb). LMDB's caveats apply and are enforced where we can:
//  - one write transaction at a time per environment (LMDB serialises them);
//  - a transaction belongs to the thread that began it; keep read txns short;
//  - never use an environment across fork(); open one Env per process per path.
//  - values returned by get() are copied out, so they outlive the transaction.

#include <lmdb.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "base/bytes.h"
#include "base/result.h"

namespace shoal::storage {

Error from_mdb(int rc, std::string_view what);

struct EnvOptions {
  std::size_t map_size_bytes = std::size_t{64} << 30;  // Address space, not disk: sparse.
  unsigned tables_max = 32;
  bool read_only = false;
};

class Env {
 public:
  // Opens (creating if needed) the environment in directory `path`.
  static Result<std::unique_ptr<Env>> open(const std::string& path, const EnvOptions& options = {});
  ~Env();
  Env(const Env&) = delete;
  Env& operator=(const Env&) = delete;

  MDB_env* raw() const { return env_; }
  // Opens (creating if missing) a named table. Call before concurrent use.
  Result<MDB_dbi> table(const std::string& name);
  const std::string& path() const { return path_; }
  // Drops this process's page-table entries for the memory-mapped data file
  // (madvise MADV_DONTNEED on the read-only shared map). The pages stay in
  // the kernel page cache and fault back in on the next read, so this only
  // keeps resident memory flat during long scans; data stays valid because
  // the file itself is unchanged. Safe to call from any thread at any time.
  void release_mapped_pages();

 private:
  Env(MDB_env* env, std::string path) : env_(env), path_(std::move(path)) {}
  void find_map();  // Locates the data file's mapping (LMDB does not expose it).
  MDB_env* env_;
  std::string path_;
  void* map_addr_ = nullptr;
  std::size_t map_bytes_ = 0;
};

class Txn {
 public:
  static Result<Txn> begin_read(Env& env);
  static Result<Txn> begin_write(Env& env);
  Txn(Txn&& other) noexcept : txn_(other.txn_), read_only_(other.read_only_) { other.txn_ = nullptr; }
  Txn& operator=(Txn&&) = delete;
  ~Txn();  // Aborts if neither committed nor aborted.

  // NotFound is a value (nullopt), not an error.
  Result<std::optional<Bytes>> get(MDB_dbi table, ByteView key);
  Status put(MDB_dbi table, ByteView key, ByteView value);
  // Returns true if the key existed.
  Result<bool> del(MDB_dbi table, ByteView key);
  // Visits keys >= start in order until visit returns false.
  Status scan(MDB_dbi table, ByteView start, const std::function<bool(ByteView key, ByteView value)>& visit);
  Status commit();
  void abort();
  MDB_txn* raw() const { return txn_; }
  bool read_only() const { return read_only_; }

 private:
  Txn(MDB_txn* txn, bool read_only) : txn_(txn), read_only_(read_only) {}
  MDB_txn* txn_;
  bool read_only_;
};

}  // namespace shoal::storage
