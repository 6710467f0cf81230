#pragma once
// storage/file_cache.h: the per-project file cache, one file per project
// outside LMDB: DIR/caches/<project>.cache. A save reads the previous cache
// as a stream while it walks the tree and writes the next one as a stream to
// DIR/caches/<project>.cache.tmp, which it renames over the old file after
// its snapshot is committed (fdatasync, rename, fsync of caches/). Memory is
// one 64 KiB block each way, whatever the number of files.
//
// Format: "shoalfc1", the base snapshot id (32 B), BLAKE2b-256 of those 40
// bytes; then blocks: body length (4 B LE), body, BLAKE2b-256 of the body.
// A body is records back to back: varint bytes shared with the previous
// path of the block, varint suffix length, suffix, varint size, mtime_ns
// (8 B LE), varint inode, ctime_ns (8 B LE), varint chunk count, chunk ids.
// Records are in walk order (compare_walk_order). A block whose hash does not
// match, a truncated file or anything malformed ends the stream: the files
// after it miss and are read again. Nothing in the file is trusted beyond
// what its hashes cover, and its chunk ids are trusted only as
// snapshot_create.cc says (the base snapshot must still exist, or each hit's
// chunks are checked for presence).
//
// Threading: a reader or writer belongs to one thread.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "storage/chunk_store.h"

namespace shoal::storage {

// The order in which a save visits files: directories in post-order (a
// directory's subdirectories, in name order, come before its own files) and a
// directory's files in name order. Paths are relative, '/'-separated. <0, 0, >0.
int compare_walk_order(std::string_view a, std::string_view b);

struct CachedStat {
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::uint64_t inode = 0;
  std::int64_t ctime_ns = 0;
  bool operator==(const CachedStat&) const = default;
};

std::string caches_dir(const std::string& store_dir);
std::string file_cache_path(const std::string& store_dir, const std::string& project);
inline constexpr std::string_view kCacheSuffix = ".cache";
inline constexpr std::string_view kCacheTmpSuffix = ".cache.tmp";

class FileCacheReader {
 public:
  // An absent, unreadable or malformed file gives a reader that misses everything.
  static FileCacheReader open(const std::string& path);
  FileCacheReader(FileCacheReader&& other) noexcept;
  FileCacheReader& operator=(FileCacheReader&&) = delete;
  ~FileCacheReader();

  // The snapshot the cache was written with (nullopt: no usable cache).
  const std::optional<ChunkId>& base() const { return base_; }
  // Lookups must come in walk order. The cached chunks of `path` if the cache
  // has it with exactly this stat; nullptr otherwise.
  const std::vector<ChunkId>* find(std::string_view path, const CachedStat& stat);

 private:
  FileCacheReader() = default;
  bool next();        // Decodes the next record into cur_; false at the end or on damage.
  bool next_block();  // Reads and checks the next block.
  void stop();

  int fd_ = -1;
  std::optional<ChunkId> base_;
  Bytes block_;
  std::size_t pos_ = 0;
  std::string path_;  // Current record.
  CachedStat stat_;
  std::vector<ChunkId> chunks_;
  bool has_ = false;
};

class FileCacheWriter {
 public:
  // Creates (truncating) DIR/caches/<project>.cache.tmp.
  static Result<FileCacheWriter> create(const std::string& store_dir, const std::string& project);
  FileCacheWriter(FileCacheWriter&& other) noexcept;
  FileCacheWriter& operator=(FileCacheWriter&&) = delete;
  ~FileCacheWriter();  // Removes the temporary file unless commit() succeeded.

  // Paths must come in walk order.
  Status add(std::string_view path, const CachedStat& stat, const std::vector<ChunkId>& chunks);
  // Writes the header naming `base` (the snapshot just committed), makes the
  // file durable and atomically replaces the project's cache.
  Status commit(const ChunkId& base);

 private:
  FileCacheWriter(std::string tmp, std::string final_path, int fd) : tmp_(std::move(tmp)), final_(std::move(final_path)), fd_(fd) {}
  Status flush_block();
  Status write_all(ByteView bytes);

  std::string tmp_;
  std::string final_;
  int fd_ = -1;
  Bytes body_;
  std::string prev_;
  bool committed_ = false;
};

}  // namespace shoal::storage
