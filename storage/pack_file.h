#pragma once
// storage/pack_file.h: append-only pack files that hold the stored bytes of
// chunks. Owns the pack file format and naming, writing (PackWriter) and
// reading (PackReader), and the location record the chunk index keeps per
// chunk. Does not own the index (chunk_store.h) nor decide what is garbage
// (gc, pack_gc.cc).
//
// A pack is DIR/packs/<16 lowercase hex digits>.pack: the 8 bytes "shoalpk1",
// then stored chunks (chunk_store.h's format: codec, plaintext length,
// payload) back to back. The index (LMDB) maps chunk id -> ChunkLocation; a
// pack holds no ids of its own, so bytes no index entry points at are garbage.
//
// Rules that make packs crash- and multi-process safe:
//  - one writer per pack: a PackWriter creates its packs with a fresh random
//    name (O_EXCL) and holds flock(LOCK_EX) on each while it may append, so
//    two processes never append to the same file and gc can tell a pack being
//    written (locked) from the leftover of a dead writer (unlocked);
//  - sync() (write, fdatasync, and fsync of packs/ for new files) returns
//    before any index entry naming those bytes is committed, so a committed
//    entry never points at bytes a crash can lose;
//  - bytes written but never indexed (a crash, a lost race with another
//    writer of the same chunk) are garbage that gc reclaims;
//  - a pack's bytes never change once indexed: gc only deletes whole packs,
//    punches holes over unindexed ranges, or copies live chunks to a new pack
//    and re-points their entries before deleting the old one.
//
// Threading: a PackWriter belongs to one thread. PackReader is thread-safe.

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"

namespace shoal::storage {

struct ChunkLocation {
  std::uint64_t pack = 0;
  std::uint32_t offset = 0;  // Of the stored chunk in the pack file.
  std::uint32_t length = 0;  // Stored bytes.
  std::uint32_t plain = 0;   // Plaintext bytes (for stats without reading the pack).
  bool operator==(const ChunkLocation&) const = default;
};
// Index value: pack (8 B LE), offset, length, plain (4 B LE each).
inline constexpr std::size_t kLocationBytes = 20;
Bytes encode_location(const ChunkLocation& loc);
std::optional<ChunkLocation> decode_location(ByteView value);

inline constexpr std::string_view kPackMagic = "shoalpk1";
inline constexpr std::uint32_t kPackHeaderBytes = 8;
// A writer starts a new pack once its current one reaches this size. Big
// enough that an initial save makes few files, small enough that gc can copy
// the live part of a mostly-dead pack quickly.
inline constexpr std::uint64_t kPackBytesTarget = 64u << 20;

std::string packs_dir(const std::string& store_dir);
std::string pack_path(const std::string& store_dir, std::uint64_t pack);
// The pack id of a file name "<16 hex>.pack"; nullopt for anything else.
std::optional<std::uint64_t> parse_pack_name(std::string_view file_name);

class PackWriter {
 public:
  explicit PackWriter(std::string store_dir) : dir_(std::move(store_dir)) {}
  ~PackWriter();  // Closes (and unlocks) its packs; unsynced bytes are garbage.
  PackWriter(const PackWriter&) = delete;
  PackWriter& operator=(const PackWriter&) = delete;

  // Appends a stored chunk (creating or rolling the pack as needed). The
  // location may be indexed once sync() has returned.
  Result<ChunkLocation> append(ByteView stored, std::uint32_t plain);
  // Makes everything appended so far durable. After a failure the writer
  // refuses further work (its bytes are garbage).
  Status sync();
  bool dirty() const { return dirty_; }

 private:
  Status open_new_pack();
  Status flush_buffer();

  std::string dir_;
  int fd_ = -1;
  std::uint64_t pack_ = 0;
  std::uint64_t size_ = 0;       // Logical size of the current pack, buffer included.
  Bytes buffer_;                 // Bytes not yet written, ending at size_.
  std::vector<int> rolled_;      // Earlier packs of this writer not yet synced.
  bool new_file_ = false;        // A pack was created since the last sync: fsync packs/.
  bool dirty_ = false;
  std::optional<Error> failed_;
};

class PackReader {
 public:
  explicit PackReader(std::string store_dir) : dir_(std::move(store_dir)) {}
  // The stored bytes at `loc`. Corruption when the pack is missing or too
  // short (a truncated pack); IOError for other read errors.
  Result<Bytes> read(const ChunkLocation& loc);
  // Closes a cached descriptor (gc deleted or replaced that pack).
  void forget(std::uint64_t pack);

 private:
  struct Fd {
    int fd = -1;
    ~Fd();
  };
  Result<std::shared_ptr<Fd>> fd_of(std::uint64_t pack);

  std::string dir_;
  std::mutex mutex_;
  std::unordered_map<std::uint64_t, std::shared_ptr<Fd>> fds_;
};

}  // namespace shoal::storage
