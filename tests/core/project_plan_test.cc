// Failover and replacement planning: only confirmed deaths move anything,
// only a replica holding the last acknowledged snapshot takes over.
#include "node/core/project_plan.h"

#include <gtest/gtest.h>

#include "node/core/health_weight.h"

namespace shoal::core {
namespace {

NodeId node(int i) {
  NodeId id;
  id.bytes[0] = static_cast<std::uint8_t>(i + 1);
  return id;
}

struct Fixture {
  std::vector<MemberInfo> members;
  Placement p;
  Fixture() {
    // Nodes 0,1 in a; 2,3 in b; 4,5 in c. Replicas 0 (primary), 2, 4.
    for (int i = 0; i < 6; ++i) members.push_back({node(i), std::string(1, static_cast<char>('a' + i / 2))});
    p.project = "proj";
    p.primary = node(0);
    p.replicas = {node(0), node(2), node(4)};
    p.epoch = 3;
    p.preferred_dc = "a";
  }
  void kill(int i) { members[static_cast<std::size_t>(i)].liveness = Liveness::kDead; }
};

TEST(PlanFailover, NothingWhilePrimaryIsAliveOrUnknown) {
  Fixture f;
  EXPECT_FALSE(plan_failover(f.p, f.members, node(2), true, true));
  f.members.erase(f.members.begin());  // Primary missing from the view: no information.
  EXPECT_FALSE(plan_failover(f.p, f.members, node(2), true, true));
  // Unless the caller's view is settled: then an absent primary is gone.
  auto next = plan_failover(f.p, f.members, node(2), true, true, true);
  ASSERT_TRUE(next);
  EXPECT_EQ(next->primary, node(2));
  EXPECT_EQ(next->epoch, 4u);
  EXPECT_FALSE(plan_failover(f.p, f.members, node(2), false, true, true));  // Still needs last_ack.
}

TEST(PlanFailover, ExactlyOneBestReplicaActsAtOnceOthersAfterGrace) {
  Fixture f;
  f.kill(0);
  int acting = 0;
  for (int i : {2, 4}) {
    if (auto next = plan_failover(f.p, f.members, node(i), true, false)) {
      ++acting;
      EXPECT_EQ(next->primary, node(i));
      EXPECT_EQ(next->epoch, 4u);
      EXPECT_EQ(next->replicas, f.p.replicas);
    }
  }
  EXPECT_EQ(acting, 1);
  EXPECT_TRUE(plan_failover(f.p, f.members, node(2), true, true));
  EXPECT_TRUE(plan_failover(f.p, f.members, node(4), true, true));
}

TEST(PlanFailover, NeverFromANodeLackingTheSnapshotOrNotAReplica) {
  Fixture f;
  f.kill(0);
  EXPECT_FALSE(plan_failover(f.p, f.members, node(2), false, true));
  EXPECT_FALSE(plan_failover(f.p, f.members, node(1), true, true));
}

TEST(PlanReplaceDead, ReplacesInTheSameDcOnlyOnThePrimary) {
  Fixture f;
  f.kill(2);
  EXPECT_FALSE(plan_replace_dead(f.p, f.members, node(4)));
  auto next = plan_replace_dead(f.p, f.members, node(0));
  ASSERT_TRUE(next);
  EXPECT_EQ(next->replicas, (std::vector<NodeId>{node(0), node(3), node(4)}));
  EXPECT_EQ(next->epoch, f.p.epoch);
}

TEST(PlanReplaceDead, WholeDcGoneSpreadsElsewhereAndNothingDeadMeansNoChange) {
  Fixture f;
  EXPECT_FALSE(plan_replace_dead(f.p, f.members, node(0)));
  f.kill(2);
  f.kill(3);
  auto next = plan_replace_dead(f.p, f.members, node(0));
  ASSERT_TRUE(next);
  EXPECT_FALSE(next->is_replica(node(2)));
  EXPECT_TRUE(next->is_replica(node(1)) || next->is_replica(node(5)));
  EXPECT_EQ(next->replicas.size(), 3u);
}

// A node that restarts after a replica died never hears of it (gossip drops
// dead records of members it never knew): once the caller's view is settled,
// an absent replica is replaced like a dead one; before, nothing moves.
TEST(PlanReplaceDead, AbsentReplicaIsReplacedOnlyOnceTheViewIsSettled) {
  Fixture f;
  f.p.last_ack.seq = 1;
  f.members.erase(f.members.begin() + 2);  // Replica 2 (dc b) unknown to the primary.
  EXPECT_FALSE(plan_replace_dead(f.p, f.members, node(0)));
  EXPECT_FALSE(plan_replace_dead(f.p, f.members, node(0), false));
  const PrimaryPlan unsettled = plan_primary_step(f.p, f.members, node(0), true, true,
                                                  [](const NodeId&) { return false; });
  EXPECT_EQ(unsettled.step, PrimaryStep::kCopySnapshot);  // Still copied to: no information, no move.
  auto next = plan_replace_dead(f.p, f.members, node(0), true);
  ASSERT_TRUE(next);
  EXPECT_FALSE(next->is_replica(node(2)));
  EXPECT_TRUE(next->is_replica(node(0)));
  EXPECT_TRUE(next->is_replica(node(4)));
  EXPECT_EQ(next->replicas.size(), 3u);
  EXPECT_EQ(next->epoch, f.p.epoch);
  const PrimaryPlan settled = plan_primary_step(f.p, f.members, node(0), true, true,
                                                [](const NodeId&) { return false; }, true);
  EXPECT_EQ(settled.step, PrimaryStep::kReplaceDead);
  ASSERT_TRUE(settled.wanted);
  EXPECT_EQ(settled.wanted->replicas, next->replicas);
  // Settled, every replica known and alive: nothing to replace.
  Fixture g;
  EXPECT_FALSE(plan_replace_dead(g.p, g.members, node(0), true));
}

// The first project id "proj-N" for which, at equal weights, `best` ranks
// first in dc b (nodes 2, 3) and node 4 first in dc c (nodes 4, 5).
std::string project_where_best_of_b_is(const NodeId& best) {
  const std::vector<Candidate> b = {{node(2), "b", 1.0}, {node(3), "b", 1.0}};
  const std::vector<Candidate> c = {{node(4), "c", 1.0}, {node(5), "c", 1.0}};
  for (int i = 0;; ++i) {
    std::string project = "proj-" + std::to_string(i);
    if (rank_in_dc(project, b, "b").front() == best && rank_in_dc(project, c, "c").front() == node(4)) return project;
  }
}

TEST(PlanRebalance, MovesANonPrimaryReplicaToABetterRankedSettledNodeOnly) {
  Fixture f;
  // Replicas 0 (primary, dc a), 2 (dc b), 4 (dc c). Pick a project id for
  // which node 3 outranks replica 2 in dc b, and 4 stays best in c.
  f.p.project = project_where_best_of_b_is(node(3));
  const auto next = plan_rebalance(f.p, f.members, f.members, node(0));
  {
    ASSERT_TRUE(next);
    EXPECT_TRUE(next->is_replica(node(3)));
    EXPECT_FALSE(next->is_replica(node(2)));
    EXPECT_EQ(next->primary, node(0));
    EXPECT_EQ(next->epoch, f.p.epoch);
  }
  // Not settled: node 3 absent from the settled view -> no move for b.
  std::vector<MemberInfo> settled = f.members;
  settled.erase(settled.begin() + 3);
  EXPECT_FALSE(plan_rebalance(f.p, settled, f.members, node(0)));
  // Only the primary plans; nothing while a replica is dead.
  EXPECT_FALSE(plan_rebalance(f.p, f.members, f.members, node(2)));
  f.kill(4);
  EXPECT_FALSE(plan_rebalance(f.p, f.members, f.members, node(0)));
}

TEST(PlanRebalance, AReplicaThatJustRestartedKeepsItsSlot) {
  Fixture f;
  // Replica 2 (dc b) is absent from the settled view (it restarted a moment
  // ago); node 3 is settled but ranks below it: nothing moves.
  f.p.project = project_where_best_of_b_is(node(2));
  std::vector<MemberInfo> settled = f.members;
  settled.erase(settled.begin() + 2);
  EXPECT_FALSE(plan_rebalance(f.p, settled, f.members, node(0)));
}

TEST(PlanRebalance, ADegradedReplicaLosesItsSlotToAHealthyNodeOfItsDc) {
  Fixture f;
  f.p.project = project_where_best_of_b_is(node(2));
  EXPECT_FALSE(plan_rebalance(f.p, f.members, f.members, node(0)));  // Healthy: 2 is the best of b.
  HealthSignals full_disk;
  full_disk.reported = true;
  full_disk.free_disk_bytes = 100 << 20;
  f.members[2].weight = health_weight(full_disk);
  const auto next = plan_rebalance(f.p, f.members, f.members, node(0));
  ASSERT_TRUE(next);
  EXPECT_TRUE(next->is_replica(node(3)));
  EXPECT_FALSE(next->is_replica(node(2)));
  EXPECT_TRUE(next->is_replica(node(4)));
}

TEST(HealthWeight, DegradedOnlyOnEvidence) {
  HealthSignals h;
  EXPECT_FALSE(is_degraded(h));  // Never reported: no information moves nothing.
  h.reported = true;
  h.free_disk_bytes = kLowFreeDiskBytes;
  EXPECT_FALSE(is_degraded(h));
  EXPECT_EQ(health_weight(h), 1.0);
  h.free_disk_bytes = kLowFreeDiskBytes - 1;
  EXPECT_TRUE(is_degraded(h));
  EXPECT_EQ(health_weight(h), kDegradedWeight);
  h.free_disk_bytes = kLowFreeDiskBytes * 10;
  h.local_health = kDegradedLocalHealth;
  EXPECT_TRUE(is_degraded(h));
  h.local_health = 0;
  h.stalled = true;
  EXPECT_TRUE(is_degraded(h));
}

TEST(PlanPrimaryStep, ReplaceThenOpenThenCopyAndNothingOnAReplica) {
  Fixture f;
  f.p.last_ack.seq = 2;
  const auto nobody_has = [](const NodeId&) { return false; };
  EXPECT_EQ(plan_primary_step(f.p, f.members, node(2), true, true, nobody_has).step, PrimaryStep::kNothing);
  f.kill(4);
  auto plan = plan_primary_step(f.p, f.members, node(0), true, false, nobody_has);
  EXPECT_EQ(plan.step, PrimaryStep::kReplaceDead);
  ASSERT_TRUE(plan.wanted);
  EXPECT_TRUE(plan.wanted->is_replica(node(5)));
  f.members[4].liveness = Liveness::kAlive;
  EXPECT_EQ(plan_primary_step(f.p, f.members, node(0), true, false, nobody_has).step, PrimaryStep::kOpenWorkdir);
  // Without the snapshot locally, neither open nor copy.
  EXPECT_EQ(plan_primary_step(f.p, f.members, node(0), false, false, nobody_has).step, PrimaryStep::kNothing);
  plan = plan_primary_step(f.p, f.members, node(0), true, true, nobody_has);
  EXPECT_EQ(plan.step, PrimaryStep::kCopySnapshot);
  EXPECT_EQ(plan.copy_to, (std::vector<NodeId>{node(2), node(4)}));
  EXPECT_EQ(plan_primary_step(f.p, f.members, node(0), true, true, [](const NodeId&) { return true; }).step,
            PrimaryStep::kNothing);
}

}  // namespace
}  // namespace shoal::core
