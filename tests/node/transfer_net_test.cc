// TransferNet over real loopback sockets between two snapshot stores, driven
// by running the libuv loop until the expected callback happened (a watchdog
// timer bounds each wait), and the token bucket against virtual time.

#include "node/agent/transfer_net.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <memory>

#include "node/agent/uv_util.h"
#include "tests/storage/tree_util.h"

namespace shoal::agent {
namespace {

namespace fs = std::filesystem;

TEST(TransferTokenBucket, UnlimitedAlwaysAllows) {
  TokenBucket b;
  b.charge(1 << 30);
  EXPECT_TRUE(b.allow(instant_from_us(0)));
  EXPECT_EQ(b.wait(instant_from_us(0)), Duration{});
}

TEST(TransferTokenBucket, HoldsTheRateOverTenSeconds) {
  TokenBucket b;
  const std::uint64_t rate = 1'000'000;  // 1 MB/s.
  b.set_rate(rate, instant_from_us(0));
  // A greedy sender writing 64 KiB pieces whenever allowed, for 10 virtual seconds.
  std::uint64_t sent = 0;
  Instant now = instant_from_us(0);
  const Instant end = instant_from_us(10'000'000);
  while (now < end) {
    if (b.allow(now)) {
      b.charge(65536);
      sent += 65536;
    } else {
      now += b.wait(now);
    }
  }
  const double rate_seen = static_cast<double>(sent) / 10.0;
  EXPECT_NEAR(rate_seen, static_cast<double>(rate), 0.05 * static_cast<double>(rate));
}

TEST(TransferTokenBucket, WaitIsWhenTheDebtIsPaid) {
  TokenBucket b;
  b.set_rate(1000, instant_from_us(0));  // Burst: the 64 KiB floor.
  b.charge(64 * 1024 + 500);             // 500 bytes (plus the one token allow() needs) in debt.
  EXPECT_FALSE(b.allow(instant_from_us(0)));
  const Duration w = b.wait(instant_from_us(0));
  EXPECT_GE(w, milliseconds(500));
  EXPECT_LE(w, milliseconds(502));
  EXPECT_TRUE(b.allow(instant_from_us(0) + w));
}

std::int64_t test_now_ns() {
  struct timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return (static_cast<std::int64_t>(ts.tv_sec) + 100) * 1'000'000'000;
}

class TransferNetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    crypto_init();
    base_ = fs::temp_directory_path() / ("shoal-xnet-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    fs::create_directories(base_);
    auto a = storage::SnapshotStore::open((base_ / "a").string());
    auto b = storage::SnapshotStore::open((base_ / "b").string());
    ASSERT_TRUE(a && b);
    store_a_ = std::move(*a);
    store_b_ = std::move(*b);
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    auto authorize = [this](const NodeId&, const PublicKey& key) -> Status {
      if (key == alice_.public_key() || key == bob_.public_key()) {
        return {};
      }
      return make_error(Code::kPermissionDenied, "not a member");
    };
    a_ = std::make_unique<TransferNet>(&loop_, alice_, ring_, rng_, *store_a_, authorize);
    b_ = std::make_unique<TransferNet>(&loop_, bob_, ring_, rng_, *store_b_, authorize);
    ASSERT_TRUE(b_->listen(Address{"127.0.0.1", 0}));
    a_->set_on_finished([this](const TransferInfo& t) { finished_a_.push_back(t); });
    b_->set_on_finished([this](const TransferInfo& t) { finished_b_.push_back(t); });
  }
  void TearDown() override {
    a_->close();
    b_->close();
    uv_run(&loop_, UV_RUN_DEFAULT);
    a_.reset();
    b_.reset();
    EXPECT_EQ(uv_loop_close(&loop_), 0);
    store_a_.reset();
    store_b_.reset();
    fs::remove_all(base_);
  }

  bool RunUntil(const std::function<bool()>& done, std::uint64_t timeout_ms = 60'000) {
    uv_timer_t watchdog;
    uv_timer_init(&loop_, &watchdog);
    bool expired = false;
    watchdog.data = &expired;
    uv_timer_start(&watchdog, [](uv_timer_t* t) { *static_cast<bool*>(t->data) = true; }, timeout_ms, 0);
    while (!done() && !expired) {
      uv_run(&loop_, UV_RUN_ONCE);
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&watchdog), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    return done();
  }

  storage::SnapshotInfo Save(const std::string& project, std::uint64_t seed, int files) {
    src_ = (base_ / ("src" + std::to_string(seed))).string();
    storage::testing::make_random_tree(src_, seed, files);
    auto r = store_a_->create(storage::CreateOptions{.project = project, .source_dir = src_, .now_ns = test_now_ns()});
    EXPECT_TRUE(r) << r.error().to_string();
    return r->snapshot;
  }
  TransferPeer Bob() { return TransferPeer{.name = "bob", .address = b_->bound_address(), .key = bob_.public_key()}; }

  fs::path base_;
  std::string src_;
  std::unique_ptr<storage::SnapshotStore> store_a_, store_b_;
  uv_loop_t loop_{};
  Prng rng_{31};
  Identity alice_ = Identity::generate(rng_);
  Identity bob_ = Identity::generate(rng_);
  Identity mallory_ = Identity::generate(rng_);
  Keyring ring_{generate_cluster_key(rng_)};
  std::unique_ptr<TransferNet> a_, b_;
  std::vector<TransferInfo> finished_a_, finished_b_;
};

TEST_F(TransferNetTest, PushedSnapshotRestoresByteIdenticalOnTheReceiver) {
  const auto s = Save("p", 1, 30);
  auto id = a_->push(Bob(), "p", s.id);
  ASSERT_TRUE(id) << id.error().to_string();
  ASSERT_TRUE(RunUntil([&] { return !finished_a_.empty() && !finished_b_.empty(); }));
  ASSERT_EQ(finished_a_[0].state, TransferState::kDone) << finished_a_[0].error.to_string();
  ASSERT_EQ(finished_b_[0].state, TransferState::kDone) << finished_b_[0].error.to_string();
  EXPECT_EQ(finished_a_[0].id, *id);
  EXPECT_GT(a_->metrics().chunks_sent, 0u);
  EXPECT_EQ(a_->metrics().chunks_sent, b_->metrics().chunks_received);
  EXPECT_EQ(b_->metrics().channel.handshakes_completed, 1u);

  auto held = store_b_->find(to_hex(s.id), "p");
  ASSERT_TRUE(held) << held.error().to_string();
  const std::string out = (base_ / "out").string();
  auto r = store_b_->restore(*held, out);
  ASSERT_TRUE(r && r->damaged.empty());
  EXPECT_EQ(storage::testing::describe(out), storage::testing::describe(src_));
  auto report = store_b_->verify({*held});
  ASSERT_TRUE(report);
  EXPECT_TRUE(report->clean());

  // Again: the receiver holds it, nothing is sent, and the connection is reused.
  ASSERT_TRUE(a_->push(Bob(), "p", s.id));
  ASSERT_TRUE(RunUntil([&] { return finished_a_.size() == 2; }));
  ASSERT_TRUE(RunUntil([&] { return finished_b_.size() == 2; }));
  EXPECT_EQ(finished_a_[1].state, TransferState::kDone);
  EXPECT_EQ(finished_a_[1].progress.chunks_transferred, 0u);
  EXPECT_TRUE(finished_b_[1].progress.snapshot_already_held);
  EXPECT_EQ(a_->metrics().connections_out, 1u);
}

TEST_F(TransferNetTest, PulledSnapshotArrivesAndAnUnheldOneIsRefused) {
  const auto s = Save("p", 4, 10);
  // b pulls from a: a listens too.
  ASSERT_TRUE(a_->listen(Address{"127.0.0.1", 0}));
  const TransferPeer alice{.name = "alice", .address = a_->bound_address(), .key = alice_.public_key()};
  auto id = b_->pull(alice, "p", s.id);
  ASSERT_TRUE(id) << id.error().to_string();
  ASSERT_TRUE(RunUntil([&] { return !finished_a_.empty() && !finished_b_.empty(); }));
  ASSERT_EQ(finished_b_[0].state, TransferState::kDone) << finished_b_[0].error.to_string();
  EXPECT_EQ(finished_b_[0].id, *id);
  EXPECT_EQ(finished_b_[0].direction, TransferDirection::kReceive);
  EXPECT_EQ(finished_a_[0].state, TransferState::kDone);
  EXPECT_EQ(finished_a_[0].direction, TransferDirection::kSend);
  auto held = store_b_->find(to_hex(s.id), "p");
  ASSERT_TRUE(held) << held.error().to_string();
  const std::string out = (base_ / "out").string();
  ASSERT_TRUE(store_b_->restore(*held, out));
  EXPECT_EQ(storage::testing::describe(out), storage::testing::describe(src_));

  storage::ChunkId unheld{};
  unheld[0] = 1;
  ASSERT_TRUE(b_->pull(alice, "p", unheld));
  ASSERT_TRUE(RunUntil([&] { return finished_b_.size() == 2; }));
  EXPECT_EQ(finished_b_[1].state, TransferState::kFailed);
  EXPECT_EQ(finished_b_[1].error.code, Code::kNotFound) << finished_b_[1].error.to_string();
}

TEST_F(TransferNetTest, WrongPinnedKeyFailsTheHandshakeAndStoresNothing) {
  const auto s = Save("p", 2, 5);
  TransferPeer wrong = Bob();
  wrong.key = mallory_.public_key();
  ASSERT_TRUE(a_->push(wrong, "p", s.id));
  ASSERT_TRUE(RunUntil([&] { return !finished_a_.empty(); }));
  EXPECT_EQ(finished_a_[0].state, TransferState::kFailed);
  EXPECT_EQ(finished_a_[0].error.code, Code::kPermissionDenied) << finished_a_[0].error.to_string();
  EXPECT_EQ(a_->metrics().channel.failed(transfer::FailReason::kPeerKeyRejected), 1u);
  auto listed = store_b_->list();
  ASSERT_TRUE(listed);
  EXPECT_TRUE(listed->empty());
}

TEST_F(TransferNetTest, UnknownSnapshotIsRefusedBeforeDialing) {
  auto id = a_->push(Bob(), "p", storage::ChunkId{});
  ASSERT_FALSE(id);
  EXPECT_EQ(id.error().code, Code::kNotFound);
  EXPECT_EQ(a_->connections(), 0u);
}

TEST_F(TransferNetTest, BandwidthLimitSlowsTheTransfer) {
  const auto s = Save("p", 3, 20);
  a_->set_rate_limit(2'000'000);  // 2 MB/s.
  const std::uint64_t start = uv_now(&loop_);
  ASSERT_TRUE(a_->push(Bob(), "p", s.id));
  ASSERT_TRUE(RunUntil([&] { return !finished_a_.empty(); }));
  uv_update_time(&loop_);
  const double elapsed_s = static_cast<double>(uv_now(&loop_) - start) / 1000.0;
  ASSERT_EQ(finished_a_[0].state, TransferState::kDone) << finished_a_[0].error.to_string();
  const double wire = static_cast<double>(a_->metrics().wire_bytes_out);
  // The burst (0.2 MB) is free; everything after it is paced.
  EXPECT_GE(elapsed_s, (wire - 200'000) / 2'000'000 * 0.95) << wire << " bytes in " << elapsed_s << " s";
}

TEST_F(TransferNetTest, RefusedConnectionIsRetriedWithBackoffThenFails) {
  const auto s = Save("p", 4, 3);
  std::vector<std::pair<TransferEventKind, std::uint32_t>> events;
  a_->set_on_event([&](TransferEventKind kind, const TransferInfo& t) { events.emplace_back(kind, t.attempts); });
  a_->set_attempts_max(3);
  // A port nobody listens on: bind one, note it, close it.
  TransferPeer nobody = Bob();
  {
    uv_tcp_t probe;
    uv_tcp_init(&loop_, &probe);
    auto addr = to_sockaddr(Address{"127.0.0.1", 0});
    ASSERT_TRUE(addr);
    ASSERT_EQ(uv_tcp_bind(&probe, reinterpret_cast<const sockaddr*>(&*addr), 0), 0);
    sockaddr_storage name{};
    int len = sizeof name;
    uv_tcp_getsockname(&probe, reinterpret_cast<sockaddr*>(&name), &len);
    nobody.address = from_sockaddr(reinterpret_cast<const sockaddr*>(&name));
    uv_close(reinterpret_cast<uv_handle_t*>(&probe), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
  }
  const std::uint64_t start = uv_now(&loop_);
  auto id = a_->push(nobody, "p", s.id);
  ASSERT_TRUE(id);
  // While waiting for the next attempt the transfer is listed as retrying, with the reason.
  ASSERT_TRUE(RunUntil([&] { return a_->transfer(*id)->state == TransferState::kRetrying; }));
  EXPECT_EQ(a_->transfer(*id)->error.code, Code::kUnavailable) << a_->transfer(*id)->error.to_string();
  ASSERT_TRUE(RunUntil([&] { return !finished_a_.empty(); }));
  uv_update_time(&loop_);
  EXPECT_EQ(finished_a_[0].state, TransferState::kFailed);
  EXPECT_EQ(finished_a_[0].attempts, 3u);
  EXPECT_EQ(a_->metrics().transfer_retries, 2u);
  // Backoff 250 ms then 500 ms, each +-25%.
  EXPECT_GE(uv_now(&loop_) - start, 500u);
  using K = TransferEventKind;
  const std::vector<std::pair<K, std::uint32_t>> want = {
      {K::kStarted, 1}, {K::kRetrying, 1}, {K::kRetrying, 2}, {K::kFailed, 3}};
  EXPECT_EQ(events, want);
}

TEST_F(TransferNetTest, SecondPushOfTheSameSnapshotJoinsTheRunningOne) {
  const auto s = Save("p", 7, 10);
  auto first = a_->push(Bob(), "p", s.id);
  auto second = a_->push(Bob(), "p", s.id);
  ASSERT_TRUE(first && second);
  EXPECT_EQ(*first, *second);
  ASSERT_TRUE(RunUntil([&] { return !finished_a_.empty(); }));
  EXPECT_EQ(finished_a_[0].state, TransferState::kDone);
  auto third = a_->push(Bob(), "p", s.id);  // Finished: a new transfer (the peer holds it: nothing sent).
  ASSERT_TRUE(third);
  EXPECT_NE(*third, *first);
}

TEST_F(TransferNetTest, PermissionDeniedIsNotRetried) {
  const auto s = Save("p", 5, 3);
  TransferPeer wrong = Bob();
  wrong.key = mallory_.public_key();
  ASSERT_TRUE(a_->push(wrong, "p", s.id));
  ASSERT_TRUE(RunUntil([&] { return !finished_a_.empty(); }));
  EXPECT_EQ(finished_a_[0].attempts, 1u);
  EXPECT_EQ(a_->metrics().transfer_retries, 0u);
}

TEST_F(TransferNetTest, EventsReportStartAndCompletionOnBothEnds) {
  const auto s = Save("p", 6, 10);
  std::vector<TransferEventKind> ev_a, ev_b;
  a_->set_on_event([&](TransferEventKind kind, const TransferInfo&) { ev_a.push_back(kind); });
  b_->set_on_event([&](TransferEventKind kind, const TransferInfo&) { ev_b.push_back(kind); });
  ASSERT_TRUE(a_->push(Bob(), "p", s.id));
  ASSERT_TRUE(RunUntil([&] { return !finished_a_.empty() && !finished_b_.empty(); }));
  ASSERT_GE(ev_a.size(), 2u);
  ASSERT_GE(ev_b.size(), 2u);
  EXPECT_EQ(ev_a.front(), TransferEventKind::kStarted);
  EXPECT_EQ(ev_a.back(), TransferEventKind::kCompleted);
  EXPECT_EQ(ev_b.front(), TransferEventKind::kStarted);
  EXPECT_EQ(ev_b.back(), TransferEventKind::kCompleted);
  for (std::size_t i = 1; i + 1 < ev_a.size(); ++i) {
    EXPECT_EQ(ev_a[i], TransferEventKind::kProgress);  // A short transfer may have none.
  }
}

}  // namespace
}  // namespace shoal::agent
