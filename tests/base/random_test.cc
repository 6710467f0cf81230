#include "base/random.h"

#include <gtest/gtest.h>

namespace shoal {
namespace {

TEST(RandomTest, SameSeedSameSequence) {
  Prng a(123), b(123);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(a.next_u64(), b.next_u64());
  }
}

TEST(RandomTest, DifferentSeedsDiffer) {
  Prng a(1), b(2);
  EXPECT_NE(a.next_u64(), b.next_u64());
}

TEST(RandomTest, UniformStaysInBoundsAndCoversRange) {
  Prng p(5);
  int seen[7] = {};
  for (int i = 0; i < 7000; ++i) {
    const auto v = p.uniform(7);
    ASSERT_LT(v, 7u);
    ++seen[v];
  }
  for (int count : seen) {
    EXPECT_GT(count, 800);
    EXPECT_LT(count, 1200);
  }
}

}  // namespace
}  // namespace shoal
