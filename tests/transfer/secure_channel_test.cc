// Tests for transfer/secure_channel.h: handshake, authentication, framing,
// rekeying and every rejection path, driven byte by byte without sockets.

#include "transfer/secure_channel.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace shoal::transfer {
namespace {

Bytes B(std::string_view s) { return Bytes(s.begin(), s.end()); }

class ChannelTest : public ::testing::Test {
 protected:
  ChannelTest() {
    crypto_init();
    mesh_[alice_.node_id()] = alice_.public_key();
    mesh_[bob_.node_id()] = bob_.public_key();
  }

  // What the mesh gossips: node id -> public key.
  Status MeshAuthorizer(const NodeId& id, const PublicKey& key) {
    auto it = mesh_.find(id);
    if (it == mesh_.end() || it->second != key) {
      return make_error(Code::kPermissionDenied, "not in the mesh");
    }
    return ok_status();
  }

  ChannelConfig InitiatorConfig() {
    ChannelConfig c;
    c.role = ChannelRole::kInitiator;
    c.keyring = Keyring(cluster_);
    c.expected_peer_key = bob_.public_key();
    return c;
  }
  ChannelConfig ResponderConfig() {
    ChannelConfig c;
    c.role = ChannelRole::kResponder;
    c.keyring = Keyring(cluster_);
    c.authorize_peer = [this](const NodeId& id, const PublicKey& key) { return MeshAuthorizer(id, key); };
    return c;
  }

  void MakePair(const ChannelConfig& initiator, const ChannelConfig& responder) {
    // Fresh generators per pair so that every pair of a test is byte-identical.
    rng_a_ = std::make_unique<Prng>(1001);
    rng_b_ = std::make_unique<Prng>(2002);
    a_ = std::make_unique<SecureChannel>(initiator, alice_, *rng_a_, now_, &metrics_);
    b_ = std::make_unique<SecureChannel>(responder, bob_, *rng_b_, now_, &metrics_);
  }
  void MakePair() { MakePair(InitiatorConfig(), ResponderConfig()); }

  static Bytes Take(SecureChannel& c) {
    Bytes out;
    while (auto tx = c.poll_transmit()) {
      out.insert(out.end(), tx->begin(), tx->end());
    }
    return out;
  }
  // Moves bytes both ways until neither side has anything to send.
  void Pump() {
    for (int i = 0; i < 100; ++i) {
      Bytes ab = Take(*a_);
      Bytes ba = Take(*b_);
      if (ab.empty() && ba.empty()) {
        return;
      }
      b_->on_bytes(now_, ab);
      a_->on_bytes(now_, ba);
    }
    FAIL() << "pump did not settle";
  }
  static std::vector<Bytes> Received(SecureChannel& c) {
    std::vector<Bytes> out;
    while (auto m = c.poll_message()) {
      out.push_back(std::move(*m));
    }
    return out;
  }
  void Establish() {
    MakePair();
    Pump();
    ASSERT_TRUE(a_->established());
    ASSERT_TRUE(b_->established());
  }
  // Feeds the bytes, then end of stream if the channel is still waiting for more.
  static void FeedThenEof(SecureChannel& c, Instant now, ByteView bytes) {
    c.on_bytes(now, bytes);
    if (c.state() != ChannelState::kFailed) {
      c.on_eof(now);
    }
  }

  Prng rng_{42};
  Identity alice_ = Identity::generate(rng_);
  Identity bob_ = Identity::generate(rng_);
  Identity carol_ = Identity::generate(rng_);
  ClusterKey cluster_ = generate_cluster_key(rng_);
  ClusterKey other_cluster_ = generate_cluster_key(rng_);
  std::map<NodeId, PublicKey> mesh_;
  ChannelMetrics metrics_;
  Instant now_ = instant_from_us(5'000'000);
  std::unique_ptr<Prng> rng_a_, rng_b_;
  std::unique_ptr<SecureChannel> a_, b_;
};

TEST_F(ChannelTest, HandshakeDerivesMatchingKeysPerDirection) {
  Establish();
  EXPECT_EQ(a_->session_hash(), b_->session_hash());
  EXPECT_EQ(a_->send_key_fingerprint(), b_->receive_key_fingerprint());
  EXPECT_EQ(a_->receive_key_fingerprint(), b_->send_key_fingerprint());
  EXPECT_NE(a_->send_key_fingerprint(), a_->receive_key_fingerprint());
  EXPECT_EQ(a_->peer_key(), bob_.public_key());
  EXPECT_EQ(b_->peer_key(), alice_.public_key());
  EXPECT_EQ(metrics_.handshakes_completed, 2u);
}

TEST_F(ChannelTest, MessagesFlowBothWays) {
  Establish();
  ASSERT_TRUE(a_->send(now_, B("hello bob")));
  ASSERT_TRUE(b_->send(now_, B("hello alice")));
  ASSERT_TRUE(a_->send(now_, {}));
  Pump();
  EXPECT_EQ(Received(*b_), (std::vector<Bytes>{B("hello bob"), Bytes{}}));
  EXPECT_EQ(Received(*a_), (std::vector<Bytes>{B("hello alice")}));
}

TEST_F(ChannelTest, EachSessionHasFreshKeys) {
  Establish();
  const Hash256 first = a_->send_key_fingerprint();
  rng_a_ = std::make_unique<Prng>(77);  // Another ephemeral key for the initiator.
  a_ = std::make_unique<SecureChannel>(InitiatorConfig(), alice_, *rng_a_, now_);
  b_ = std::make_unique<SecureChannel>(ResponderConfig(), bob_, *rng_b_, now_);
  Pump();
  ASSERT_TRUE(a_->established());
  EXPECT_NE(a_->send_key_fingerprint(), first);
}

TEST_F(ChannelTest, SameSeedsGiveTheSameBytes) {
  MakePair();
  const Bytes first = Take(*a_);
  MakePair();
  EXPECT_EQ(Take(*a_), first);
}

TEST_F(ChannelTest, WrongClusterKeyGetsNoAnswer) {
  ChannelConfig initiator = InitiatorConfig();
  initiator.keyring = Keyring(other_cluster_);
  MakePair(initiator, ResponderConfig());
  b_->on_bytes(now_, Take(*a_));
  EXPECT_EQ(b_->state(), ChannelState::kFailed);
  EXPECT_EQ(b_->fail_reason(), FailReason::kWrongClusterKey);
  EXPECT_EQ(b_->error().code, Code::kPermissionDenied);
  EXPECT_TRUE(Take(*b_).empty());  // Not even the responder's identity leaks.
  EXPECT_FALSE(b_->peer_key().has_value());
  EXPECT_EQ(metrics_.failed(FailReason::kWrongClusterKey), 1u);
  // The initiator hears nothing and gives up at its deadline.
  ASSERT_TRUE(a_->next_deadline().has_value());
  a_->on_timer(*a_->next_deadline());
  EXPECT_EQ(a_->fail_reason(), FailReason::kHandshakeTimeout);
  EXPECT_FALSE(a_->poll_message().has_value());
}

TEST_F(ChannelTest, WrongClusterKeyOnResponderSideRefusedToo) {
  ChannelConfig responder = ResponderConfig();
  responder.keyring = Keyring(other_cluster_);
  MakePair(InitiatorConfig(), responder);
  Pump();
  EXPECT_EQ(b_->fail_reason(), FailReason::kWrongClusterKey);
  EXPECT_FALSE(a_->established());
  EXPECT_FALSE(b_->established());
}

TEST_F(ChannelTest, AnyInstalledClusterKeyIsAcceptedDuringRotation) {
  ChannelConfig responder = ResponderConfig();
  responder.keyring = Keyring(other_cluster_);
  ASSERT_TRUE(responder.keyring.install(cluster_));
  MakePair(InitiatorConfig(), responder);
  Pump();
  EXPECT_TRUE(a_->established());
  EXPECT_TRUE(b_->established());
}

TEST_F(ChannelTest, InitiatorNotInMeshIsRefusedAndNothingDelivered) {
  mesh_.erase(alice_.node_id());
  MakePair();
  b_->on_bytes(now_, Take(*a_));
  a_->on_bytes(now_, Take(*b_));
  ASSERT_TRUE(a_->established());  // The initiator learns of the refusal when the responder hangs up.
  ASSERT_TRUE(a_->send(now_, B("secret")));
  b_->on_bytes(now_, Take(*a_));
  EXPECT_EQ(b_->fail_reason(), FailReason::kPeerKeyRejected);
  EXPECT_EQ(b_->error().code, Code::kPermissionDenied);
  EXPECT_TRUE(Received(*b_).empty());
  EXPECT_TRUE(Take(*b_).empty());
}

TEST_F(ChannelTest, ResponderWithAnotherKeyThanDialedIsRefused) {
  ChannelConfig initiator = InitiatorConfig();
  initiator.expected_peer_key = carol_.public_key();  // We dialed Carol; Bob answered.
  MakePair(initiator, ResponderConfig());
  b_->on_bytes(now_, Take(*a_));
  a_->on_bytes(now_, Take(*b_));
  EXPECT_EQ(a_->fail_reason(), FailReason::kPeerKeyRejected);
  EXPECT_FALSE(a_->peer_key().has_value());
  EXPECT_TRUE(Take(*a_).empty());  // No message 3: the initiator never reveals itself.
}

TEST_F(ChannelTest, KeyThatDoesNotMatchGossipedIdIsRefused) {
  // The mesh says Alice's id belongs to Carol's key: whoever holds Alice's key is refused.
  mesh_[alice_.node_id()] = carol_.public_key();
  MakePair();
  Pump();
  EXPECT_EQ(b_->fail_reason(), FailReason::kPeerKeyRejected);
}

TEST_F(ChannelTest, FlippedHandshakeByteAtEveryPositionFails) {
  MakePair();
  const Bytes m1 = Take(*a_);
  b_->on_bytes(now_, m1);
  const Bytes m2 = Take(*b_);
  a_->on_bytes(now_, m2);
  ASSERT_TRUE(a_->send(now_, B("first message")));
  const Bytes m3 = Take(*a_);  // Message 3 and the first data frame.
  ASSERT_FALSE(m1.empty());
  ASSERT_FALSE(m2.empty());
  ASSERT_FALSE(m3.empty());

  for (std::size_t i = 0; i < m1.size(); ++i) {
    MakePair();
    Bytes bad = Take(*a_);
    bad[i] ^= 0x01;
    FeedThenEof(*b_, now_, bad);
    EXPECT_EQ(b_->state(), ChannelState::kFailed) << "message 1, byte " << i;
    EXPECT_TRUE(Take(*b_).empty()) << "message 1, byte " << i;
  }
  for (std::size_t i = 0; i < m2.size(); ++i) {
    MakePair();
    b_->on_bytes(now_, Take(*a_));
    Bytes bad = Take(*b_);
    bad[i] ^= 0x01;
    FeedThenEof(*a_, now_, bad);
    EXPECT_EQ(a_->state(), ChannelState::kFailed) << "message 2, byte " << i;
    EXPECT_FALSE(a_->peer_key().has_value()) << "message 2, byte " << i;
  }
  for (std::size_t i = 0; i < m3.size(); ++i) {
    MakePair();
    b_->on_bytes(now_, Take(*a_));
    a_->on_bytes(now_, Take(*b_));
    ASSERT_TRUE(a_->send(now_, B("first message")));
    Bytes bad = Take(*a_);
    ASSERT_EQ(bad, m3);
    bad[i] ^= 0x01;
    FeedThenEof(*b_, now_, bad);
    EXPECT_EQ(b_->state(), ChannelState::kFailed) << "message 3, byte " << i;
    EXPECT_TRUE(Received(*b_).empty()) << "message 3, byte " << i;
  }
}

TEST_F(ChannelTest, FlippedDataByteAtEveryPositionFailsAndDeliversOnlyEarlierFrames) {
  const std::vector<Bytes> messages = {B("alpha"), B("bravo bravo"), Bytes(300, 7)};
  auto stream = [&] {
    Establish();
    for (const Bytes& m : messages) {
      EXPECT_TRUE(a_->send(now_, m));
    }
    return Take(*a_);
  };
  const Bytes honest = stream();
  std::vector<std::size_t> frame_end;
  std::size_t end = 0;
  for (const Bytes& m : messages) {
    end += kRecordHeaderBytes + kFrameCounterBytes + kFrameTypeBytes + m.size() + kFrameTagBytes;
    frame_end.push_back(end);
  }
  ASSERT_EQ(end, honest.size());

  for (std::size_t i = 0; i < honest.size(); ++i) {
    Bytes bad = stream();
    ASSERT_EQ(bad, honest);
    bad[i] ^= 0x80;
    FeedThenEof(*b_, now_, bad);
    EXPECT_EQ(b_->state(), ChannelState::kFailed) << "byte " << i;
    std::size_t intact = 0;
    while (frame_end[intact] <= i) {
      ++intact;
    }
    const auto got = Received(*b_);
    EXPECT_EQ(got, std::vector<Bytes>(messages.begin(), messages.begin() + static_cast<std::ptrdiff_t>(intact)))
        << "byte " << i;
  }
  EXPECT_GT(metrics_.failed(FailReason::kDecryptFailed), 0u);
  EXPECT_GT(metrics_.failed(FailReason::kReplayed) + metrics_.failed(FailReason::kReordered), 0u);
}

class ChannelFrameTest : public ChannelTest {
 protected:
  // Establishes, then has the initiator send n messages; returns each frame's bytes.
  std::vector<Bytes> Frames(int n) {
    Establish();
    std::vector<Bytes> frames;
    for (int i = 0; i < n; ++i) {
      EXPECT_TRUE(a_->send(now_, B("frame " + std::to_string(i))));
      frames.push_back(Take(*a_));
    }
    return frames;
  }
};

TEST_F(ChannelFrameTest, ReplayedFrameIsRejected) {
  auto frames = Frames(2);
  b_->on_bytes(now_, frames[0]);
  b_->on_bytes(now_, frames[0]);
  EXPECT_EQ(b_->fail_reason(), FailReason::kReplayed);
  EXPECT_EQ(Received(*b_).size(), 1u);
  EXPECT_EQ(b_->error().code, Code::kAborted);
}

TEST_F(ChannelFrameTest, ReorderedFramesAreRejected) {
  auto frames = Frames(2);
  b_->on_bytes(now_, frames[1]);
  b_->on_bytes(now_, frames[0]);
  EXPECT_EQ(b_->fail_reason(), FailReason::kReordered);
  EXPECT_TRUE(Received(*b_).empty());
}

TEST_F(ChannelFrameTest, DroppedFrameIsRejected) {
  auto frames = Frames(3);
  b_->on_bytes(now_, frames[0]);
  b_->on_bytes(now_, frames[2]);
  EXPECT_EQ(b_->fail_reason(), FailReason::kReordered);
  EXPECT_EQ(Received(*b_).size(), 1u);
}

TEST_F(ChannelFrameTest, StreamCutInsideAFrameIsTruncated) {
  auto frames = Frames(1);
  b_->on_bytes(now_, ByteView(frames[0]).first(frames[0].size() - 1));
  EXPECT_TRUE(b_->established());
  b_->on_eof(now_);
  EXPECT_EQ(b_->fail_reason(), FailReason::kTruncated);
  EXPECT_TRUE(Received(*b_).empty());
}

TEST_F(ChannelFrameTest, StreamEndingWithoutCloseIsTruncated) {
  auto frames = Frames(2);
  b_->on_bytes(now_, frames[0]);  // An attacker drops the rest and sends FIN.
  b_->on_eof(now_);
  EXPECT_EQ(b_->fail_reason(), FailReason::kTruncated);
  EXPECT_EQ(metrics_.failed(FailReason::kTruncated), 1u);
}

TEST_F(ChannelFrameTest, CloseThenEofIsClean) {
  auto frames = Frames(1);
  b_->on_bytes(now_, frames[0]);
  a_->close(now_);
  b_->on_bytes(now_, Take(*a_));
  EXPECT_TRUE(b_->peer_closed());
  b_->on_eof(now_);
  EXPECT_EQ(b_->state(), ChannelState::kEstablished);  // Bob may still send.
  ASSERT_TRUE(b_->send(now_, B("last words")));
  b_->close(now_);
  EXPECT_EQ(b_->state(), ChannelState::kClosed);
  a_->on_bytes(now_, Take(*b_));
  EXPECT_EQ(a_->state(), ChannelState::kClosed);
  EXPECT_EQ(Received(*a_), std::vector<Bytes>{B("last words")});
  EXPECT_FALSE(a_->send(now_, B("x")));
}

TEST_F(ChannelFrameTest, FrameAfterCloseIsRejected) {
  Establish();
  a_->close(now_);
  Bytes closing = Take(*a_);
  b_->on_bytes(now_, closing);
  // A forged continuation cannot be made without the key, but a replayed
  // close (or anything after it) must not be accepted either.
  b_->on_bytes(now_, closing);
  EXPECT_EQ(b_->state(), ChannelState::kFailed);
}

TEST_F(ChannelFrameTest, OversizedLengthIsRejectedFromTheHeaderAlone) {
  Establish();
  const std::uint32_t length = kFrameBytesMax + 1;
  const Bytes header = {static_cast<std::uint8_t>(length >> 24), static_cast<std::uint8_t>(length >> 16),
                        static_cast<std::uint8_t>(length >> 8), static_cast<std::uint8_t>(length)};
  b_->on_bytes(now_, header);  // Four bytes: nothing else arrives, nothing is reserved.
  EXPECT_EQ(b_->fail_reason(), FailReason::kOversize);
  EXPECT_EQ(metrics_.failed(FailReason::kOversize), 1u);
}

TEST_F(ChannelFrameTest, OversizedHandshakeRecordIsRejected) {
  MakePair();
  Bytes stream(kChannelPreamble.begin(), kChannelPreamble.end());
  stream.insert(stream.end(), {0x00, 0x00, 0x02, 0x01});  // 513 bytes: one above kHandshakeBytesMax.
  b_->on_bytes(now_, stream);
  EXPECT_EQ(b_->fail_reason(), FailReason::kOversize);
  EXPECT_TRUE(Take(*b_).empty());
}

TEST_F(ChannelTest, StreamWithoutPreambleIsRefusedAtTheFirstByte) {
  MakePair();
  const Bytes gossip_frame_start = {0x00};  // What a gossip push-pull stream starts with.
  b_->on_bytes(now_, gossip_frame_start);
  EXPECT_EQ(b_->fail_reason(), FailReason::kMalformed);
}

TEST_F(ChannelTest, OtherChannelVersionIsNamed) {
  MakePair();
  Bytes stream = Take(*a_);
  stream[kChannelPreamble.size() - 1] = kChannelVersion + 1;
  b_->on_bytes(now_, ByteView(stream).first(kChannelPreamble.size()));
  EXPECT_EQ(b_->fail_reason(), FailReason::kVersion);
  EXPECT_EQ(metrics_.failed(FailReason::kVersion), 1u);
}

TEST_F(ChannelFrameTest, LargestMessageFitsAndOneMoreByteIsRefused) {
  Establish();
  const Bytes biggest(kMessageBytesMax, 0x5a);
  ASSERT_TRUE(a_->send(now_, biggest));
  auto too_big = a_->send(now_, Bytes(kMessageBytesMax + 1, 0));
  ASSERT_FALSE(too_big);
  EXPECT_EQ(too_big.error().code, Code::kInvalidArgument);
  Pump();
  EXPECT_EQ(Received(*b_), std::vector<Bytes>{biggest});
}

TEST_F(ChannelFrameTest, ShortFrameIsMalformed) {
  Establish();
  const Bytes record = {0, 0, 0, 3, 1, 2, 3};
  b_->on_bytes(now_, record);
  EXPECT_EQ(b_->fail_reason(), FailReason::kMalformed);
}

TEST_F(ChannelTest, ByteByByteDeliveryWorks) {
  MakePair();
  ASSERT_TRUE(!a_->send(now_, B("too early")));  // Not established yet.
  for (int round = 0; round < 10 && !(a_->established() && b_->established()); ++round) {
    for (std::uint8_t byte : Take(*a_)) {
      b_->on_bytes(now_, ByteView(&byte, 1));
    }
    for (std::uint8_t byte : Take(*b_)) {
      a_->on_bytes(now_, ByteView(&byte, 1));
    }
  }
  ASSERT_TRUE(a_->established());
  ASSERT_TRUE(b_->established());
  ASSERT_TRUE(a_->send(now_, B("one")));
  ASSERT_TRUE(a_->send(now_, B("two")));
  for (std::uint8_t byte : Take(*a_)) {
    b_->on_bytes(now_, ByteView(&byte, 1));
  }
  EXPECT_EQ(Received(*b_), (std::vector<Bytes>{B("one"), B("two")}));
}

// The zero-copy driver calls (receive_space/on_received, peek/pop, recycled
// transmit buffers) deliver exactly what on_bytes/poll_message deliver, with
// reads split anywhere and backpressure holding frames encrypted in between.
TEST_F(ChannelTest, ZeroCopyCallsDeliverTheSameMessages) {
  ChannelConfig responder = ResponderConfig();
  responder.inbox_bytes_max = 40000;
  MakePair(InitiatorConfig(), responder);
  Pump();
  ASSERT_TRUE(a_->established() && b_->established());
  std::vector<Bytes> sent;
  for (int i = 0; i < 30; ++i) {
    Bytes m(static_cast<std::size_t>(1 + (i * 7919) % 20000));
    for (std::size_t j = 0; j < m.size(); ++j) {
      m[j] = static_cast<std::uint8_t>(i + j);
    }
    const ByteView head = ByteView(m).first(m.size() / 3);
    const ByteView rest = ByteView(m).subspan(m.size() / 3);
    const ByteView parts[2] = {head, rest};
    ASSERT_TRUE(a_->send_parts(now_, parts));
    sent.push_back(std::move(m));
  }
  Bytes wire;
  std::size_t capacity_before = 0;
  while (auto tx = a_->poll_transmit()) {
    wire.insert(wire.end(), tx->begin(), tx->end());
    capacity_before = tx->capacity();
    a_->recycle_transmit(std::move(*tx));
  }
  std::vector<Bytes> got;
  std::size_t at = 0;
  std::size_t step = 1;
  while (at < wire.size() || b_->peek_message()) {
    // Take one message in three rounds only, so the inbox fills and reading stops.
    if (auto m = b_->peek_message(); m && (at == wire.size() || step % 3 == 0)) {
      got.emplace_back(m->begin(), m->end());
      b_->pop_message();
    }
    if (at < wire.size() && b_->wants_bytes()) {
      const std::size_t n = std::min(wire.size() - at, step % 9000 + 1);
      const std::span<std::uint8_t> space = b_->receive_space(n);
      ASSERT_GE(space.size(), n);
      std::copy_n(wire.begin() + static_cast<std::ptrdiff_t>(at), n, space.begin());
      b_->on_received(now_, n);
      at += n;
    }
    step += 37;
    ASSERT_LT(step, 10'000'000u);
  }
  EXPECT_EQ(got, sent);
  EXPECT_EQ(b_->state(), ChannelState::kEstablished);
  // The recycled buffer carries the next frames, and only them: the bytes of
  // the bigger batch it carried before are not sent again.
  ASSERT_TRUE(a_->send(now_, B("again")));
  auto tx = a_->poll_transmit();
  ASSERT_TRUE(tx);
  EXPECT_GE(tx->capacity(), capacity_before);
  EXPECT_EQ(tx->size(), kRecordHeaderBytes + kFrameCounterBytes + kFrameTypeBytes + 5 + kFrameTagBytes);
  b_->on_bytes(now_, *tx);
  EXPECT_EQ(b_->poll_message(), B("again"));
}

TEST_F(ChannelTest, SendPartsRefusesMorePartsThanItSeals) {
  MakePair();
  Pump();
  ASSERT_TRUE(a_->established());
  const Bytes m = B("x");
  std::vector<ByteView> parts(kSendPartsMax, ByteView(m));
  EXPECT_TRUE(a_->send_parts(now_, parts));
  parts.push_back(ByteView(m));
  const Status refused = a_->send_parts(now_, parts);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Code::kInvalidArgument);
  Pump();
  EXPECT_EQ(Received(*b_), (std::vector<Bytes>{Bytes(kSendPartsMax, 'x')}));
}

TEST_F(ChannelTest, RekeysAcrossManyFramesInBothDirections) {
  ChannelConfig initiator = InitiatorConfig();
  ChannelConfig responder = ResponderConfig();
  initiator.rekey_frames = responder.rekey_frames = 3;
  initiator.rekey_bytes = responder.rekey_bytes = 200;
  MakePair(initiator, responder);
  Pump();
  const Hash256 initial = a_->send_key_fingerprint();
  std::vector<Bytes> sent;
  for (int i = 0; i < 200; ++i) {
    sent.push_back(Bytes(static_cast<std::size_t>(i % 97), static_cast<std::uint8_t>(i)));
    ASSERT_TRUE(a_->send(now_, sent.back()));
    ASSERT_TRUE(b_->send(now_, sent.back()));
    if (i % 7 == 0) {
      Pump();
    }
  }
  Pump();
  EXPECT_EQ(Received(*b_), sent);
  EXPECT_EQ(Received(*a_), sent);
  EXPECT_GE(a_->rekeys(), 2u * (200 / 3));
  EXPECT_EQ(a_->rekeys(), b_->rekeys());
  EXPECT_NE(a_->send_key_fingerprint(), initial);
  EXPECT_EQ(a_->send_key_fingerprint(), b_->receive_key_fingerprint());
  EXPECT_EQ(a_->receive_key_fingerprint(), b_->send_key_fingerprint());
}

TEST_F(ChannelTest, RekeyScheduleMismatchIsDetected) {
  // Proves the rekey really changes the key: a receiver that does not rekey cannot read on.
  ChannelConfig initiator = InitiatorConfig();
  initiator.rekey_frames = 2;
  MakePair(initiator, ResponderConfig());
  Pump();
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(a_->send(now_, B("x")));
  }
  Pump();
  EXPECT_EQ(Received(*b_).size(), 2u);
  EXPECT_EQ(b_->fail_reason(), FailReason::kDecryptFailed);
}

TEST_F(ChannelTest, HandshakeTimesOut) {
  MakePair();
  b_->on_bytes(now_, Take(*a_));
  ASSERT_EQ(b_->next_deadline(), now_ + seconds(10));
  b_->on_timer(now_ + seconds(9));
  EXPECT_EQ(b_->state(), ChannelState::kHandshaking);
  b_->on_timer(now_ + seconds(10));
  EXPECT_EQ(b_->fail_reason(), FailReason::kHandshakeTimeout);
  EXPECT_EQ(b_->error().code, Code::kDeadlineExceeded);
  EXPECT_FALSE(b_->next_deadline().has_value());
}

TEST_F(ChannelTest, KeepalivesHoldAnIdleConnectionOpen) {
  Establish();
  for (int i = 0; i < 20; ++i) {
    now_ = std::min(*a_->next_deadline(), *b_->next_deadline());
    a_->on_timer(now_);
    b_->on_timer(now_);
    Pump();
  }
  EXPECT_GT(now_, instant_from_us(5'000'000) + seconds(120));  // Well past the idle timeout.
  EXPECT_TRUE(a_->established());
  EXPECT_TRUE(b_->established());
  EXPECT_TRUE(Received(*b_).empty());  // Keepalives are not messages.
}

TEST_F(ChannelTest, SilentPeerHitsIdleTimeout) {
  Establish();
  const Instant start = now_;
  while (b_->state() == ChannelState::kEstablished) {
    now_ = *b_->next_deadline();
    b_->on_timer(now_);
    (void)Take(*b_);  // Bob's keepalives go out, but Alice never answers.
  }
  EXPECT_EQ(b_->fail_reason(), FailReason::kIdleTimeout);
  EXPECT_EQ(now_ - start, seconds(60));
}

TEST_F(ChannelTest, StallMidFrameHitsIdleTimeout) {
  Establish();
  ASSERT_TRUE(a_->send(now_, B("slowloris")));
  const Bytes frame = Take(*a_);
  b_->on_bytes(now_, ByteView(frame).first(5));
  // Dribbling bytes does not count as life: only whole authenticated frames do.
  b_->on_bytes(now_ + seconds(30), ByteView(frame).subspan(5, 1));
  b_->on_timer(now_ + seconds(60));
  EXPECT_EQ(b_->fail_reason(), FailReason::kIdleTimeout);
}

TEST_F(ChannelTest, InboxBackpressureHoldsFramesEncrypted) {
  ChannelConfig responder = ResponderConfig();
  responder.inbox_bytes_max = 100;
  MakePair(InitiatorConfig(), responder);
  Pump();
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(a_->send(now_, Bytes(60, static_cast<std::uint8_t>(i))));
  }
  b_->on_bytes(now_, Take(*a_));
  EXPECT_FALSE(b_->wants_bytes());
  EXPECT_EQ(b_->frames_received(), 2u);  // 120 bytes decrypted; the rest waits.
  const auto got = Received(*b_);         // Polling makes room and decrypts on.
  ASSERT_EQ(got.size(), 5u);
  EXPECT_EQ(got[4], Bytes(60, 4));
  EXPECT_TRUE(b_->wants_bytes());
}

TEST_F(ChannelTest, TransmitBufferLimitRefusesSends) {
  ChannelConfig initiator = InitiatorConfig();
  initiator.transmit_bytes_max = 1000;
  MakePair(initiator, ResponderConfig());
  Pump();
  ASSERT_TRUE(a_->send(now_, Bytes(900, 1)));
  ASSERT_TRUE(a_->send(now_, Bytes(900, 1)));
  auto refused = a_->send(now_, Bytes(10, 1));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Code::kResourceExhausted);
  (void)Take(*a_);
  EXPECT_TRUE(a_->send(now_, Bytes(10, 1)));
}

TEST_F(ChannelTest, GarbageBeforeHandshakeFails) {
  MakePair();
  Prng noise(5);
  Bytes garbage(64);
  noise.fill(garbage);
  garbage[0] = 0;  // A plausible length so the parser, not the length check, refuses it.
  garbage[1] = 0;
  garbage[2] = 0;
  garbage[3] = 60;
  Bytes stream(kChannelPreamble.begin(), kChannelPreamble.end());
  stream.insert(stream.end(), garbage.begin(), garbage.end());
  b_->on_bytes(now_, stream);
  EXPECT_EQ(b_->state(), ChannelState::kFailed);
  EXPECT_TRUE(Take(*b_).empty());
}

}  // namespace
}  // namespace shoal::transfer

namespace shoal::transfer {
namespace {

// Random bytes, split at random points, into an established channel: it must
// fail or wait, never crash, and never deliver a message.
TEST_F(ChannelTest, RandomBytesAfterHandshakeNeverDeliverAnything) {
  for (std::uint64_t seed = 1; seed <= 200; ++seed) {
    Establish();
    Prng noise(seed);
    Bytes junk(1 + noise.uniform(600));
    noise.fill(junk);
    if (seed % 2 == 0) {
      junk[0] = 0;  // Half the time, a length under the limit so decryption is reached.
      junk[1] = 0;
    }
    std::size_t at = 0;
    while (at < junk.size()) {
      const std::size_t n = 1 + noise.uniform(junk.size() - at);
      b_->on_bytes(now_, ByteView(junk).subspan(at, n));
      at += n;
    }
    b_->on_eof(now_);
    EXPECT_EQ(b_->state(), ChannelState::kFailed) << "seed " << seed;
    EXPECT_TRUE(Received(*b_).empty()) << "seed " << seed;
  }
}

}  // namespace
}  // namespace shoal::transfer
