#pragma once
// storage/chunk_store.h: content-addressed chunks: their bytes in append-only
// pack files (pack_file.h), their index in one LMDB table. Owns the stored
// chunk format (codec byte, plaintext length, payload), the table
// "snap.chunks" (id -> ChunkLocation) and ChunkWriter, the one way chunks get
// in: append to the writer's own pack, sync it, then index in an LMDB write
// transaction. Does not decide what is referenced (snapshot_store.h does) and
// never deletes on its own (gc does, pack_gc.cc).
//
// Chunk id = BLAKE2b-256 of the plaintext. Data is zstd-compressed when that
// saves at least 1/32 of it, otherwise stored raw. Every read re-hashes the
// plaintext, so damaged bytes surface as Code::kCorruption, never as data.
//
// Threading: encode_chunk/decode_chunk are pure and thread-safe. ChunkStore
// methods take the caller's Txn and follow LMDB's rules (lmdb.h); reading
// pack files is thread-safe. A ChunkWriter belongs to one thread.
//
// For the transfer layer: get_raw() hands out the stored (compressed) bytes of
// a chunk; missing() answers "which of these do I lack"; bytes received from a
// peer are checked with decode_chunk() and then go in through a ChunkWriter.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "base/bytes.h"
#include "base/crypto.h"
#include "base/result.h"
#include "storage/lmdb.h"
#include "storage/pack_file.h"

namespace shoal::storage {

using ChunkId = Hash256;

struct ChunkIdHash {
  std::size_t operator()(const ChunkId& id) const noexcept {
    std::size_t h = 0;
    static_assert(sizeof(h) <= kHashBytes);
    __builtin_memcpy(&h, id.data(), sizeof(h));  // Ids are uniform: any 8 bytes hash well.
    return h;
  }
};
using ChunkIdSet = std::unordered_set<ChunkId, ChunkIdHash>;

inline ChunkId chunk_id_of(ByteView plaintext) { return blake2b_256(plaintext); }

enum class ChunkCodec : std::uint8_t { kRaw = 0, kZstd = 1 };

inline constexpr std::size_t kChunkHeaderBytes = 5;  // codec(1) + plaintext length (4, LE).
// Manifests may be larger than data chunks (a directory of 100,000 files).
inline constexpr std::size_t kStoredChunkPlainMax = 256u << 20;
inline constexpr int kDefaultZstdLevel = 3;

// Stored form of a plaintext chunk. level <= 0 stores raw.
Bytes encode_chunk(ByteView plaintext, int zstd_level);
// Plaintext of a stored chunk, checked against `expected`. Corruption when the
// header, the payload or the hash do not match.
Result<Bytes> decode_chunk(ByteView stored, const ChunkId& expected);
// Plaintext length recorded in a stored chunk's header (0 if malformed).
std::uint32_t stored_plain_size(ByteView stored);

class ChunkStore {
 public:
  static constexpr const char* kTable = "snap.chunks";

  // `store_dir` holds packs/ (the directory of the LMDB environment).
  static Result<ChunkStore> open(Env& env, const std::string& store_dir);

  // Where a chunk's bytes are; nullopt if it is not indexed.
  Result<std::optional<ChunkLocation>> locate(Txn& txn, const ChunkId& id);
  // Indexes a chunk whose bytes are durable at `loc` (PackWriter::sync has
  // returned). True if new; false if already indexed (the bytes at `loc` are
  // then garbage).
  Result<bool> put_located(Txn& write_txn, const ChunkId& id, const ChunkLocation& loc);
  // Re-points `id` from `from` to `to` if it still points at `from` (gc's copy
  // of a live chunk). True if it did.
  Result<bool> relocate(Txn& write_txn, const ChunkId& id, const ChunkLocation& from, const ChunkLocation& to);
  // Plaintext; NotFound if absent, Corruption if damaged (bytes, or a pack
  // file missing or truncated).
  Result<Bytes> get(Txn& txn, const ChunkId& id);
  // Stored bytes, unverified (the receiver verifies). nullopt if absent.
  Result<std::optional<Bytes>> get_raw(Txn& txn, const ChunkId& id);
  Result<bool> contains(Txn& txn, const ChunkId& id);
  // Stored size in bytes, nullopt if absent. Reads only the index.
  Result<std::optional<std::size_t>> stored_size(Txn& txn, const ChunkId& id);
  // The ids among `ids` that are not stored, in input order, without duplicates.
  Result<std::vector<ChunkId>> missing(Txn& txn, std::span<const ChunkId> ids);
  // Drops the index entry; the bytes become garbage for gc to reclaim.
  Result<bool> remove(Txn& write_txn, const ChunkId& id);

  MDB_dbi table() const { return table_; }
  const std::string& dir() const { return dir_; }
  // Drops this process's mappings of the index's pages (Env::release_mapped_pages).
  void release_mapped_pages() { env_->release_mapped_pages(); }
  PackReader& packs() { return *reader_; }

 private:
  ChunkStore(Env& env, MDB_dbi table, std::string dir)
      : env_(&env), table_(table), dir_(std::move(dir)), reader_(std::make_shared<PackReader>(dir_)) {}
  // Reads the stored bytes at the entry `txn` sees; if that fails in a read
  // transaction, looks again in a fresh one (a gc may have moved the chunk to
  // another pack and deleted the old one since `txn` began).
  Result<std::optional<Bytes>> read_stored(Txn& txn, const ChunkId& id);

  Env* env_;
  MDB_dbi table_;
  std::string dir_;
  std::shared_ptr<PackReader> reader_;  // Shared by copies: one descriptor cache per store.
};

// One writer's way into the store: chunks go into its own packs, and become
// present (visible to lookups, dedup and gc) only when index_into()'s
// transaction commits, after sync(). Holders must hold the store's gc fence
// (snapshot_store.h) from the first add() until that commit.
class ChunkWriter {
 public:
  explicit ChunkWriter(ChunkStore& chunks) : chunks_(&chunks), packs_(chunks.dir()) {}

  // Appends the stored form (encode_chunk) of chunk `id`.
  Status add(const ChunkId& id, ByteView stored);
  std::size_t pending() const { return pending_.size(); }
  // Makes what add() wrote durable. Call before beginning index_into's
  // transaction, so the LMDB write lock is not held across the fsync.
  Status sync();
  struct Indexed {
    std::uint64_t chunks_new = 0;
    std::uint64_t bytes_new = 0;
  };
  // Puts the entries of everything added (and synced) since the last call.
  // Ids already indexed are left as they are.
  Result<Indexed> index_into(Txn& write_txn);

 private:
  ChunkStore* chunks_;
  PackWriter packs_;
  std::vector<std::pair<ChunkId, ChunkLocation>> pending_;
};

}  // namespace shoal::storage
