#pragma once
// storage/chunker.h: content-defined chunking, FastCDC (Xia et al., 2016) with
// a gear rolling hash and normalized chunking (level 2). Owns only the cut-point
// rule; reading files and hashing chunks happen elsewhere. Pure and
// thread-safe: a Chunker is immutable after construction.
//
// Why content-defined: a boundary depends only on the bytes just before it, so
// an insertion moves the boundaries near it and leaves the rest where they
// were; the chunks after the edit keep their ids and dedup.
// The gear table and the masks are part of the on-disk format: changing them
// changes every chunk id, so they are fixed here and never derived at runtime
// from anything but constants.

#include <cstddef>
#include <cstdint>

#include "base/bytes.h"

namespace shoal::storage {

struct ChunkerParams {
  std::uint32_t min_bytes = 16 * 1024;
  std::uint32_t avg_bytes = 64 * 1024;   // Must be a power of two.
  std::uint32_t max_bytes = 256 * 1024;
};

// Chosen by measurement on the benchmark corpus (docs/storage.md).
inline constexpr ChunkerParams kDefaultChunkerParams{};
// Hard bounds any parameter set must respect (buffers are sized from them).
inline constexpr std::uint32_t kChunkBytesMax = 4 * 1024 * 1024;

class Chunker {
 public:
  // REQUIRES: 64 <= min < avg < max <= kChunkBytesMax, avg a power of two.
  explicit Chunker(ChunkerParams params = kDefaultChunkerParams);

  // Length of the chunk that starts at data[0]. `data` must hold at least
  // max_bytes bytes unless it is the tail of the input (then every byte left).
  // Returns data.size() when data.size() <= min_bytes (a small file is one chunk).
  std::size_t cut(ByteView data) const;

  const ChunkerParams& params() const { return params_; }

 private:
  ChunkerParams params_;
  std::uint64_t mask_small_;  // Harder to match: used before avg (fewer small chunks).
  std::uint64_t mask_large_;  // Easier to match: used after avg (fewer huge chunks).
};

}  // namespace shoal::storage
