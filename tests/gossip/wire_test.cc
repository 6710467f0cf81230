// Round trips of every gossip message through encode and decode.
#include "gossip/wire.h"

#include <gtest/gtest.h>

namespace shoal::gossip::wire {
namespace {

NodeId Id(std::uint8_t b) {
  NodeId id;
  id.bytes.fill(b);
  return id;
}

Health SampleHealth() { return Health{1500, 1ull << 40, 2, 33, "0.1.0"}; }

MemberRecord SampleRecord() {
  MemberRecord r;
  r.id = Id(7);
  r.name = "node-7";
  r.dc = "fra1";
  r.addr = Address{"2001:db8::7", 7946};
  r.public_key.fill(9);
  r.incarnation = 12;
  r.status = MemberStatus::kSuspect;
  r.stalled = true;
  r.state_seq = (3ull << 32) | 5;
  r.catalog_version = 99;
  r.health = SampleHealth();
  return r;
}

Message RoundTrip(const Message& m) {
  const Bytes part = encode(m);
  const ByteView parts[] = {part};
  auto packet = decode_packet(compound(parts));
  EXPECT_TRUE(packet.has_value()) << (packet ? "" : packet.error().message);
  EXPECT_EQ(packet->messages.size(), 1u);
  return packet->messages.at(0);
}

TEST(GossipWireTest, EveryMessageRoundTrips) {
  const Digest digest{Id(1), 4, 5, 6, SampleHealth()};
  MemberRecord alive = SampleRecord();
  alive.status = MemberStatus::kAlive;
  alive.stalled = false;
  const std::vector<Message> messages = {
      Ping{77, Id(2), digest},
      PingReq{78, Id(3), Address{"10.0.0.3", 7946}, true},
      Ack{79, digest},
      Ack{80, std::nullopt},
      Nack{81},
      Alive{alive},
      Suspect{Id(4), 9, Id(5), true},
      Dead{Id(4), 10, Id(5)},
      Leave{Id(6), 11},
      State{Id(6), 12, 13, SampleHealth()},
  };
  for (const Message& m : messages) {
    EXPECT_EQ(RoundTrip(m), m) << "type index " << m.index();
  }
}

TEST(GossipWireTest, CompoundCarriesManyMessagesInOrder) {
  std::vector<Bytes> encoded;
  for (std::uint64_t seq = 0; seq < 20; ++seq) {  // More than a fixarray holds.
    encoded.push_back(encode(Nack{seq}));
  }
  std::vector<ByteView> parts(encoded.begin(), encoded.end());
  auto packet = decode_packet(compound(parts));
  ASSERT_TRUE(packet.has_value());
  ASSERT_EQ(packet->messages.size(), 20u);
  for (std::uint64_t seq = 0; seq < 20; ++seq) {
    EXPECT_EQ(std::get<Nack>(packet->messages[seq]).seq, seq);
  }
}

TEST(GossipWireTest, CompoundOverheadIsExact) {
  const Bytes one = encode(Nack{1});
  for (std::size_t n : {1u, 14u, 15u, 100u}) {
    std::vector<ByteView> parts(n, ByteView(one));
    EXPECT_EQ(compound(parts).size(), n * one.size() + compound_overhead_bytes(n)) << n;
  }
}

TEST(GossipWireTest, PushPullRoundTrips) {
  PushPull pp;
  pp.join = true;
  for (int i = 0; i < 50; ++i) {
    MemberRecord r = SampleRecord();
    r.id = Id(static_cast<std::uint8_t>(i));
    r.name = "node-" + std::to_string(i);
    pp.members.push_back(r);
  }
  auto back = decode_push_pull(encode(pp), 100);
  ASSERT_TRUE(back.has_value());
  EXPECT_TRUE(back->join);
  EXPECT_EQ(back->members, pp.members);
}

TEST(GossipWireTest, PushPullOverMembersMaxIsRejected) {
  PushPull pp;
  pp.members.assign(11, SampleRecord());
  EXPECT_FALSE(decode_push_pull(encode(pp), 10).has_value());
  EXPECT_TRUE(decode_push_pull(encode(pp), 11).has_value());
}

TEST(GossipWireTest, RecordAtEveryLimitFitsTheWorstCaseBound) {
  MemberRecord r = SampleRecord();
  r.name.assign(kNameBytesMax, 'n');
  r.dc.assign(kDcBytesMax, 'd');
  r.addr.host.assign(kHostBytesMax, 'h');
  r.health.version.assign(kVersionBytesMax, 'v');
  r.incarnation = r.state_seq = r.catalog_version = UINT64_MAX;
  r.health.free_disk_bytes = UINT64_MAX;
  PushPull pp;
  pp.members = {r};
  EXPECT_LE(encode(pp).size(), kMemberRecordBytesMax + 16);
  EXPECT_TRUE(decode_push_pull(encode(pp), 1).has_value());
}

}  // namespace
}  // namespace shoal::gossip::wire
