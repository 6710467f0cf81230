#include "storage/chunk_store.h"

#include <zstd.h>

#include <algorithm>
#include <cstring>

#include "base/assert.h"

namespace shoal::storage {
namespace {

constexpr std::size_t kReleaseMapEveryPuts = 64;

MDB_val key_of(const ChunkId& id) { return MDB_val{id.size(), const_cast<std::uint8_t*>(id.data())}; }

void put_u32_le(std::uint8_t* out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) {
    out[i] = static_cast<std::uint8_t>(v >> (8 * i));
  }
}
std::uint32_t get_u32_le(const std::uint8_t* in) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    v |= static_cast<std::uint32_t>(in[i]) << (8 * i);
  }
  return v;
}

// One compression context per thread: creating one costs more than
// compressing a small chunk.
ZSTD_CCtx* thread_cctx() {
  thread_local std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> ctx(ZSTD_createCCtx(), &ZSTD_freeCCtx);
  SHOAL_ASSERT(ctx != nullptr);
  return ctx.get();
}
ZSTD_DCtx* thread_dctx() {
  thread_local std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> ctx(ZSTD_createDCtx(), &ZSTD_freeDCtx);
  SHOAL_ASSERT(ctx != nullptr);
  return ctx.get();
}

}  // namespace

Bytes encode_chunk(ByteView plaintext, int zstd_level) {
  SHOAL_ASSERT(plaintext.size() <= kStoredChunkPlainMax);
  const auto plain_size = static_cast<std::uint32_t>(plaintext.size());
  Bytes out;
  if (zstd_level > 0 && plaintext.size() >= 64) {
    out.resize(kChunkHeaderBytes + ZSTD_compressBound(plaintext.size()));
    const std::size_t n = ZSTD_compressCCtx(thread_cctx(), out.data() + kChunkHeaderBytes,
                                            out.size() - kChunkHeaderBytes, plaintext.data(),
                                            plaintext.size(), zstd_level);
    SHOAL_ASSERT(!ZSTD_isError(n));  // The bound is sufficient by contract.
    // Why 1/32: below that, decompressing on every read costs more than the
    // bytes saved are worth.
    if (n + plaintext.size() / 32 < plaintext.size()) {
      out.resize(kChunkHeaderBytes + n);
      out[0] = static_cast<std::uint8_t>(ChunkCodec::kZstd);
      put_u32_le(out.data() + 1, plain_size);
      return out;
    }
  }
  out.resize(kChunkHeaderBytes + plaintext.size());
  out[0] = static_cast<std::uint8_t>(ChunkCodec::kRaw);
  put_u32_le(out.data() + 1, plain_size);
  if (!plaintext.empty()) {
    std::memcpy(out.data() + kChunkHeaderBytes, plaintext.data(), plaintext.size());
  }
  return out;
}

std::uint32_t stored_plain_size(ByteView stored) {
  return stored.size() < kChunkHeaderBytes ? 0 : get_u32_le(stored.data() + 1);
}

Result<Bytes> decode_chunk(ByteView stored, const ChunkId& expected) {
  const std::string which = "chunk " + to_hex(expected).substr(0, 16);
  if (stored.size() < kChunkHeaderBytes) {
    return make_error(Code::kCorruption, which + ": stored value truncated to " + std::to_string(stored.size()) + " bytes");
  }
  const std::uint32_t plain_size = get_u32_le(stored.data() + 1);
  if (plain_size > kStoredChunkPlainMax) {
    return make_error(Code::kCorruption, which + ": implausible length " + std::to_string(plain_size));
  }
  const ByteView payload = stored.subspan(kChunkHeaderBytes);
  Bytes plain;
  switch (static_cast<ChunkCodec>(stored[0])) {
    case ChunkCodec::kRaw:
      if (payload.size() != plain_size) {
        return make_error(Code::kCorruption, which + ": raw payload has " + std::to_string(payload.size()) +
                                                 " bytes, header says " + std::to_string(plain_size));
      }
      plain.assign(payload.begin(), payload.end());
      break;
    case ChunkCodec::kZstd: {
      plain.resize(plain_size);
      const std::size_t n = ZSTD_decompressDCtx(thread_dctx(), plain.data(), plain.size(), payload.data(), payload.size());
      if (ZSTD_isError(n) || n != plain_size) {
        return make_error(Code::kCorruption, which + ": zstd payload does not decode (" +
                                                 (ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong length") + ")");
      }
      break;
    }
    default:
      return make_error(Code::kCorruption, which + ": unknown codec byte " + std::to_string(stored[0]));
  }
  if (chunk_id_of(plain) != expected) {
    return make_error(Code::kCorruption, which + ": content does not match its hash");
  }
  return plain;
}

Result<ChunkStore> ChunkStore::open(Env& env, const std::string& store_dir) {
  auto table = env.table(kTable);
  if (!table) {
    return std::unexpected(table.error());
  }
  return ChunkStore(env, *table, store_dir);
}

Result<std::optional<ChunkLocation>> ChunkStore::locate(Txn& txn, const ChunkId& id) {
  MDB_val k = key_of(id);
  MDB_val v{};
  const int rc = mdb_get(txn.raw(), table_, &k, &v);
  if (rc == MDB_NOTFOUND) {
    return std::optional<ChunkLocation>();
  }
  if (rc != 0) {
    return std::unexpected(from_mdb(rc, "look up chunk"));
  }
  auto loc = decode_location(ByteView(static_cast<const std::uint8_t*>(v.mv_data), v.mv_size));
  if (!loc) {
    return make_error(Code::kCorruption, "chunk " + to_hex(id).substr(0, 16) + ": index entry of " +
                                             std::to_string(v.mv_size) + " bytes is malformed");
  }
  return std::optional<ChunkLocation>(*loc);
}

Result<bool> ChunkStore::put_located(Txn& write_txn, const ChunkId& id, const ChunkLocation& loc) {
  const Bytes value = encode_location(loc);
  MDB_val k = key_of(id);
  MDB_val v{value.size(), const_cast<std::uint8_t*>(value.data())};
  const int rc = mdb_put(write_txn.raw(), table_, &k, &v, MDB_NOOVERWRITE);
  if (rc == MDB_KEYEXIST) {
    return false;
  }
  if (rc != 0) {
    return std::unexpected(from_mdb(rc, "index chunk"));
  }
  return true;
}

Result<bool> ChunkStore::relocate(Txn& write_txn, const ChunkId& id, const ChunkLocation& from, const ChunkLocation& to) {
  auto now = locate(write_txn, id);
  if (!now) {
    return std::unexpected(now.error());
  }
  if (!*now || **now != from) {
    return false;
  }
  SHOAL_TRY_STATUS(write_txn.put(table_, id, encode_location(to)));
  return true;
}

Result<std::optional<Bytes>> ChunkStore::read_stored(Txn& txn, const ChunkId& id) {
  auto loc = locate(txn, id);
  if (!loc) {
    return std::unexpected(loc.error());
  }
  if (!*loc) {
    return std::optional<Bytes>();
  }
  auto bytes = reader_->read(**loc);
  if (bytes && bytes->size() >= kChunkHeaderBytes && stored_plain_size(*bytes) == (*loc)->plain) {
    return std::optional<Bytes>(std::move(*bytes));
  }
  if (txn.read_only()) {
    // gc may have re-pointed the entry and deleted (or hole-punched) the old
    // pack after `txn` began; what the store holds now is what counts.
    auto fresh = Txn::begin_read(*env_);
    if (fresh) {
      auto again = locate(*fresh, id);
      if (again && *again != *loc) {
        reader_->forget((*loc)->pack);
        if (!*again) {
          return std::optional<Bytes>();
        }
        auto retry = reader_->read(**again);
        if (!retry) {
          return std::unexpected(retry.error());
        }
        return std::optional<Bytes>(std::move(*retry));
      }
    }
  }
  if (!bytes) {
    return std::unexpected(Error{bytes.error().code, "chunk " + to_hex(id).substr(0, 16) + ": " + bytes.error().message});
  }
  return std::optional<Bytes>(std::move(*bytes));  // Damaged; decode_chunk says how.
}

Result<std::optional<Bytes>> ChunkStore::get_raw(Txn& txn, const ChunkId& id) { return read_stored(txn, id); }

Result<Bytes> ChunkStore::get(Txn& txn, const ChunkId& id) {
  auto stored = read_stored(txn, id);
  if (!stored) {
    return std::unexpected(stored.error());
  }
  if (!*stored) {
    return make_error(Code::kNotFound, "chunk " + to_hex(id).substr(0, 16) + " is missing");
  }
  return decode_chunk(**stored, id);
}

Result<std::optional<std::size_t>> ChunkStore::stored_size(Txn& txn, const ChunkId& id) {
  auto loc = locate(txn, id);
  if (!loc) {
    return std::unexpected(loc.error());
  }
  return *loc ? std::optional<std::size_t>((*loc)->length) : std::optional<std::size_t>();
}

Result<bool> ChunkStore::contains(Txn& txn, const ChunkId& id) {
  MDB_val k = key_of(id);
  MDB_val v{};
  const int rc = mdb_get(txn.raw(), table_, &k, &v);
  if (rc == MDB_NOTFOUND) {
    return false;
  }
  if (rc != 0) {
    return std::unexpected(from_mdb(rc, "look up chunk"));
  }
  return true;
}

Result<std::vector<ChunkId>> ChunkStore::missing(Txn& txn, std::span<const ChunkId> ids) {
  std::vector<ChunkId> out;
  ChunkIdSet seen;
  for (const auto& id : ids) {
    if (!seen.insert(id).second) {
      continue;
    }
    auto has = contains(txn, id);
    if (!has) {
      return std::unexpected(has.error());
    }
    if (!*has) {
      out.push_back(id);
    }
  }
  return out;
}

Result<bool> ChunkStore::remove(Txn& write_txn, const ChunkId& id) { return write_txn.del(table_, id); }

Status ChunkWriter::add(const ChunkId& id, ByteView stored) {
  SHOAL_ASSERT(stored.size() >= kChunkHeaderBytes);
  auto loc = packs_.append(stored, stored_plain_size(stored));
  if (!loc) {
    return std::unexpected(loc.error());
  }
  pending_.emplace_back(id, *loc);
  return {};
}

Status ChunkWriter::sync() { return packs_.sync(); }

Result<ChunkWriter::Indexed> ChunkWriter::index_into(Txn& write_txn) {
  SHOAL_ASSERT(!packs_.dirty());  // sync() first: never index bytes a crash could lose.
  Indexed out;
  // In key order: each index leaf is visited once, and in file order. (Equal
  // ids keep their order, so the first copy added is the one indexed.)
  std::stable_sort(pending_.begin(), pending_.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::size_t puts = 0;
  for (const auto& [id, loc] : pending_) {
    auto added = chunks_->put_located(write_txn, id, loc);
    if (!added) {
      return std::unexpected(added.error());
    }
    // A put faults in its leaf and, by the kernel's fault-around, up to 64 KiB
    // around it: without this, a batch maps nearly the whole index into RSS.
    if (++puts % kReleaseMapEveryPuts == 0) {
      chunks_->release_mapped_pages();
    }
    if (*added) {
      ++out.chunks_new;
      out.bytes_new += loc.length;
    }
  }
  pending_.clear();
  return out;
}

}  // namespace shoal::storage
