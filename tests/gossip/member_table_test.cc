#include "gossip/member_table.h"

#include <gtest/gtest.h>

#include "base/random.h"

namespace shoal::gossip {
namespace {

Entry MakeEntry(Random& random, int i) {
  Entry e;
  random.fill(e.id.bytes);
  e.name = "node-" + std::to_string(i);
  return e;
}

TEST(GossipMemberTableTest, EntriesStayCompact) {
  EXPECT_LE(sizeof(Entry), 136u);
}

TEST(GossipMemberTableTest, FindsTenThousandEntries) {
  Prng random(1);
  MemberTable t;
  std::vector<NodeId> ids;
  for (int i = 0; i < 10000; ++i) {
    Entry e = MakeEntry(random, i);
    ids.push_back(e.id);
    EXPECT_EQ(t.insert(std::move(e)), static_cast<std::uint32_t>(i));
  }
  for (int i = 0; i < 10000; ++i) {
    EXPECT_EQ(t.find(ids[static_cast<std::size_t>(i)]), static_cast<std::uint32_t>(i));
  }
  NodeId missing;
  missing.bytes.fill(0xee);
  EXPECT_EQ(t.find(missing), MemberTable::kNone);
  EXPECT_EQ(t.count(MemberStatus::kAlive), 10000u);
}

TEST(GossipMemberTableTest, CompactKeepsSelfAndOrderAndCounts) {
  Prng random(2);
  MemberTable t;
  std::vector<NodeId> ids;
  for (int i = 0; i < 10; ++i) {
    ids.push_back(t.at(t.insert(MakeEntry(random, i))).id);
  }
  for (std::uint32_t s = 0; s < 10; s += 2) {
    t.set_status(s, MemberStatus::kDead, Instant{});
  }
  EXPECT_EQ(t.count(MemberStatus::kDead), 5u);
  t.compact([](const Entry& e) { return e.status == MemberStatus::kDead; });
  EXPECT_EQ(t.size(), 6u);  // Slot 0 is never removed.
  EXPECT_EQ(t.find(ids[0]), 0u);
  EXPECT_EQ(t.find(ids[1]), 1u);
  EXPECT_EQ(t.find(ids[2]), MemberTable::kNone);
  EXPECT_EQ(t.find(ids[9]), 5u);
  EXPECT_EQ(t.count(MemberStatus::kDead), 1u);
  EXPECT_EQ(t.count(MemberStatus::kAlive), 5u);
}

TEST(GossipMemberTableTest, AddressesRoundTripCompactlyOrInterned) {
  MemberTable t;
  Entry e;
  for (const Address& a : {Address{"10.1.2.3", 7946}, Address{"::1", 1}, Address{"db-7.example", 65535},
                           Address{"010.1.2.3", 80}}) {
    t.set_addr(e, a);
    EXPECT_EQ(t.addr(e), a);
  }
  t.set_addr(e, Address{"192.168.0.1", 1});
  EXPECT_TRUE(e.host_is_ipv4);
}

TEST(GossipMemberTableTest, HealthRoundTripsThroughInternedVersion) {
  MemberTable t;
  Entry e;
  const Health h{1, 2, 3, 4, "9.9.9"};
  t.set_health(e, h);
  EXPECT_EQ(t.health(e), h);
}

TEST(GossipStringPoolTest, BoundedPoolOverflowsToEmpty) {
  StringPool p(3);
  EXPECT_EQ(p.intern("a"), 1u);
  EXPECT_EQ(p.intern("b"), 2u);
  EXPECT_EQ(p.intern("a"), 1u);
  EXPECT_EQ(p.intern("c"), 0u);
  EXPECT_EQ(p.overflow(), 1u);
}

}  // namespace
}  // namespace shoal::gossip
