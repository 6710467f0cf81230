#include "node/agent/datagram.h"

#include <gtest/gtest.h>

#include "node/agent/limits.h"

namespace shoal::agent {
namespace {

class DatagramTest : public ::testing::Test {
 protected:
  DatagramTest() : ring_(Key(1)), other_(Key(2)) { crypto_init(); }
  static ClusterKey Key(std::uint8_t fill) {
    ClusterKey key;
    key.fill(fill);
    return key;
  }
  Bytes Seal(const Keyring& ring, std::size_t plaintext_bytes) {
    return seal_datagram(ring, random_, Bytes(plaintext_bytes, 0x5a));
  }
  Prng random_{42};
  Keyring ring_;
  Keyring other_;
};

TEST_F(DatagramTest, SealedDatagramOpens) {
  const Bytes plain = {1, 2, 3};
  auto opened = open_datagram(ring_, seal_datagram(ring_, random_, plain));
  ASSERT_TRUE(opened.has_value());
  EXPECT_EQ(*opened, plain);
}

TEST_F(DatagramTest, OtherClusterKeyIsDroppedAsNoKey) {
  auto opened = open_datagram(ring_, Seal(other_, 100));
  ASSERT_FALSE(opened.has_value());
  EXPECT_EQ(opened.error(), DropReason::kNoKey);
}

TEST_F(DatagramTest, TamperedIsDroppedAsNoKey) {
  Bytes sealed = Seal(ring_, 100);
  sealed[sealed.size() / 2] ^= 1;
  EXPECT_EQ(open_datagram(ring_, sealed).error(), DropReason::kNoKey);
}

TEST_F(DatagramTest, TruncatedBelowOverheadIsTooShort) {
  Bytes sealed = Seal(ring_, 10);
  sealed.resize(kSealOverheadBytes - 1);
  EXPECT_EQ(open_datagram(ring_, sealed).error(), DropReason::kTooShort);
  EXPECT_EQ(open_datagram(ring_, {}).error(), DropReason::kTooShort);
}

TEST_F(DatagramTest, TruncatedAboveOverheadIsNoKey) {
  Bytes sealed = Seal(ring_, 10);
  sealed.pop_back();
  EXPECT_EQ(open_datagram(ring_, sealed).error(), DropReason::kNoKey);
}

TEST_F(DatagramTest, OversizedIsDroppedBeforeOpening) {
  EXPECT_EQ(open_datagram(ring_, Bytes(kDatagramBytesMax + 1, 0)).error(), DropReason::kOversized);
}

TEST_F(DatagramTest, LargestAllowedDatagramOpens) {
  EXPECT_TRUE(open_datagram(ring_, Seal(ring_, kDatagramPlaintextBytesMax)).has_value());
}

TEST_F(DatagramTest, SecondaryKeyOpensDuringRotation) {
  Keyring rotated = ring_;
  ASSERT_TRUE(rotated.install(Key(2)));
  ASSERT_TRUE(rotated.use(Key(2)));
  // Sealed with the new primary, opened by a node that installed it but still seals with the old one.
  Keyring installed = ring_;
  ASSERT_TRUE(installed.install(Key(2)));
  EXPECT_TRUE(open_datagram(installed, Seal(rotated, 50)).has_value());
  EXPECT_EQ(open_datagram(ring_, Seal(rotated, 50)).error(), DropReason::kNoKey);
}

TEST(DropReasonTest, NamesAreStable) {
  EXPECT_EQ(drop_reason_name(DropReason::kTooShort), "too_short");
  EXPECT_EQ(drop_reason_name(DropReason::kOversized), "oversized");
  EXPECT_EQ(drop_reason_name(DropReason::kNoKey), "no_key");
  EXPECT_EQ(drop_reason_name(DropReason::kDecodeError), "decode_error");
  EXPECT_EQ(drop_reason_name(DropReason::kStreamNoKey), "stream_no_key");
}

}  // namespace
}  // namespace shoal::agent
