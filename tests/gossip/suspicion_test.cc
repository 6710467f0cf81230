// Lifeguard's pure functions, table-tested, and the Suspicion timer.
#include "gossip/suspicion.h"

#include <gtest/gtest.h>

#include "gossip/awareness.h"
#include "gossip/membership.h"

namespace shoal::gossip {
namespace {

struct TimeoutCase {
  int confirmations;
  int k;
  std::int64_t min_ms;
  std::int64_t max_ms;
  std::int64_t expected_ms;
};

TEST(SuspicionTimeoutTest, Table) {
  // The first rows are memberlist's suspicion_test.go (expected = elapsed + remaining).
  const TimeoutCase cases[] = {
      {0, 3, 2000, 30000, 30000}, {1, 3, 2000, 30000, 16000}, {2, 3, 2000, 30000, 7810},
      {3, 3, 2000, 30000, 2000},  {4, 3, 2000, 30000, 2000},  {5, 3, 2000, 30000, 2000},
      {0, 0, 2000, 30000, 2000},  {7, 0, 2000, 30000, 2000},  {0, 1, 5000, 5000, 5000},
      {1, 1, 4000, 24000, 4000},  {0, 1, 4000, 24000, 24000}, {-1, 3, 4000, 24000, 24000},
  };
  for (const TimeoutCase& c : cases) {
    EXPECT_EQ(suspicion_timeout(c.confirmations, c.k, milliseconds(c.min_ms), milliseconds(c.max_ms)),
              milliseconds(c.expected_ms))
        << "n=" << c.confirmations << " k=" << c.k;
  }
}

TEST(SuspicionTimeoutTest, ShrinksMonotonicallyWithConfirmations) {
  Duration previous = seconds(1000);
  for (int n = 0; n <= 5; ++n) {
    const Duration t = suspicion_timeout(n, 5, seconds(4), seconds(24));
    EXPECT_LT(t, previous);
    previous = t;
  }
}

TEST(SuspicionTimeoutTest, MinimumScalesWithLog10OfMembers) {
  Config c;  // suspicion_mult 4, probe_interval 1 s.
  const std::pair<std::size_t, std::int64_t> cases[] = {{0, 4000}, {1, 4000}, {10, 4000}, {32, 6020},
                                                         {100, 8000}, {1000, 12000}, {10000, 16000}};
  for (auto [members, ms] : cases) {
    EXPECT_EQ(suspicion_timeout_min(c, members), milliseconds(ms)) << members;
  }
}

TEST(SuspicionTimeoutTest, RetransmitLimitGrowsWithLog10) {
  const std::pair<std::size_t, int> cases[] = {{0, 0},  {1, 4},  {9, 4},    {10, 8},
                                               {64, 8}, {99, 8}, {100, 12}, {10000, 20}};
  for (auto [members, limit] : cases) {
    EXPECT_EQ(retransmit_limit(4, members), limit) << members;
  }
}

NodeId Id(std::uint8_t b) {
  NodeId id;
  id.bytes.fill(b);
  return id;
}

TEST(SuspicionTest, IndependentConfirmationsShortenTheDeadline) {
  const Instant t0 = instant_from_us(0);
  Suspicion s(t0, Id(1), 3, seconds(2), seconds(30));
  EXPECT_EQ(s.deadline(), t0 + seconds(30));
  EXPECT_FALSE(s.confirm(Id(1)));  // The original accuser does not count twice.
  EXPECT_TRUE(s.confirm(Id(2)));
  EXPECT_EQ(s.deadline(), t0 + seconds(16));
  EXPECT_FALSE(s.confirm(Id(2)));
  EXPECT_TRUE(s.confirm(Id(3)));
  EXPECT_TRUE(s.confirm(Id(4)));
  EXPECT_EQ(s.deadline(), t0 + seconds(2));
  EXPECT_FALSE(s.confirm(Id(5)));  // k reached.
  EXPECT_EQ(s.confirmations(), 3);
}

TEST(SuspicionTest, StalledLastsTheStallBudgetFromTheFirstSign) {
  const Instant t0 = instant_from_us(0);
  Suspicion s(t0, Id(1), 3, seconds(4), seconds(24));
  EXPECT_TRUE(s.mark_stalled(t0 + seconds(1), seconds(30)));
  EXPECT_EQ(s.deadline(), t0 + seconds(31));
  EXPECT_FALSE(s.mark_stalled(t0 + seconds(10), seconds(30)));
  EXPECT_EQ(s.deadline(), t0 + seconds(31));
  EXPECT_FALSE(s.confirm(Id(2)));  // Confirmations cannot hurry a stall.
  EXPECT_EQ(s.deadline(), t0 + seconds(31));
  s.postpone(seconds(5));
  EXPECT_EQ(s.deadline(), t0 + seconds(36));
}

TEST(GossipAwarenessTest, ClampsAndScales) {
  Awareness a(8);
  EXPECT_EQ(a.scale(milliseconds(500)), milliseconds(500));
  a.apply(-3);
  EXPECT_EQ(a.score(), 0);
  a.apply(3);
  EXPECT_EQ(a.scale(seconds(1)), seconds(4));
  a.apply(100);
  EXPECT_EQ(a.score(), 7);
  EXPECT_EQ(a.scale(seconds(1)), seconds(8));
}

}  // namespace
}  // namespace shoal::gossip
