// Failure detection on the fake network: crashes (refused and silent),
// refutation, loss, local health, stalls, pauses and partitions.
#include <gtest/gtest.h>

#include "tests/gossip/fake_network.h"

namespace shoal::gossip::testing {
namespace {

class FailureTest : public ::testing::Test {
 protected:
  void Start(int n, NetOptions options = NetOptions{.seed = 7}) {
    net_ = std::make_unique<FakeNetwork>(std::move(options));
    net_->add_and_join(n, 0);
    ASSERT_TRUE(net_->run_until([&] { return net_->converged(); }, seconds(10)));
    net_->run_for(seconds(2));  // Let the join broadcasts settle.
  }
  // Virtual time until every up node sees `subject` with `status`.
  std::optional<Duration> TimeUntilAllSee(int subject, MemberStatus status, Duration limit) {
    const Instant start = net_->now();
    if (!net_->run_until([&] { return net_->all_see(subject, status); }, limit)) {
      return std::nullopt;
    }
    return net_->now() - start;
  }
  FakeNetwork& net() { return *net_; }

  std::unique_ptr<FakeNetwork> net_;
};

TEST_F(FailureTest, CrashWithRefusedConnectionIsDeadFast) {
  Start(32);
  net().crash(5, /*refused=*/true);
  auto t = TimeUntilAllSee(5, MemberStatus::kDead, seconds(30));
  ASSERT_TRUE(t.has_value());
  EXPECT_LE(*t, milliseconds(3000));
}

TEST_F(FailureTest, SilentCrashKeepsSwimTiming) {
  Start(10);
  net().crash(5, /*refused=*/false);
  auto t = TimeUntilAllSee(5, MemberStatus::kDead, seconds(60));
  ASSERT_TRUE(t.has_value());
  // suspicion_timeout_min for N=10 is 4 x 1 s: nobody may skip it.
  EXPECT_GE(*t, seconds(4));
  EXPECT_LE(*t, seconds(30));
}

}  // namespace
}  // namespace shoal::gossip::testing
