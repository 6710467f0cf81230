// Tests for transfer/connection.h: sessions in both directions over one
// connection, fair sharing, refused offers, and channel failure.

#include "transfer/connection.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "tests/transfer/fake_store.h"

namespace shoal::transfer {
namespace {

using test_support::FakeStore;
using Kind = ConnectionEvent::Kind;

class TransferConnectionTest : public ::testing::Test {
 protected:
  TransferConnectionTest() { crypto_init(); }

  ConnectionConfig Config(ChannelRole role, const Identity& peer, FakeStore& sink) {
    ConnectionConfig c;
    c.channel.role = role;
    c.channel.keyring = Keyring(key_);
    c.channel.expected_peer_key = peer.public_key();
    c.channel.idle_timeout = idle_timeout_;
    c.sync.window_chunks = window_chunks_;
    c.sync.piece_bytes = 1000;
    c.fill_bytes = 4000;
    c.accept_offer = [this, &sink](const std::string& project, const ChunkId&) -> Result<SyncSink*> {
      if (project == "refused") {
        return make_error(Code::kFailedPrecondition, "not a replica of " + project);
      }
      return &sink;
    };
    FakeStore* source = role == ChannelRole::kInitiator ? &store_a_ : &store_b_;
    c.accept_request = [source](const std::string& project, const ChunkId&) -> Result<SyncSource*> {
      if (project == "refused") {
        return make_error(Code::kNotFound, "not held here");
      }
      return source;
    };
    return c;
  }
  void Connect() {
    a_ = std::make_unique<TransferConnection>(Config(ChannelRole::kInitiator, bob_, sink_a_), alice_, rng_a_, now_);
    b_ = std::make_unique<TransferConnection>(Config(ChannelRole::kResponder, alice_, sink_b_), bob_, rng_b_, now_);
    Pump();
    ASSERT_TRUE(a_->channel().established());
    ASSERT_TRUE(b_->channel().established());
  }
  // One round: each side transmits what it has; returns whether bytes moved.
  bool Step() {
    bool moved = false;
    if (auto tx = a_->poll_transmit(now_)) {
      moved = true;
      b_->on_bytes(now_, *tx);
    }
    if (auto tx = b_->poll_transmit(now_)) {
      moved = true;
      a_->on_bytes(now_, *tx);
    }
    Collect();
    return moved;
  }
  void Pump() {
    for (int i = 0; i < 100000 && Step(); ++i) {
    }
  }
  void Collect() {
    while (auto e = a_->poll_event()) {
      events_a_.push_back(std::move(*e));
    }
    while (auto e = b_->poll_event()) {
      events_b_.push_back(std::move(*e));
    }
  }
  static std::vector<Kind> Kinds(const std::vector<ConnectionEvent>& events) {
    std::vector<Kind> out;
    for (const auto& e : events) {
      out.push_back(e.kind);
    }
    return out;
  }
  ChunkId Snapshot(FakeStore& store, int files, std::uint8_t salt, std::size_t size_step = 97) {
    std::vector<ChunkRef> refs;
    for (int f = 0; f < files; ++f) {
      refs.push_back({store.AddData(500 + static_cast<std::size_t>(f) * size_step, static_cast<std::uint8_t>(salt + f)),
                      ChunkKind::kData});
    }
    return store.AddManifest(refs);
  }

  Duration idle_timeout_ = seconds(60);
  std::size_t window_chunks_ = 8;
  Prng rng_{11};
  Identity alice_ = Identity::generate(rng_);
  Identity bob_ = Identity::generate(rng_);
  ClusterKey key_ = generate_cluster_key(rng_);
  Prng rng_a_{12}, rng_b_{13};
  Instant now_ = instant_from_us(1'000'000);
  FakeStore store_a_, store_b_;  // What each node holds and offers.
  FakeStore sink_a_, sink_b_;    // Where each node receives.
  std::unique_ptr<TransferConnection> a_, b_;
  std::vector<ConnectionEvent> events_a_, events_b_;
};

TEST_F(TransferConnectionTest, OfferBeforeEstablishedIsRefused) {
  a_ = std::make_unique<TransferConnection>(Config(ChannelRole::kInitiator, bob_, sink_a_), alice_, rng_a_, now_);
  auto id = a_->offer(now_, store_a_, "p", ChunkId{}, 0);
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().code, Code::kFailedPrecondition);
}

TEST_F(TransferConnectionTest, TransfersRunBothWaysAtOnce) {
  Connect();
  const ChunkId s1 = Snapshot(store_a_, 20, 1);
  const ChunkId s2 = Snapshot(store_b_, 15, 100);
  auto from_a = a_->offer(now_, store_a_, "p1", s1, 0);
  auto from_b = b_->offer(now_, store_b_, "p2", s2, 0);
  ASSERT_TRUE(from_a);
  ASSERT_TRUE(from_b);
  EXPECT_NE(*from_a >> 63, *from_b >> 63);  // Each side's ids carry its own top bit.
  Pump();
  EXPECT_TRUE(sink_b_.committed.contains(s1));
  EXPECT_TRUE(sink_a_.committed.contains(s2));
  EXPECT_EQ(Kinds(events_a_), (std::vector<Kind>{Kind::kEstablished, Kind::kSessionDone, Kind::kSessionDone}));
  EXPECT_EQ(Kinds(events_b_), (std::vector<Kind>{Kind::kEstablished, Kind::kSessionDone, Kind::kSessionDone}));
  EXPECT_EQ(a_->sessions(), 0u);
  EXPECT_EQ(b_->sessions(), 0u);
}

TEST_F(TransferConnectionTest, PullBringsTheRequestedSnapshot) {
  Connect();
  const ChunkId s1 = Snapshot(store_b_, 12, 40);
  auto id = a_->request(now_, sink_a_, "p", s1);
  ASSERT_TRUE(id) << id.error().to_string();
  EXPECT_EQ(*id >> 63, 1u);  // The responder (b) sends.
  Pump();
  EXPECT_TRUE(sink_a_.committed.contains(s1));
  ASSERT_EQ(Kinds(events_a_), (std::vector<Kind>{Kind::kEstablished, Kind::kSessionDone}));
  EXPECT_EQ(events_a_[1].role, SessionRole::kReceiver);
  EXPECT_EQ(events_a_[1].session, *id);
  EXPECT_EQ(events_a_[1].progress.chunks_transferred, 13u);
  ASSERT_EQ(Kinds(events_b_), (std::vector<Kind>{Kind::kEstablished, Kind::kSessionDone}));
  EXPECT_EQ(events_b_[1].role, SessionRole::kSender);
}

TEST_F(TransferConnectionTest, RefusedPullFailsWithThePeersReason) {
  Connect();
  auto id = b_->request(now_, sink_b_, "refused", ChunkId{});
  ASSERT_TRUE(id);
  Pump();
  ASSERT_EQ(Kinds(events_b_), (std::vector<Kind>{Kind::kEstablished, Kind::kSessionFailed}));
  EXPECT_EQ(events_b_[1].error.code, Code::kNotFound) << events_b_[1].error.to_string();
  EXPECT_NE(events_b_[1].error.message.find("not held here"), std::string::npos);
  EXPECT_TRUE(sink_b_.committed.empty());
  EXPECT_EQ(a_->sessions(), 0u);
  EXPECT_EQ(b_->sessions(), 0u);
}

TEST_F(TransferConnectionTest, SessionsShareTheChannelFairly) {
  window_chunks_ = 64;  // Deep enough that one greedy session could fill every round alone.
  Connect();
  std::vector<std::uint64_t> ids;
  std::vector<ChunkId> roots;
  for (int i = 0; i < 3; ++i) {
    roots.push_back(Snapshot(store_a_, 60, static_cast<std::uint8_t>(70 * i), 0));  // 501-byte chunks.
    auto id = a_->offer(now_, store_a_, "p" + std::to_string(i), roots.back(), 0);
    ASSERT_TRUE(id);
    ids.push_back(*id);
  }
  auto sent = [&] {
    std::vector<std::uint64_t> out;
    for (std::uint64_t id : ids) {
      auto p = a_->progress(id);
      out.push_back(p ? p->chunks_transferred : 0);
    }
    return out;
  };
  // Until every session has its manifest across and data requested.
  auto least = [&] {
    const auto counts = sent();
    return *std::min_element(counts.begin(), counts.end());
  };
  for (int i = 0; i < 10 && least() < 2; ++i) {
    Step();
  }
  const auto before = sent();
  ASSERT_GE(*std::min_element(before.begin(), before.end()), 2u);
  // One fill round (about 4000 bytes, eight 502-byte chunks): the sessions take turns.
  auto tx = a_->poll_transmit(now_);
  ASSERT_TRUE(tx);
  const auto after = sent();
  std::vector<std::uint64_t> delta;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    delta.push_back(after[i] - before[i]);
  }
  const auto [low, high] = std::minmax_element(delta.begin(), delta.end());
  EXPECT_GE(*low, 2u);
  EXPECT_LE(*high - *low, 1u);
  b_->on_bytes(now_, *tx);
  Pump();
  for (const ChunkId& root : roots) {
    EXPECT_TRUE(sink_b_.committed.contains(root));
  }
}

TEST_F(TransferConnectionTest, RefusedOfferFailsTheSenderWithTheReceiversReason) {
  Connect();
  const ChunkId s = Snapshot(store_a_, 3, 7);
  ASSERT_TRUE(a_->offer(now_, store_a_, "refused", s, 0));
  Pump();
  ASSERT_EQ(Kinds(events_a_), (std::vector<Kind>{Kind::kEstablished, Kind::kSessionFailed}));
  EXPECT_EQ(events_a_[1].error.code, Code::kFailedPrecondition);
  EXPECT_EQ(events_a_[1].role, SessionRole::kSender);
  EXPECT_EQ(events_a_[1].snapshot, s);
  EXPECT_EQ(sink_b_.puts, 0);
}

TEST_F(TransferConnectionTest, ChannelFailureFailsEveryOpenSession) {
  Connect();
  const ChunkId s = Snapshot(store_a_, 30, 9);
  auto id = a_->offer(now_, store_a_, "p", s, 0);
  ASSERT_TRUE(id);
  for (int i = 0; i < 6; ++i) {
    Step();
  }
  // An attacker flips a bit of the next record on its way to Bob.
  auto tx = a_->poll_transmit(now_);
  ASSERT_TRUE(tx);
  (*tx)[tx->size() / 2] ^= 0x10;
  b_->on_bytes(now_, *tx);
  Collect();
  EXPECT_EQ(b_->channel().fail_reason(), FailReason::kDecryptFailed);
  ASSERT_EQ(Kinds(events_b_), (std::vector<Kind>{Kind::kEstablished, Kind::kSessionFailed, Kind::kChannelFailed}));
  EXPECT_EQ(events_b_[1].error.code, Code::kAborted);
  EXPECT_EQ(events_b_[1].role, SessionRole::kReceiver);
  EXPECT_EQ(b_->sessions(), 0u);
  EXPECT_EQ(sink_b_.commit_calls, 0);
  // Alice learns from the socket closing (EOF without a close frame).
  a_->on_eof(now_);
  Collect();
  EXPECT_EQ(events_a_.back().kind, Kind::kChannelFailed);
  EXPECT_EQ(events_a_[events_a_.size() - 2].kind, Kind::kSessionFailed);
}

TEST_F(TransferConnectionTest, CloseEndsSessionsOnBothSides) {
  Connect();
  const ChunkId s = Snapshot(store_a_, 30, 21);
  ASSERT_TRUE(a_->offer(now_, store_a_, "p", s, 0));
  for (int i = 0; i < 3; ++i) {
    Step();
  }
  ASSERT_EQ(b_->sessions(), 1u);
  a_->close(now_);
  Pump();
  EXPECT_EQ(Kinds(events_a_), (std::vector<Kind>{Kind::kEstablished, Kind::kSessionFailed, Kind::kChannelClosed}));
  EXPECT_EQ(Kinds(events_b_), (std::vector<Kind>{Kind::kEstablished, Kind::kSessionFailed, Kind::kChannelClosed}));
  EXPECT_EQ(events_b_[1].error.code, Code::kAborted);
  EXPECT_EQ(a_->channel().state(), ChannelState::kClosed);
  EXPECT_EQ(b_->channel().state(), ChannelState::kClosed);
  EXPECT_EQ(sink_b_.commit_calls, 0);
  EXPECT_FALSE(a_->offer(now_, store_a_, "p", s, 0));
}

TEST_F(TransferConnectionTest, SessionStallIsADeadline) {
  idle_timeout_ = seconds(600);  // So the session's stall timer, not the channel's, fires.
  Connect();
  const ChunkId s = Snapshot(store_a_, 3, 8);
  ASSERT_TRUE(a_->offer(now_, store_a_, "p", s, 0));
  ASSERT_TRUE(a_->poll_transmit(now_));  // The offer leaves; Bob never answers.
  const Instant offered = now_;
  while (events_a_.size() < 2) {
    const auto deadline = a_->next_deadline();
    ASSERT_TRUE(deadline);
    now_ = *deadline;
    a_->on_timer(now_);
    while (a_->poll_transmit(now_)) {  // Keepalives and the kEnd go nowhere.
    }
    Collect();
  }
  ASSERT_EQ(Kinds(events_a_), (std::vector<Kind>{Kind::kEstablished, Kind::kSessionFailed}));
  EXPECT_EQ(events_a_[1].error.code, Code::kDeadlineExceeded);
  EXPECT_EQ(now_ - offered, seconds(60));
  EXPECT_TRUE(a_->channel().established());
}

}  // namespace
}  // namespace shoal::transfer
