#include "base/crypto.h"

#include <gtest/gtest.h>

namespace shoal {
namespace {

class CryptoTest : public ::testing::Test {
 protected:
  void SetUp() override { crypto_init(); }
  Prng rng_{7};
};

TEST_F(CryptoTest, SealThenOpenRoundTrips) {
  const ClusterKey key = generate_cluster_key(rng_);
  Keyring ring(key);
  Bytes sealed = seal(key, rng_, as_bytes("v1"), as_bytes("payload"));
  EXPECT_EQ(sealed.size(), 7 + kSealOverheadBytes);
  auto opened = open(ring, as_bytes("v1"), sealed);
  ASSERT_TRUE(opened);
  EXPECT_EQ(as_string_view(*opened), "payload");
}

TEST_F(CryptoTest, WrongKeyDoesNotOpen) {
  Bytes sealed = seal(generate_cluster_key(rng_), rng_, as_bytes("v1"), as_bytes("payload"));
  Keyring other(generate_cluster_key(rng_));
  auto opened = open(other, as_bytes("v1"), sealed);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code, Code::kCorruption);
}

TEST_F(CryptoTest, WrongAssociatedDataDoesNotOpen) {
  const ClusterKey key = generate_cluster_key(rng_);
  Bytes sealed = seal(key, rng_, as_bytes("v1"), as_bytes("payload"));
  EXPECT_FALSE(open(Keyring(key), as_bytes("v2"), sealed));
}

TEST_F(CryptoTest, FlippedBitDoesNotOpen) {
  const ClusterKey key = generate_cluster_key(rng_);
  Bytes sealed = seal(key, rng_, {}, as_bytes("payload"));
  for (size_t i = 0; i < sealed.size(); ++i) {
    Bytes copy = sealed;
    copy[i] ^= 0x01;
    EXPECT_FALSE(open(Keyring(key), {}, copy)) << "flip at " << i;
  }
}

TEST_F(CryptoTest, TruncatedDoesNotOpen) {
  const ClusterKey key = generate_cluster_key(rng_);
  Bytes sealed = seal(key, rng_, {}, as_bytes("payload"));
  for (size_t cut = 0; cut < sealed.size(); ++cut) {
    EXPECT_FALSE(open(Keyring(key), {}, ByteView(sealed.data(), cut)));
  }
}

TEST_F(CryptoTest, KeyringRotation) {
  const ClusterKey old_key = generate_cluster_key(rng_);
  const ClusterKey new_key = generate_cluster_key(rng_);
  Keyring ring(old_key);
  EXPECT_FALSE(ring.use(new_key));  // Not installed yet.
  ASSERT_TRUE(ring.install(new_key));
  Bytes sealed_old = seal(old_key, rng_, {}, as_bytes("a"));
  EXPECT_TRUE(open(ring, {}, sealed_old));
  ASSERT_TRUE(ring.use(new_key));
  EXPECT_EQ(ring.primary(), new_key);
  auto removed_primary = ring.remove(new_key);
  ASSERT_FALSE(removed_primary);
  EXPECT_EQ(removed_primary.error().code, Code::kFailedPrecondition);
  ASSERT_TRUE(ring.remove(old_key));
  EXPECT_FALSE(open(ring, {}, sealed_old));
}

TEST_F(CryptoTest, IdentityRoundTripsThroughSecret) {
  Identity id = Identity::generate(rng_);
  auto again = Identity::from_secret(id.secret());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->public_key(), id.public_key());
  EXPECT_EQ(again->node_id(), id.node_id());
  auto sig = id.sign(as_bytes("m"));
  EXPECT_TRUE(verify_signature(id.public_key(), as_bytes("m"), sig));
  EXPECT_FALSE(verify_signature(id.public_key(), as_bytes("n"), sig));
}

TEST_F(CryptoTest, SameSeedSameIdentity) {
  Prng a(99), b(99);
  EXPECT_EQ(Identity::generate(a).node_id(), Identity::generate(b).node_id());
}

TEST_F(CryptoTest, ClusterKeyTextRoundTrip) {
  const ClusterKey key = generate_cluster_key(rng_);
  auto parsed = parse_cluster_key(format_cluster_key(key) + "\n");
  ASSERT_TRUE(parsed);
  EXPECT_EQ(*parsed, key);
  EXPECT_FALSE(parse_cluster_key("c2hvcnQ="));
  EXPECT_FALSE(parse_cluster_key("not base64!"));
}

}  // namespace
}  // namespace shoal
