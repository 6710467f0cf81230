#include "gossip/broadcast_queue.h"

#include <gtest/gtest.h>

namespace shoal::gossip {
namespace {

NodeId Id(std::uint8_t b) {
  NodeId id;
  id.bytes.fill(b);
  return id;
}

Bytes Msg(std::uint8_t tag, std::size_t size = 10) { return Bytes(size, tag); }

std::vector<Bytes> Take(BroadcastQueue& q, std::size_t budget = 1000, int limit = 100) {
  std::vector<Bytes> out;
  q.take(budget, 0, 100, limit, out);
  return out;
}

TEST(GossipBroadcastQueueTest, NewerBroadcastAboutTheSameMemberReplacesTheOlder) {
  BroadcastQueue q(100);
  q.push(Id(1), Topic::kMembership, Msg(1));
  q.push(Id(1), Topic::kMembership, Msg(2));
  q.push(Id(1), Topic::kState, Msg(3));  // Another topic: kept.
  EXPECT_EQ(q.size(), 2u);
  auto out = Take(q);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0][0], 3);  // Newest first among equals.
  EXPECT_EQ(out[1][0], 2);
}

TEST(GossipBroadcastQueueTest, FewestTransmitsGoFirst) {
  BroadcastQueue q(100);
  q.push(Id(1), Topic::kMembership, Msg(1));
  Take(q);  // 1 sent once.
  q.push(Id(2), Topic::kMembership, Msg(2));
  auto out = Take(q, 10);  // Room for one.
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0][0], 2);
  EXPECT_EQ(q.transmits_min(), 1);
}

TEST(GossipBroadcastQueueTest, RetiredAtTheLimit) {
  BroadcastQueue q(100);
  q.push(Id(1), Topic::kMembership, Msg(1));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Take(q, 1000, 3).size(), 1u);
  }
  EXPECT_TRUE(q.empty());
  EXPECT_TRUE(q.retired(Id(1), Topic::kMembership));
  EXPECT_TRUE(Take(q).empty());
}

TEST(GossipBroadcastQueueTest, FinalVerdictsAreSentTwiceAsOften) {
  BroadcastQueue q(100);
  q.push(Id(1), Topic::kMembership, Msg(1), /*final_verdict=*/true);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(Take(q, 1000, 3).size(), 1u) << i;
  }
  EXPECT_TRUE(q.empty());
}

TEST(GossipBroadcastQueueTest, PacksSmallerOnesPastOneThatDoesNotFit) {
  BroadcastQueue q(100);
  q.push(Id(1), Topic::kMembership, Msg(1, 50));
  q.push(Id(2), Topic::kMembership, Msg(2, 500));  // Newest, too big.
  auto out = Take(q, 100);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0][0], 1);
  EXPECT_EQ(q.transmits(Id(2), Topic::kMembership), 0);
}

TEST(GossipBroadcastQueueTest, BoundedDropsTheMostTransmitted) {
  BroadcastQueue q(2);
  q.push(Id(1), Topic::kMembership, Msg(1));
  Take(q);
  q.push(Id(2), Topic::kMembership, Msg(2));
  q.push(Id(3), Topic::kMembership, Msg(3));
  EXPECT_EQ(q.size(), 2u);
  EXPECT_EQ(q.dropped(), 1u);
  EXPECT_TRUE(q.retired(Id(1), Topic::kMembership));
}

}  // namespace
}  // namespace shoal::gossip
