// GossipNet over real loopback sockets, driven by running the libuv loop until
// the expected callback happened (no sleeps; a watchdog timer bounds each wait).

#include "node/agent/gossip_net.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <vector>

#include "node/agent/limits.h"
#include "node/agent/stream_wire.h"

namespace shoal::agent {
namespace {

struct Recorder final : GossipNetHandler {
  struct Result {
    std::uint64_t id;
    gossip::StreamOutcome outcome;
    Bytes reply;
  };
  void on_net_datagram(const Address& from, ByteView plaintext) override {
    datagrams.emplace_back(from, Bytes(plaintext.begin(), plaintext.end()));
  }
  shoal::Result<Bytes> on_net_stream_request(const Address& from, ByteView payload) override {
    requests.emplace_back(from, Bytes(payload.begin(), payload.end()));
    return Bytes{'p', 'o', 'n', 'g'};
  }
  void on_net_stream_result(std::uint64_t id, gossip::StreamOutcome outcome, ByteView reply) override {
    results.push_back({id, outcome, Bytes(reply.begin(), reply.end())});
  }
  std::vector<std::pair<Address, Bytes>> datagrams;
  std::vector<std::pair<Address, Bytes>> requests;
  std::vector<Result> results;
};

class GossipNetTest : public ::testing::Test {
 protected:
  static ClusterKey Key(std::uint8_t fill) {
    ClusterKey key;
    key.fill(fill);
    return key;
  }

  void SetUp() override {
    crypto_init();
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    a_ = Start(ring_, recorder_a_);
    b_ = Start(ring_, recorder_b_);
  }

  void TearDown() override {
    for (auto& net : nets_) {
      net->close();
    }
    uv_run(&loop_, UV_RUN_DEFAULT);
    nets_.clear();
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  GossipNet* Start(const Keyring& ring, Recorder& recorder) {
    // The kernel picks a free UDP port; TCP on the same number may be taken
    // by some other connection's local port, so try a few.
    for (int attempt = 0; attempt < 32; ++attempt) {
      nets_.push_back(std::make_unique<GossipNet>(&loop_, ring, random_, recorder));
      GossipNet* net = nets_.back().get();
      const Address any{"127.0.0.1", 0};
      if (net->listen(any, any).has_value()) {
        return net;
      }
      net->close();
    }
    ADD_FAILURE() << "no free port pair";
    return nets_.back().get();
  }

  // Runs the loop until done() holds; false if the watchdog fired first.
  bool RunUntil(const std::function<bool()>& done) {
    uv_timer_t watchdog;
    uv_timer_init(&loop_, &watchdog);
    bool expired = false;
    watchdog.data = &expired;
    uv_timer_start(&watchdog, [](uv_timer_t* t) { *static_cast<bool*>(t->data) = true; }, 5000, 0);
    while (!done() && !expired) {
      uv_run(&loop_, UV_RUN_ONCE);
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&watchdog), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    return done();
  }

  // Sends raw bytes to a net's UDP port from a plain socket.
  void SendRaw(const GossipNet& to, const Bytes& bytes) {
    const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(to.bound_address().port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::sendto(fd, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr),
              static_cast<ssize_t>(bytes.size()));
    ::close(fd);
  }

  gossip::StreamRequest Stream(std::uint64_t id, gossip::StreamKind kind, const Address& to) {
    return gossip::StreamRequest{id, kind, to, kind == gossip::StreamKind::kPushPull ? Bytes{'p', 'i', 'n', 'g'}
                                                                                     : Bytes{}};
  }

  uv_loop_t loop_{};
  Prng random_{3};
  Keyring ring_{Key(1)};
  Recorder recorder_a_;
  Recorder recorder_b_;
  std::vector<std::unique_ptr<GossipNet>> nets_;
  GossipNet* a_ = nullptr;
  GossipNet* b_ = nullptr;
};

TEST_F(GossipNetTest, DatagramArrivesOpenedWithSenderAddress) {
  a_->send(gossip::Datagram{b_->bound_address(), Bytes{1, 2, 3}});
  ASSERT_TRUE(RunUntil([&] { return !recorder_b_.datagrams.empty(); }));
  EXPECT_EQ(recorder_b_.datagrams[0].first, a_->bound_address());
  EXPECT_EQ(recorder_b_.datagrams[0].second, (Bytes{1, 2, 3}));
  EXPECT_EQ(a_->counters().packets_out, 1u);
  EXPECT_EQ(b_->counters().packets_in, 1u);
}

TEST_F(GossipNetTest, DatagramFromAnotherClusterIsCountedAsNoKey) {
  Recorder recorder_c;
  Keyring other(Key(2));
  GossipNet* c = Start(other, recorder_c);
  c->send(gossip::Datagram{b_->bound_address(), Bytes{1}});
  ASSERT_TRUE(RunUntil([&] { return b_->counters().drops.get(DropReason::kNoKey) == 1; }));
  EXPECT_TRUE(recorder_b_.datagrams.empty());
}

TEST_F(GossipNetTest, ShortDatagramIsCountedAsTooShort) {
  SendRaw(*b_, Bytes(5, 0));
  ASSERT_TRUE(RunUntil([&] { return b_->counters().drops.get(DropReason::kTooShort) == 1; }));
  EXPECT_TRUE(recorder_b_.datagrams.empty());
}

TEST_F(GossipNetTest, OversizedDatagramIsCountedAsOversized) {
  SendRaw(*b_, Bytes(kDatagramBytesMax + 1, 0));
  ASSERT_TRUE(RunUntil([&] { return b_->counters().drops.get(DropReason::kOversized) == 1; }));
}

TEST_F(GossipNetTest, FilteredPeerDatagramsAreDroppedBothWays) {
  b_->set_dropped_peers({a_->bound_address()});
  a_->send(gossip::Datagram{b_->bound_address(), Bytes{1}});
  b_->send(gossip::Datagram{a_->bound_address(), Bytes{2}});
  ASSERT_TRUE(RunUntil([&] { return b_->counters().drops.get(DropReason::kFiltered) == 2; }));
  EXPECT_TRUE(recorder_b_.datagrams.empty());
}

TEST_F(GossipNetTest, PushPullRoundTrip) {
  a_->start_stream(Stream(7, gossip::StreamKind::kPushPull, b_->bound_address()), std::chrono::milliseconds(500));
  ASSERT_TRUE(RunUntil([&] { return !recorder_a_.results.empty(); }));
  EXPECT_EQ(recorder_a_.results[0].id, 7u);
  EXPECT_EQ(recorder_a_.results[0].outcome, gossip::StreamOutcome::kReplied);
  EXPECT_EQ(recorder_a_.results[0].reply, (Bytes{'p', 'o', 'n', 'g'}));
  ASSERT_EQ(recorder_b_.requests.size(), 1u);
  EXPECT_EQ(recorder_b_.requests[0].first, a_->advertise_address());
  EXPECT_EQ(recorder_b_.requests[0].second, (Bytes{'p', 'i', 'n', 'g'}));
}

TEST_F(GossipNetTest, PushPullToAnotherClusterFails) {
  Recorder recorder_c;
  Keyring other(Key(2));
  GossipNet* c = Start(other, recorder_c);
  c->start_stream(Stream(1, gossip::StreamKind::kPushPull, b_->bound_address()), std::chrono::milliseconds(500));
  ASSERT_TRUE(RunUntil([&] { return !recorder_c.results.empty(); }));
  EXPECT_EQ(recorder_c.results[0].outcome, gossip::StreamOutcome::kFailed);
  EXPECT_TRUE(recorder_b_.requests.empty());
  EXPECT_EQ(b_->counters().drops.get(DropReason::kStreamNoKey), 1u);
}

TEST_F(GossipNetTest, ReachabilityOfListeningPeerIsConnected) {
  a_->start_stream(Stream(2, gossip::StreamKind::kReachability, b_->bound_address()), std::chrono::milliseconds(500));
  ASSERT_TRUE(RunUntil([&] { return !recorder_a_.results.empty(); }));
  EXPECT_EQ(recorder_a_.results[0].outcome, gossip::StreamOutcome::kConnected);
}

TEST_F(GossipNetTest, ReachabilityOfClosedPortIsRefused) {
  // A port nobody listens on any more: start a net, close it, probe its address.
  Recorder recorder_c;
  GossipNet* c = Start(ring_, recorder_c);
  const Address gone = c->bound_address();
  c->close();
  a_->start_stream(Stream(3, gossip::StreamKind::kReachability, gone), std::chrono::milliseconds(500));
  ASSERT_TRUE(RunUntil([&] { return !recorder_a_.results.empty(); }));
  EXPECT_EQ(recorder_a_.results[0].outcome, gossip::StreamOutcome::kRefused);
}

TEST_F(GossipNetTest, FilteredStreamWaitsAndConnectsWhenThePartitionHeals) {
  a_->set_dropped_peers({b_->bound_address()});
  a_->start_stream(Stream(4, gossip::StreamKind::kReachability, b_->bound_address()), std::chrono::milliseconds(5000));
  uv_run(&loop_, UV_RUN_NOWAIT);
  EXPECT_TRUE(recorder_a_.results.empty());
  a_->set_dropped_peers({});
  ASSERT_TRUE(RunUntil([&] { return !recorder_a_.results.empty(); }));
  EXPECT_EQ(recorder_a_.results[0].outcome, gossip::StreamOutcome::kConnected);
}

TEST_F(GossipNetTest, OversizedFrameClosesTheConnection) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(b_->bound_address().port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::uint32_t length = htonl(static_cast<std::uint32_t>(kFrameBytesMax + 1));
  ASSERT_EQ(::send(fd, &length, sizeof length, 0), 4);
  ASSERT_TRUE(RunUntil([&] { return b_->counters().streams_failed == 1; }));
  EXPECT_TRUE(recorder_b_.requests.empty());
  ::close(fd);
}

}  // namespace
}  // namespace shoal::agent
