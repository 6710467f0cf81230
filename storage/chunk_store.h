#pragma once
// storage/chunk_store.h: content-addressed chunks in one LMDB table. Owns the
// stored chunk format (codec byte, plaintext length, payload) and the table
// "snap.chunks" (id -> stored bytes). Does not decide what is referenced
// (snapshot_store.h does) and never deletes on its own.
//
// Chunk id = BLAKE2b-256 of the plaintext. Data is zstd-compressed when that
// saves at least 1/32 of it, otherwise stored raw. Every read re-hashes the
// plaintext, so damaged bytes surface as Code::kCorruption, never as data.
//
// Threading: encode_chunk/decode_chunk are pure and thread-safe. ChunkStore
// methods take the caller's Txn and follow LMDB's rules (lmdb.h).
//
// For the transfer layer: get_raw() hands out the stored (compressed) bytes of
// a chunk, put_raw() stores bytes received from a peer after checking that
// they decode to the claimed id; missing() answers "which of these do I lack".

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

  static Result<ChunkStore> open(Env& env);

  // Stores an already-encoded chunk unless present. Returns true if it was new.
  // REQUIRES: stored == encode_chunk(plaintext with this id, ...) (not re-checked).
  Result<bool> put_encoded(Txn& write_txn, const ChunkId& id, ByteView stored);
  // Verifies that `stored` decodes to `id` before storing it (peer input).
  // Corruption if not. Returns true if it was new.
  Result<bool> put_raw(Txn& write_txn, const ChunkId& id, ByteView stored);
  // Plaintext; NotFound if absent, Corruption if damaged.
  Result<Bytes> get(Txn& txn, const ChunkId& id);
  // Stored bytes, unverified (the receiver verifies). nullopt if absent.
  Result<std::optional<Bytes>> get_raw(Txn& txn, const ChunkId& id);
  Result<bool> contains(Txn& txn, const ChunkId& id);
  // Stored size in bytes, nullopt if absent. Does not copy the value.
  Result<std::optional<std::size_t>> stored_size(Txn& txn, const ChunkId& id);
  // The ids among `ids` that are not stored, in input order, without duplicates.
  Result<std::vector<ChunkId>> missing(Txn& txn, std::span<const ChunkId> ids);
  Result<bool> remove(Txn& write_txn, const ChunkId& id);

  MDB_dbi table() const { return table_; }

 private:
  explicit ChunkStore(MDB_dbi table) : table_(table) {}
  MDB_dbi table_;
};

}  // namespace shoal::storage
