// PlacementService fed bad datagrams (what a node holding the cluster key,
// or a bug, could send): every one is counted as malformed and dropped, none
// is answered or written to the acceptor table, and the service still
// answers a well-formed request afterwards.
#include "node/agent/placement_service.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <unistd.h>

#include "base/random.h"
#include "node/agent/uv_util.h"
#include "node/core/paxos.h"

namespace shoal::agent {
namespace {

NodeId node(std::uint8_t b) {
  NodeId id;
  id.bytes.fill(b);
  return id;
}

Bytes framed(const NodeId& from, ByteView message) {
  Bytes out(1 + kNodeIdBytes + message.size());
  out[0] = kPlacementDatagramTag;
  std::copy(from.bytes.begin(), from.bytes.end(), out.begin() + 1);
  std::copy(message.begin(), message.end(), out.begin() + 1 + kNodeIdBytes);
  return out;
}

class PlacementServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("shoal-placement-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto env = storage::Env::open(dir_.string());
    ASSERT_TRUE(env.has_value()) << env.error().message;
    env_ = std::move(*env);
    auto service = PlacementService::open(*env_, node(1), std::uint64_t{1} << 32, random_,
                                          [this](const NodeId& to, Bytes plain) { sent_.emplace_back(to, std::move(plain)); });
    ASSERT_TRUE(service.has_value()) << service.error().message;
    service_ = std::move(*service);
  }
  void TearDown() override {
    service_.reset();
    env_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::filesystem::path dir_;
  Prng random_{7};
  std::unique_ptr<storage::Env> env_;
  std::unique_ptr<PlacementService> service_;
  std::vector<std::pair<NodeId, Bytes>> sent_;
};

TEST_F(PlacementServiceTest, GarbageIsCountedNeverAnsweredNeverStoredAndTheServiceGoesOn) {
  const NodeId peer = node(2);
  core::RegisterValue v;
  v.acceptors = {node(1), peer};
  v.placement.project = "proj";
  v.placement.version = 1;
  v.placement.epoch = 1;
  v.placement.primary = peer;
  v.placement.replicas = v.acceptors;
  const Bytes accept = core::encode_message(core::Accept{"proj", 0, {3, peer}, v, {4, peer}});

  std::vector<Bytes> bad = {
      Bytes(1, kPlacementDatagramTag),                                       // Tag only.
      Bytes(1 + kNodeIdBytes - 1, kPlacementDatagramTag),                   // Short sender id.
      framed(peer, {}),                                                      // No message.
      framed(peer, ByteView(accept.data(), accept.size() / 2)),             // Truncated.
      framed(peer, core::encode_message(core::Prepare{"bad/id", 0, {1, peer}})),  // Invalid project id.
  };
  Prng noise(42);
  for (int i = 0; i < 500; ++i) {  // Random bodies of random lengths.
    Bytes body(noise.next_u64() % 600);
    noise.fill(body);
    bad.push_back(framed(peer, body));
  }
  Bytes huge = framed(peer, Bytes(70000, 0xdd));  // Far above any datagram.
  bad.push_back(huge);

  for (const Bytes& datagram : bad) service_->on_datagram(datagram, monotonic_now());
  EXPECT_EQ(service_->counters().messages_in, bad.size());
  EXPECT_EQ(service_->counters().malformed, bad.size());
  EXPECT_TRUE(sent_.empty());
  EXPECT_EQ(service_->counters().durable_writes, 0u);
  auto values = service_->local_values();
  ASSERT_TRUE(values.has_value());
  EXPECT_TRUE(values->empty());

  // A well-formed Accept from the same peer: stored (durably) and answered.
  service_->on_datagram(framed(peer, accept), monotonic_now());
  EXPECT_EQ(service_->counters().malformed, bad.size());
  EXPECT_EQ(service_->counters().durable_writes, 1u);
  ASSERT_EQ(sent_.size(), 1u);
  EXPECT_EQ(sent_[0].first, peer);
  auto reply = core::decode_message(ByteView(sent_[0].second).subspan(1 + kNodeIdBytes));
  ASSERT_TRUE(reply.has_value()) << reply.error().message;
  EXPECT_TRUE(std::holds_alternative<core::Accepted>(*reply));
  auto stored = service_->local_value("proj");
  ASSERT_TRUE(stored.has_value() && stored->has_value());
  EXPECT_EQ((*stored)->placement, v.placement);
}

}  // namespace
}  // namespace shoal::agent
