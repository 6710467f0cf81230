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
    EXPECT_TRUE(net_.run_until([&] { return net_.converged(); }, seconds(30), milliseconds(1)))
        << "no convergence for N=" << n;
    RecordProperty("converged_ms", static_cast<int>(to_ms(net_.now() - start)));
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

namespace shoal::gossip::testing {
namespace {

class MembershipBehaviourTest : public ::testing::Test {
 protected:
  void Start(int n, NetOptions options = NetOptions{.seed = 3}) {
    net_ = std::make_unique<FakeNetwork>(std::move(options));
    net_->add_and_join(n, 0);
    ASSERT_TRUE(net_->run_until([&] { return net_->converged(); }, seconds(10)));
    net_->run_for(seconds(2));
  }
  bool AllSee(int subject, const std::function<bool(const Member&)>& pred) {
    for (int v : net_->up_nodes()) {
      auto m = net_->node(v).find(net_->id(subject));
      if (!m || !pred(*m)) {
        return false;
      }
    }
    return true;
  }
  FakeNetwork& net() { return *net_; }
  std::unique_ptr<FakeNetwork> net_;
};

TEST_F(MembershipBehaviourTest, GracefulLeaveShowsLeftNotDead) {
  Start(6);
  net().leave(3);
  EXPECT_EQ(net().node(3).self().status, MemberStatus::kLeft);
  ASSERT_TRUE(net().run_until([&] { return net().node(3).leave_done(net().now()); }, seconds(3)));
  net().crash(3, /*refused=*/true);  // The agent exits after leave_done.
  net().run_for(seconds(30));
  EXPECT_TRUE(net().all_see(3, MemberStatus::kLeft));
  EXPECT_EQ(net().count_events(EventKind::kDead, 3), 0);
  EXPECT_EQ(net().count_events(EventKind::kLeft, 3), 5);
}

TEST_F(MembershipBehaviourTest, LeaveIsDoneAfterTimeoutWhenAlone) {
  net_ = std::make_unique<FakeNetwork>();
  const int n = net().add_node();
  net().leave(n);
  net().run_for(seconds(3));
  EXPECT_TRUE(net().node(n).leave_done(net().now()));
}

TEST_F(MembershipBehaviourTest, HealthUpdateReachesAllSixtyFourQuickly) {
  Start(64);
  Health h;
  h.load_milli = 1234;
  h.free_disk_bytes = 5ull << 30;
  h.projects_hosted = 17;
  h.version = "0.2.0";
  const Instant start = net().now();
  net().command(7, [&](Membership& m, Instant now) { m.set_health(now, h); });
  ASSERT_TRUE(net().run_until([&] { return AllSee(7, [](const Member& m) { return m.health.load_milli == 1234; }); },
                              seconds(5), std::chrono::microseconds(500)));
  EXPECT_LE(net().now() - start, milliseconds(100));  // Target: 250 ms on real loopback.
  RecordProperty("reach_all_ms", static_cast<int>(to_ms(net().now() - start)));
  EXPECT_TRUE(AllSee(7, [](const Member& m) { return m.health.version == "0.2.0" && m.health.projects_hosted == 17; }));
  EXPECT_GE(net().count_events(EventKind::kHealthChanged, 7), 63);
  // The update dies out: its echo does not restart it, traffic returns to idle,
  // and news arriving after an idle spell is not mistaken for a pause.
  net().run_for(seconds(10));
  const std::uint64_t before = net().datagrams_sent();
  net().run_for(seconds(10));
  EXPECT_LE(static_cast<double>(net().datagrams_sent() - before) / 64.0 / 10.0, 2.2);
  for (int i : net().up_nodes()) {
    EXPECT_EQ(net().node(i).counters().pauses_detected, 0u) << "node " << i;
    EXPECT_EQ(net().node(i).local_health(), 0) << "node " << i;
  }
}

TEST_F(MembershipBehaviourTest, CatalogVersionReachesAllSixtyFourQuickly) {
  Start(64);
  const Instant start = net().now();
  net().command(9, [](Membership& m, Instant now) { m.set_catalog_version(now, 42); });
  ASSERT_TRUE(net().run_until([&] { return AllSee(9, [](const Member& m) { return m.catalog_version == 42; }); },
                              seconds(5), std::chrono::microseconds(500)));
  EXPECT_LE(net().now() - start, milliseconds(100));  // Target: 250 ms on real loopback.
  RecordProperty("reach_all_ms", static_cast<int>(to_ms(net().now() - start)));
  EXPECT_EQ(net().count_events(EventKind::kCatalogChanged, 9), 63);
  // Catalog changes do not touch incarnations.
  EXPECT_TRUE(AllSee(9, [](const Member& m) { return m.incarnation == 1; }));
}

TEST_F(MembershipBehaviourTest, IdleMeshSendsAboutTwoDatagramsPerSecondPerNode) {
  Start(32);
  net().run_for(seconds(40));  // Past the first push-pull and any leftover broadcasts.
  const std::uint64_t before = net().datagrams_sent();
  net().run_for(seconds(60));
  const double per_node_per_s = static_cast<double>(net().datagrams_sent() - before) / 32.0 / 60.0;
  EXPECT_LE(per_node_per_s, 2.2);
  EXPECT_GE(per_node_per_s, 1.8);  // One ping and one ack each per second.
}

TEST_F(MembershipBehaviourTest, WobblingLoadCostsNoExtraDatagrams) {
  Start(32);
  for (int i : net().up_nodes()) {  // One significant change each first (broadcast).
    Health h = net().node(i).self().health;
    h.load_milli = 1000;
    net().command(i, [&](Membership& m, Instant now) { m.set_health(now, h); });
  }
  net().run_for(seconds(40));
  const std::uint64_t before = net().datagrams_sent();
  for (int second = 0; second < 60; ++second) {
    for (int i : net().up_nodes()) {
      Health h = net().node(i).self().health;
      h.load_milli = 1000 + static_cast<std::uint32_t>((second * 37 + i * 11) % 200);  // +-0.2
      net().command(i, [&](Membership& m, Instant now) { m.set_health(now, h); });
    }
    net().run_for(seconds(1));
  }
  const double per_node_per_s = static_cast<double>(net().datagrams_sent() - before) / 32.0 / 60.0;
  EXPECT_LE(per_node_per_s, 2.2);
  // ...yet every change still reaches the members that probe us.
  int fresh = 0;
  for (int v : net().up_nodes()) {
    fresh += net().node(v).find(net().id(3))->health.load_milli >= 1000 ? 1 : 0;
  }
  EXPECT_GE(fresh, 16);
}

TEST(GossipHealthTest, SignificanceTable) {
  const Health base{1000, 100ull << 30, 0, 5, "0.1.0"};
  struct Case {
    std::function<void(Health&)> change;
    bool significant;
  };
  const Case cases[] = {
      {[](Health&) {}, false},
      {[](Health& h) { h.load_milli = 1400; }, false},    // +0.4
      {[](Health& h) { h.load_milli = 1500; }, true},     // +0.5 and 50 %
      {[](Health& h) { h.load_milli = 400; }, true},      // -0.6
      {[](Health& h) { h.free_disk_bytes = 95ull << 30; }, false},  // -5 %
      {[](Health& h) { h.free_disk_bytes = 80ull << 30; }, true},   // -20 %
      {[](Health& h) { h.projects_hosted = 6; }, true},
      {[](Health& h) { h.version = "0.2.0"; }, true},
      {[](Health& h) { h.local_health = 7; }, false},
  };
  for (std::size_t i = 0; i < std::size(cases); ++i) {
    Health after = base;
    cases[i].change(after);
    EXPECT_EQ(health_change_is_significant(base, after), cases[i].significant) << "case " << i;
  }
}

TEST_F(MembershipBehaviourTest, HealthDigestRidesOnProbesWithoutBroadcasts) {
  Start(4);
  // Local health changes are carried by ping/ack digests only.
  net().drop_inbound(2, true);
  net().run_for(seconds(3));
  net().drop_inbound(2, false);
  const int score = net().node(2).local_health();
  ASSERT_GT(score, 0);
  EXPECT_TRUE(net().run_until(
      [&] { return AllSee(2, [](const Member& m) { return m.health.local_health > 0; }); }, seconds(10)));
}

TEST_F(MembershipBehaviourTest, JoinRetriesUntilASeedAnswers) {
  net_ = std::make_unique<FakeNetwork>();
  const int seed = net().add_node();
  const int joiner = net().add_node();
  net().pause(seed);
  net().join(joiner, {seed});
  net().run_for(seconds(4));
  EXPECT_EQ(net().node(joiner).members().size(), 1u);
  net().resume(seed);
  ASSERT_TRUE(net().run_until([&] { return net().converged(); }, seconds(10)));
}

TEST_F(MembershipBehaviourTest, SameSeedGivesTheSameRun) {
  auto run = [](std::uint64_t seed) {
    FakeNetwork net{NetOptions{.seed = seed, .loss = 0.05}};
    net.add_and_join(12, 0);
    net.run_for(seconds(5));
    net.crash(4, false);
    net.run_for(seconds(20));
    std::vector<std::string> log;
    for (int i = 0; i < net.size(); ++i) {
      for (const Event& e : net.events(i)) {
        log.push_back(std::to_string(to_us(e.at)) + std::string(event_name(e.kind)) + e.member.name);
      }
    }
    return std::make_pair(log, net.datagrams_sent());
  };
  EXPECT_EQ(run(5), run(5));
  EXPECT_NE(run(5), run(6));
}

TEST_F(MembershipBehaviourTest, MembersListsSelfAndIsSortedByName) {
  Start(5);
  const auto members = net().node(2).members();
  ASSERT_EQ(members.size(), 5u);
  for (std::size_t i = 1; i < members.size(); ++i) {
    EXPECT_LT(members[i - 1].name, members[i].name);
  }
  EXPECT_EQ(net().node(2).self().name, "node-002");
  EXPECT_EQ(net().node(2).count(MemberStatus::kAlive), 5u);
  EXPECT_EQ(net().node(2).find(net().id(4))->addr, net().addr(4));
}

TEST_F(MembershipBehaviourTest, DeadMembersAreReapedAfterDeadReap) {
  net_ = std::make_unique<FakeNetwork>(NetOptions{.seed = 4, .base = [] {
                                                    Config c;
                                                    c.dead_reap = seconds(120);
                                                    return c;
                                                  }()});
  net().add_and_join(5, 0);
  ASSERT_TRUE(net().run_until([&] { return net().converged(); }, seconds(5)));
  net().crash(3, true);
  ASSERT_TRUE(net().run_until([&] { return net().all_see(3, MemberStatus::kDead); }, seconds(10)));
  net().run_for(seconds(200));
  for (int v : net().up_nodes()) {
    EXPECT_FALSE(net().node(v).find(net().id(3)).has_value()) << "node " << v;
    EXPECT_EQ(net().node(v).members().size(), 4u);
  }
}

// A mesh started from a saved member list (restore_members) instead of a
// join: every node knows every other at once, probes them, and detects a
// crash as a joined mesh does.
TEST(MembershipRestoreTest, RestoredMeshIsConvergedAndDetectsACrash) {
  FakeNetwork net(NetOptions{.seed = 11});
  constexpr int kNodes = 8;
  for (int i = 0; i < kNodes; ++i) {
    net.add_node();
  }
  std::vector<Member> saved;
  for (int i = 0; i < kNodes; ++i) {
    saved.push_back(net.node(i).self());
  }
  for (int i = 0; i < kNodes; ++i) {
    net.command(i, [&](Membership& m, Instant now) {
      EXPECT_EQ(m.restore_members(now, saved), static_cast<std::size_t>(kNodes - 1));  // Self is skipped.
      EXPECT_EQ(m.restore_members(now, saved), 0u);  // Already known.
    });
  }
  EXPECT_TRUE(net.converged());
  EXPECT_EQ(net.count_events(EventKind::kJoined), 0);  // Restoring is not news.
  net.run_for(seconds(20));
  EXPECT_TRUE(net.converged());
  EXPECT_EQ(net.count_events(EventKind::kSuspect), 0);
  EXPECT_GT(net.node(0).counters().probes_sent, 10u);
  net.crash(5, /*refused=*/true);
  EXPECT_TRUE(net.run_until([&] { return net.all_see(5, MemberStatus::kDead); }, seconds(20)));
}

TEST(MembershipRestoreTest, RestoreChecksIdentityAndKeepsVerdicts) {
  FakeNetwork net(NetOptions{.seed = 12});
  for (int i = 0; i < 4; ++i) {
    net.add_node();
  }
  Member alive = net.node(1).self();
  Member suspect = net.node(2).self();
  suspect.status = MemberStatus::kSuspect;
  suspect.incarnation = 7;
  Member dead = net.node(3).self();
  dead.status = MemberStatus::kDead;
  Member forged = alive;
  forged.name = "forged";
  forged.id.bytes[0] ^= 1;  // No longer the hash of its key.
  Member nameless = alive;
  nameless.name.clear();
  nameless.id.bytes[1] ^= 1;
  const std::vector<Member> saved = {net.node(0).self(), forged, nameless, alive, suspect, dead};
  net.command(0, [&](Membership& m, Instant now) { EXPECT_EQ(m.restore_members(now, saved), 3u); });
  Membership& core = net.node(0);
  EXPECT_EQ(core.counters().identity_rejected, 1u);
  EXPECT_EQ(core.counters().decode_errors, 1u);
  EXPECT_EQ(core.count(MemberStatus::kAlive), 3u);  // Self, node 1, node 2.
  EXPECT_EQ(core.count(MemberStatus::kDead), 1u);
  const auto two = core.find(net.id(2));
  ASSERT_TRUE(two.has_value());
  EXPECT_EQ(two->status, MemberStatus::kAlive);  // Suspicion is not restored: probing decides.
  EXPECT_EQ(two->incarnation, 7u);
  EXPECT_EQ(two->name, suspect.name);
  EXPECT_EQ(two->addr, suspect.addr);
  EXPECT_EQ(core.find(net.id(3))->status, MemberStatus::kDead);
}

}  // namespace
}  // namespace shoal::gossip::testing
