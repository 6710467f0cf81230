#include "storage/chunker.h"

#include <array>
#include <bit>

#include "base/assert.h"

namespace shoal::storage {
namespace {

// The gear table: 256 pseudo-random 64-bit words from splitmix64 with a fixed
// seed, computed at compile time. Part of the format (see the header).
constexpr std::array<std::uint64_t, 256> make_gear() {
  std::array<std::uint64_t, 256> table{};
  std::uint64_t state = 0x73686f616c434443ull;  // "shoalCDC"
  for (auto& word : table) {
    state += 0x9E3779B97F4A7C15ull;
    std::uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    word = z ^ (z >> 31);
  }
  return table;
}
constexpr std::array<std::uint64_t, 256> kGear = make_gear();

// A mask with `bits` one-bits spread over the top 48 bits, as in the FastCDC
// paper's padded masks: the gear hash's high bits depend on the most bytes,
// so spreading the bits widens the effective window.
constexpr std::uint64_t spread_mask(int bits) {
  std::uint64_t mask = 0;
  for (int i = 0; i < bits; ++i) {
    mask |= std::uint64_t{1} << (63 - (i * 48) / bits);
  }
  return mask;
}

}  // namespace

Chunker::Chunker(ChunkerParams params) : params_(params) {
  SHOAL_ASSERT(params.min_bytes >= 64);
  SHOAL_ASSERT(params.min_bytes < params.avg_bytes);
  SHOAL_ASSERT(params.avg_bytes < params.max_bytes);
  SHOAL_ASSERT(params.max_bytes <= kChunkBytesMax);
  SHOAL_ASSERT(std::has_single_bit(params.avg_bytes));
  const int bits = std::countr_zero(params.avg_bytes);
  // Normalized chunking level 2: two bits harder before avg, two easier after.
  mask_small_ = spread_mask(bits + 2);
  mask_large_ = spread_mask(bits - 2);
}

std::size_t Chunker::cut(ByteView data) const {
  const std::size_t n = data.size();
  if (n <= params_.min_bytes) {
    return n;
  }
  const std::size_t end = n < params_.max_bytes ? n : params_.max_bytes;
  const std::size_t mid = end < params_.avg_bytes ? end : params_.avg_bytes;
  const std::uint8_t* p = data.data();
  std::uint64_t hash = 0;
  std::size_t i = params_.min_bytes;
  for (; i < mid; ++i) {
    hash = (hash << 1) + kGear[p[i]];
    if ((hash & mask_small_) == 0) {
      return i + 1;
    }
  }
  for (; i < end; ++i) {
    hash = (hash << 1) + kGear[p[i]];
    if ((hash & mask_large_) == 0) {
      return i + 1;
    }
  }
  return end;
}

}  // namespace shoal::storage
