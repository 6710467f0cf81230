// Hostile and broken input: counted and dropped, never a crash.
#include <gtest/gtest.h>

#include "gossip/wire.h"
#include "tests/gossip/fake_network.h"

namespace shoal::gossip::testing {
namespace {

class GossipDecodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    net_.add_and_join(2, 0);
    ASSERT_TRUE(net_.run_until([&] { return net_.converged(); }, seconds(2)));
  }
  Membership& core() { return net_.node(0); }
  void Feed(const Bytes& bytes) { net_.inject(0, net_.addr(1), bytes); }
  static Bytes Compound(const std::vector<Bytes>& messages) {
    std::vector<ByteView> parts(messages.begin(), messages.end());
    return wire::compound(parts);
  }
  wire::Ping PingFrom1() { return wire::Ping{5, net_.id(0), wire::Digest{net_.id(1), 1, 1, 0, Health{}}}; }

  FakeNetwork net_{NetOptions{.seed = 9}};
};

TEST_F(GossipDecodeTest, GarbageIsCountedAndDropped) {
  const auto before = core().counters().decode_errors;
  Feed(Bytes{0xde, 0xad, 0xbe, 0xef});
  Feed(Bytes{0xc1});  // Never-used msgpack byte.
  Feed(Bytes{});
  EXPECT_EQ(core().counters().decode_errors, before + 3);
}

TEST_F(GossipDecodeTest, EveryTruncationOfAValidDatagramIsCountedAndDropped) {
  const Bytes full = Compound({wire::encode(PingFrom1())});
  const auto before = core().counters().decode_errors;
  for (std::size_t n = 0; n < full.size(); ++n) {
    Feed(Bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n)));
  }
  EXPECT_EQ(core().counters().decode_errors, before + full.size());
  const auto acks_before = net_.datagrams_sent();
  Feed(full);  // The whole one is answered.
  EXPECT_EQ(net_.datagrams_sent(), acks_before + 1);
}

TEST_F(GossipDecodeTest, UnknownTypeIsCountedAndSkippedOthersApplied) {
  Encoder e;
  e.array(3).u64(99).u64(1).str("from the future");
  const Bytes unknown = e.take();
  const auto acks_before = net_.datagrams_sent();
  Feed(Compound({wire::encode(PingFrom1()), unknown}));
  EXPECT_EQ(core().counters().unknown_message_types, 1u);
  EXPECT_EQ(net_.datagrams_sent(), acks_before + 1);  // The ping still got its ack.
  Feed(unknown);  // A bare message with an unknown tag.
  EXPECT_EQ(core().counters().unknown_message_types, 2u);
}

TEST_F(GossipDecodeTest, OversizedDatagramIsDropped) {
  const auto before = core().counters().decode_errors;
  Feed(Bytes(wire::kDatagramBytesMax + 1, 0x90));
  EXPECT_EQ(core().counters().decode_errors, before + 1);
}

TEST_F(GossipDecodeTest, WrongFieldTypeIsDropped) {
  Encoder e;
  e.array(2).u64(0).array(2).u64(static_cast<std::uint64_t>(wire::Type::kNack)).str("not a number");
  const auto before = core().counters().decode_errors;
  Feed(e.take());
  EXPECT_EQ(core().counters().decode_errors, before + 1);
}

TEST_F(GossipDecodeTest, OutOfRangeValuesAreDropped) {
  Encoder e;  // PingReq with port 70000.
  e.array(2)
      .u64(0)
      .array(6)
      .u64(static_cast<std::uint64_t>(wire::Type::kPingReq))
      .u64(1)
      .bin(ByteView(net_.id(1).bytes));
  e.str("10.0.0.9").u64(70000).boolean(true);
  const auto before = core().counters().decode_errors;
  Feed(e.take());
  EXPECT_EQ(core().counters().decode_errors, before + 1);
  Encoder s;  // A record with status 9.
  wire::MemberRecord r;
  r.id = net_.id(1);
  r.name = "x";
  r.addr = net_.addr(1);
  s.array(2).u64(0).array(2).u64(static_cast<std::uint64_t>(wire::Type::kAlive)).array(12);
  s.bin(ByteView(r.id.bytes)).str("x").str("").str("10.0.0.2").u64(7946).bin(ByteView(r.public_key));
  s.u64(1).u64(9).boolean(false).u64(1).u64(0).array(5).u64(0).u64(0).u64(0).u64(0).str("");
  Feed(s.take());
  EXPECT_EQ(core().counters().decode_errors, before + 2);
}

TEST_F(GossipDecodeTest, TrailingItemsAreDropped) {
  Encoder e;
  e.array(2).u64(0).array(3).u64(static_cast<std::uint64_t>(wire::Type::kNack)).u64(1).u64(2);
  const auto before = core().counters().decode_errors;
  Feed(e.take());
  EXPECT_EQ(core().counters().decode_errors, before + 1);
}

TEST_F(GossipDecodeTest, NestedCompoundIsDropped) {
  const Bytes inner = Compound({wire::encode(wire::Nack{1})});
  const auto before = core().counters().decode_errors;
  Feed(Compound({inner}));
  EXPECT_EQ(core().counters().decode_errors, before + 1);
}

TEST_F(GossipDecodeTest, HugeCountClaimsAllocateNothing) {
  // array32 claiming 4 billion items, then nothing.
  const auto before = core().counters().decode_errors;
  Feed(Bytes{0xdd, 0xff, 0xff, 0xff, 0xff, 0x00});
  Feed(Bytes{0x92, 0x00, 0xc6, 0xff, 0xff, 0xff, 0xff});  // bin32 of 4 GiB
  EXPECT_EQ(core().counters().decode_errors, before + 2);
}

TEST_F(GossipDecodeTest, AliveWhoseIdIsNotTheHashOfItsKeyIsRejected) {
  wire::MemberRecord r;
  r.id.bytes.fill(0x42);  // Not hash(public_key).
  r.public_key.fill(0x43);
  r.name = "impostor";
  r.addr = Address{"10.9.9.9", 7946};
  r.incarnation = 1;
  Feed(Compound({wire::encode(wire::Alive{r})}));
  EXPECT_EQ(core().counters().identity_rejected, 1u);
  EXPECT_FALSE(core().find(r.id).has_value());
}

TEST_F(GossipDecodeTest, AliveReusingAKnownIdWithAnotherKeyIsRejected) {
  auto known = core().find(net_.id(1));
  ASSERT_TRUE(known);
  wire::MemberRecord r;
  r.id = known->id;
  r.public_key.fill(0x55);
  r.name = "hijack";
  r.addr = Address{"10.9.9.9", 7946};
  r.incarnation = known->incarnation + 10;
  Feed(Compound({wire::encode(wire::Alive{r})}));
  EXPECT_EQ(core().counters().identity_rejected, 1u);
  EXPECT_EQ(core().find(net_.id(1))->name, known->name);
}

TEST_F(GossipDecodeTest, MalformedPushPullReturnsAnErrorAndCounts) {
  const auto before = core().counters().decode_errors;
  auto reply = core().on_stream_request(net_.now(), net_.addr(1), Bytes{0x93, 0x0a});
  EXPECT_FALSE(reply.has_value());
  EXPECT_EQ(reply.error().code, Code::kInvalidArgument);
  EXPECT_EQ(core().counters().decode_errors, before + 1);
}

TEST_F(GossipDecodeTest, RandomBytesNeverCrash) {
  Prng random(123);
  const Bytes valid =
      Compound({wire::encode(PingFrom1()), wire::encode(wire::Suspect{net_.id(1), 1, net_.id(0), false})});
  for (int i = 0; i < 5000; ++i) {
    Bytes b = valid;
    const int flips = 1 + static_cast<int>(random.uniform(4));
    for (int f = 0; f < flips; ++f) {
      b[random.uniform(b.size())] = static_cast<std::uint8_t>(random.next_u64());
    }
    Feed(b);
  }
  SUCCEED();
}

}  // namespace
}  // namespace shoal::gossip::testing
