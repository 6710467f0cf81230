// Ranking: determinism, one replica per DC, preferred-DC primary, weights,
// and how few projects move when a node joins or leaves.
#include "node/core/ranking.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <set>

namespace shoal::core {
namespace {

NodeId node(std::uint8_t a, std::uint8_t b = 0) {
  NodeId id;
  id.bytes[0] = a;
  id.bytes[1] = b;
  id.bytes[15] = 0x5a;
  return id;
}

std::vector<Candidate> mesh(int dcs, int per_dc) {
  std::vector<Candidate> out;
  for (int d = 0; d < dcs; ++d) {
    for (int i = 0; i < per_dc; ++i) {
      out.push_back({node(static_cast<std::uint8_t>(d + 1), static_cast<std::uint8_t>(i)),
                     std::string(1, static_cast<char>('a' + d)), 1.0});
    }
  }
  return out;
}

std::string dc_of(const std::vector<Candidate>& c, const NodeId& id) {
  for (const auto& x : c) {
    if (x.id == id) return x.dc;
  }
  return "?";
}

TEST(Ranking, SameAnswerWhateverTheInputOrder) {
  auto c = mesh(3, 4);
  const Target a = rank_placement("proj-1", c, "b", 3);
  std::reverse(c.begin(), c.end());
  const Target b = rank_placement("proj-1", c, "b", 3);
  EXPECT_EQ(a.replicas, b.replicas);
  EXPECT_EQ(a.primary, b.primary);
}

TEST(Ranking, OneReplicaPerDcAndPrimaryInPreferredDc) {
  const auto c = mesh(3, 5);
  for (int p = 0; p < 200; ++p) {
    const std::string project = "p" + std::to_string(p);
    const Target t = rank_placement(project, c, "c", 3);
    ASSERT_EQ(t.replicas.size(), 3u);
    std::set<std::string> dcs;
    for (const auto& r : t.replicas) dcs.insert(dc_of(c, r));
    EXPECT_EQ(dcs.size(), 3u) << project;
    EXPECT_EQ(dc_of(c, t.primary), "c") << project;
    EXPECT_EQ(t.replicas.front(), t.primary);
  }
}

TEST(Ranking, PreferredDcWithoutNodesFallsBackToBestReplica) {
  const auto c = mesh(2, 3);
  const Target t = rank_placement("x", c, "zz", 3);
  ASSERT_EQ(t.replicas.size(), 3u);
  EXPECT_EQ(t.primary, t.replicas.front());
}

TEST(Ranking, FewerDcsThanFactorSpreadsAcrossNodes) {
  const auto c = mesh(1, 5);
  const Target t = rank_placement("x", c, "a", 3);
  ASSERT_EQ(t.replicas.size(), 3u);
  EXPECT_EQ(std::set<NodeId>(t.replicas.begin(), t.replicas.end()).size(), 3u);
  const auto two = mesh(2, 3);
  const Target u = rank_placement("y", two, "a", 3);
  ASSERT_EQ(u.replicas.size(), 3u);
  std::set<std::string> dcs;
  for (const auto& r : u.replicas) dcs.insert(dc_of(two, r));
  EXPECT_EQ(dcs.size(), 2u);  // Both DCs used before a second node of one.
}

TEST(Ranking, FewerCandidatesThanFactorTakesAllAndNoneGivesEmpty) {
  const auto c = mesh(1, 2);
  EXPECT_EQ(rank_placement("x", c, "a", 3).replicas.size(), 2u);
  EXPECT_TRUE(rank_placement("x", {}, "a", 3).replicas.empty());
}

TEST(Ranking, WeightTwoWinsAboutTwiceAsOften) {
  std::vector<Candidate> c = {{node(1), "a", 1.0}, {node(2), "a", 2.0}, {node(3), "a", 1.0}};
  int wins[3] = {0, 0, 0};
  const int projects = 20000;
  for (int p = 0; p < projects; ++p) {
    const Target t = rank_placement("w" + std::to_string(p), c, "a", 1);
    for (int i = 0; i < 3; ++i) {
      if (t.primary == c[static_cast<std::size_t>(i)].id) ++wins[i];
    }
  }
  // Expected shares 1/4, 1/2, 1/4.
  EXPECT_NEAR(wins[1] / static_cast<double>(projects), 0.5, 0.02);
  EXPECT_NEAR(wins[0] / static_cast<double>(projects), 0.25, 0.02);
}

double fraction_moved(const std::vector<Candidate>& before, const std::vector<Candidate>& after, int projects) {
  int moved = 0;
  for (int p = 0; p < projects; ++p) {
    const std::string project = "m" + std::to_string(p);
    const std::string dc(1, static_cast<char>('a' + p % 3));
    auto x = rank_placement(project, before, dc, 3).replicas;
    auto y = rank_placement(project, after, dc, 3).replicas;
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    if (x != y) ++moved;
  }
  return moved / static_cast<double>(projects);
}

TEST(Ranking, AddingOneNodeMovesAtMostItsShare) {
  const int projects = 30000;
  for (int per_dc : {4, 10, 33}) {
    const auto before = mesh(3, per_dc);
    auto after = before;
    after.push_back({node(2, 200), "b", 1.0});
    const double n = static_cast<double>(before.size());
    const double moved = fraction_moved(before, after, projects);
    std::printf("N=%d: adding one node moved %.4f of projects (R/N = %.4f, ratio %.3f)\n",
                static_cast<int>(n), moved, 3.0 / n, moved / (3.0 / n));
    EXPECT_LE(moved, 1.1 * 3.0 / n) << "N=" << n;
    EXPECT_GT(moved, 0.0);
  }
}

TEST(Ranking, RemovingANodeMovesOnlyProjectsThatRankedIt) {
  const auto before = mesh(3, 6);
  auto after = before;
  const NodeId gone = after[7].id;
  after.erase(after.begin() + 7);
  for (int p = 0; p < 5000; ++p) {
    const std::string project = "r" + std::to_string(p);
    const auto x = rank_placement(project, before, "a", 3).replicas;
    const auto y = rank_placement(project, after, "a", 3).replicas;
    if (std::find(x.begin(), x.end(), gone) == x.end()) {
      EXPECT_EQ(x, y) << project;
    } else {
      // Only the lost slot changes, and it is refilled in the same DC.
      int same = 0;
      for (const auto& r : y) same += std::find(x.begin(), x.end(), r) != x.end();
      EXPECT_EQ(same, 2) << project;
    }
  }
}

TEST(Ranking, RankInDcListsOnlyThatDcBestFirst) {
  const auto c = mesh(3, 4);
  const auto order = rank_in_dc("q", c, "b");
  ASSERT_EQ(order.size(), 4u);
  for (const auto& id : order) EXPECT_EQ(dc_of(c, id), "b");
  const Target t = rank_placement("q", c, "b", 3);
  EXPECT_EQ(order.front(), t.primary);
}

}  // namespace
}  // namespace shoal::core
