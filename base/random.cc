#include "base/random.h"

#include <sodium.h>

#include <cstring>

namespace shoal {
namespace {

std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

}  // namespace

Prng::Prng(std::uint64_t seed) {
  for (auto& s : state_) {
    s = splitmix64(seed);
  }
}

std::uint64_t Prng::next_u64() {
  const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
  const std::uint64_t t = state_[1] << 17;
  state_[2] ^= state_[0];
  state_[3] ^= state_[1];
  state_[1] ^= state_[2];
  state_[0] ^= state_[3];
  state_[2] ^= t;
  state_[3] = rotl(state_[3], 45);
  return result;
}

void Prng::fill(std::span<std::uint8_t> out) {
  size_t i = 0;
  while (i < out.size()) {
    const std::uint64_t v = next_u64();
    const size_t n = std::min(out.size() - i, sizeof v);
    std::memcpy(out.data() + i, &v, n);
    i += n;
  }
}

Prng Prng::fork() { return Prng(next_u64() ^ 0x5bd1e9955bd1e995ULL); }

std::uint64_t SystemRandom::next_u64() {
  std::uint64_t v = 0;
  randombytes_buf(&v, sizeof v);
  return v;
}

void SystemRandom::fill(std::span<std::uint8_t> out) { randombytes_buf(out.data(), out.size()); }

}  // namespace shoal
