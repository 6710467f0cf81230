// Join, dissemination, leave and restart, driven on the fake network.
#include <gtest/gtest.h>

#include "tests/gossip/fake_network.h"

namespace shoal::gossip::testing {
namespace {

class MembershipTest : public ::testing::Test {
 protected:
  // Starts n nodes that all join node 0 at the same instant; returns the
  // virtual time until every node lists every other alive.
  Duration JoinAll(int n) {
    net_.add_and_join(n, 0);
    const Instant start = net_.now();
    EXPECT_TRUE(net_.run_until([&] { return net_.converged(); }, seconds(30))) << "no convergence for N=" << n;
    return net_.now() - start;
  }

  FakeNetwork net_{NetOptions{.seed = 42}};
};

TEST_F(MembershipTest, ThreeMembersConverge) {
  EXPECT_LE(JoinAll(3), milliseconds(100));
}

TEST_F(MembershipTest, TenMembersConverge) {
  EXPECT_LE(JoinAll(10), milliseconds(250));
}

TEST_F(MembershipTest, FiftyMembersConverge) {
  EXPECT_LE(JoinAll(50), milliseconds(500));
}

TEST_F(MembershipTest, HundredMembersConverge) {
  EXPECT_LE(JoinAll(100), seconds(1));
}

}  // namespace
}  // namespace shoal::gossip::testing
