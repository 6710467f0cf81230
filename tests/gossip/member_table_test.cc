#include "gossip/member_table.h"

#include <gtest/gtest.h>

#include "base/random.h"

namespace shoal::gossip {
namespace {

Entry MakeEntry(Random& random) {
  Entry e;
  random.fill(e.id.bytes);
  return e;
}

std::string NameOf(int i) { return "node-" + std::to_string(i); }

TEST(GossipMemberTableTest, EntriesStayCompact) {
  EXPECT_LE(sizeof(Entry), 112u);
}

TEST(GossipMemberTableTest, FindsTenThousandEntries) {
  Prng random(1);
  MemberTable t;
  std::vector<NodeId> ids;
  for (int i = 0; i < 10000; ++i) {
    Entry e = MakeEntry(random);
    ids.push_back(e.id);
    EXPECT_EQ(t.insert(e, NameOf(i)), static_cast<std::uint32_t>(i));
  }
  for (int i = 0; i < 10000; ++i) {
    EXPECT_EQ(t.find(ids[static_cast<std::size_t>(i)]), static_cast<std::uint32_t>(i));
    EXPECT_EQ(t.name(t.at(static_cast<std::uint32_t>(i))), NameOf(i));
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
    ids.push_back(t.at(t.insert(MakeEntry(random), NameOf(i))).id);
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
  EXPECT_EQ(t.name(t.at(5)), "node-9");
  EXPECT_EQ(t.name(t.at(1)), "node-1");
  EXPECT_EQ(t.name_arena_bytes(), 6u * 6u);  // Removed names are dropped from the arena.
  EXPECT_EQ(t.count(MemberStatus::kDead), 1u);
  EXPECT_EQ(t.count(MemberStatus::kAlive), 5u);
}

TEST(GossipMemberTableTest, CompactWithNothingToRemoveKeepsEverything) {
  Prng random(4);
  MemberTable t;
  for (int i = 0; i < 5; ++i) {
    t.insert(MakeEntry(random), NameOf(i));
  }
  EXPECT_EQ(t.compact([](const Entry&) { return false; }), 0u);
  EXPECT_EQ(t.size(), 5u);
  EXPECT_EQ(t.name(t.at(4)), "node-4");
}

TEST(GossipMemberTableTest, RenamesReclaimArenaGarbage) {
  Prng random(3);
  MemberTable t;
  constexpr int kEntries = 100;
  std::vector<NodeId> ids;
  for (int i = 0; i < kEntries; ++i) {
    Entry e = MakeEntry(random);
    ids.push_back(e.id);
    t.reserve(1, 8);
    t.insert(e, NameOf(i));
  }
  const std::string long_name(128, 'x');
  for (int round = 0; round < 50; ++round) {
    for (std::uint32_t s = 0; s < kEntries; ++s) {
      t.set_name(s, round % 2 == 0 ? long_name : NameOf(static_cast<int>(s)));
    }
    // Garbage never outweighs live names by much (plus the 4 KiB slack).
    EXPECT_LE(t.name_arena_bytes(), 3u * kEntries * 128u + 4096u);
  }
  for (std::uint32_t s = 0; s < kEntries; ++s) {
    EXPECT_EQ(t.name(t.at(s)), NameOf(static_cast<int>(s)));  // The last round (49) is odd.
    EXPECT_EQ(t.find(ids[s]), s);
  }
}

TEST(GossipMemberTableTest, ReserveThenInsertFindsEveryone) {
  Prng random(5);
  MemberTable t;
  t.reserve(3000, 3000 * 9);
  std::vector<NodeId> ids;
  for (int i = 0; i < 3000; ++i) {
    Entry e = MakeEntry(random);
    ids.push_back(e.id);
    t.insert(e, NameOf(i));
  }
  for (int i = 0; i < 3000; ++i) {
    EXPECT_EQ(t.find(ids[static_cast<std::size_t>(i)]), static_cast<std::uint32_t>(i));
  }
}

TEST(GossipMemberTableTest, AddressesRoundTripCompactlyOrInterned) {
  MemberTable t;
  Entry e;
  for (const Address& a : {Address{"10.1.2.3", 7946}, Address{"::1", 1}, Address{"db-7.example", 65535},
                           Address{"010.1.2.3", 80}, Address{"0.0.0.0", 1}, Address{"255.255.255.255", 2},
                           Address{"256.1.1.1", 3}, Address{"1.2.3", 4}, Address{"1.2.3.4.", 5},
                           Address{"1.2.3.4 ", 6}, Address{"1..2.3", 7}, Address{"100.20.3.99", 8}}) {
    t.set_addr(e, a);
    EXPECT_EQ(t.addr(e), a);
  }
  t.set_addr(e, Address{"192.168.0.1", 1});
  EXPECT_TRUE(e.host_is_ipv4);
  t.set_addr(e, Address{"192.168.00.1", 1});
  EXPECT_FALSE(e.host_is_ipv4);  // Not canonical: kept as text.
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
