#pragma once
// base/random.h: randomness as an injected object. Protocol code takes a
// Random&; the agent passes SystemRandom (libsodium), the simulator a seeded
// Prng so that a run, including every nonce, is a pure function of its seed.
// Not thread-safe: one instance per thread of use.

#include <cstdint>
#include <span>

#include "base/assert.h"

namespace shoal {

class Random {
 public:
  virtual ~Random() = default;
  virtual std::uint64_t next_u64() = 0;
  virtual void fill(std::span<std::uint8_t> out) = 0;

  // Uniform in [0, bound). REQUIRES: bound > 0.
  std::uint64_t uniform(std::uint64_t bound) {
    SHOAL_ASSERT(bound > 0);
    // Lemire's nearly-divisionless method would be faster; rejection keeps it obviously unbiased.
    const std::uint64_t limit = UINT64_MAX - (UINT64_MAX % bound);
    std::uint64_t x = next_u64();
    while (x >= limit) {
      x = next_u64();
    }
    return x % bound;
  }
  // Uniform in [0, 1).
  double uniform_double() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }
  bool chance(double probability) { return uniform_double() < probability; }
};

// xoshiro256** seeded through splitmix64: fast, small state, good statistics.
class Prng final : public Random {
 public:
  explicit Prng(std::uint64_t seed);
  std::uint64_t next_u64() override;
  void fill(std::span<std::uint8_t> out) override;
  // A new independent generator derived from this one (for per-node streams).
  Prng fork();

 private:
  std::uint64_t state_[4];
};

// Cryptographically secure randomness from libsodium. Use in the agent only.
class SystemRandom final : public Random {
 public:
  std::uint64_t next_u64() override;
  void fill(std::span<std::uint8_t> out) override;
};

}  // namespace shoal
