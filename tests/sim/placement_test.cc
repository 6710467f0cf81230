// tests/sim/placement_test.cc: the placement layer (sim/placement.h) on a
// small faulty cluster: deterministic, measures failovers and saves, a sweep
// of seeds with zero violations, and each placement checker shown to fail
// under a deliberate, test-only bug.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "sim/report.h"
#include "sim/scenario.h"
#include "sim/world.h"

namespace shoal::sim {
namespace {

const std::string kSourceDir = SHOAL_SOURCE_DIR;

std::string ReadFile(const std::string& relative) {
  std::ifstream in(kSourceDir + "/" + relative);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

Scenario ParseText(const std::string& text) {
  auto sc = parse_scenario(text, "placement_small.toml");
  EXPECT_TRUE(sc.has_value()) << (sc ? "" : sc.error().message);
  return sc ? *sc : Scenario{};
}

// The ctest scenario, with `extra` lines appended to its [placement] table.
Scenario Small(const std::string& extra = "") {
  std::string text = ReadFile("tests/sim/data/placement_small.toml");
  const std::string anchor = "collect_interval = \"30s\"\n\n[[fault]]";
  const auto at = text.find(anchor);
  EXPECT_NE(at, std::string::npos);
  text.insert(at + std::string("collect_interval = \"30s\"\n").size(), extra);
  return ParseText(text);
}

std::string ViolationsText(const Report& r) {
  std::string out;
  for (const auto& v : r.violations) {
    out += std::to_string(v.at_s) + "s " + v.invariant + ": " + v.message + "\n";
  }
  return out;
}

TEST(PlacementScenarioTest, TableIsParsedAndChecked) {
  const Scenario sc = Small();
  EXPECT_TRUE(sc.placement.enabled);
  EXPECT_EQ(sc.placement.projects, 240u);
  EXPECT_EQ(sc.placement.replication_factor, 3u);
  EXPECT_DOUBLE_EQ(sc.placement.read_fault, 0.01);
  auto bad = parse_scenario("[[dc]]\nname = \"a\"\nnodes = 3\n[placement]\nprojects = 3\nbug = \"typo\"\n", "b.toml");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message.find("b.toml:6: placement.bug: unknown bug 'typo'"), std::string::npos)
      << bad.error().message;
  auto unknown = parse_scenario("[[dc]]\nname = \"a\"\nnodes = 3\n[placement]\nprojekts = 3\n", "u.toml");
  ASSERT_FALSE(unknown.has_value());
  EXPECT_NE(unknown.error().message.find("placement.projekts"), std::string::npos) << unknown.error().message;
}

TEST(PlacementTest, SmallFaultyRunFailsOverSavesAndIsDeterministic) {
  const Scenario sc = Small();
  const Report a = run_scenario(sc, 1);
  const Report b = run_scenario(sc, 1);
  EXPECT_EQ(a.hash, b.hash);
  EXPECT_EQ(a.violations_total, 0u) << ViolationsText(a);
  if (std::getenv("PLACEMENT_PRINT")) std::fputs(format_text(a).c_str(), stdout);
  const PlacementReport& p = a.placement;
  ASSERT_TRUE(p.enabled);
  EXPECT_GT(p.failovers, 0u);
  EXPECT_GT(p.moves, 0u);
  EXPECT_GT(p.saves_acked, 0u);
  EXPECT_GT(p.bytes_copied, 0u);
  EXPECT_GT(p.read_faults, 0u);
  EXPECT_GE(p.rereplicated_s, 0);
  EXPECT_NE(run_scenario(sc, 2).hash, a.hash);
}

// PLACEMENT_SEEDS=10000 runs the full sweep by hand. Every invariant
// (1, 2, 3, 4 and 6) must hold on every seed; convergence misses are also
// counted and printed, with the first unconverged project of each.
TEST(PlacementSweepTest, SeedsOfTheSmallFaultyClusterViolateNoInvariant) {
  const Scenario sc = Small();
  std::uint64_t seeds = 200;
  if (const char* env = std::getenv("PLACEMENT_SEEDS")) {
    seeds = std::strtoull(env, nullptr, 10);
  }
  std::uint64_t first = 1;
  if (const char* env = std::getenv("PLACEMENT_FIRST_SEED")) {
    first = std::strtoull(env, nullptr, 10);
  }
  std::string failures;
  std::string convergence;
  std::uint64_t failovers = 0;
  std::uint64_t unconverged_seeds = 0;
  for (std::uint64_t seed = first; seed < first + seeds; ++seed) {
    const Report r = run_scenario(sc, seed);
    failovers += r.placement.failovers;
    bool missed = false;
    for (const auto& v : r.violations) {
      if (v.invariant == "placement-convergence") {
        missed = true;
        convergence += "seed " + std::to_string(seed) + ": " + v.message + "\n";
      } else {
        failures += "seed " + std::to_string(seed) + ": " + v.invariant + ": " + v.message + "\n";
      }
    }
    unconverged_seeds += missed ? 1 : 0;
  }
  EXPECT_EQ(failures, "");
  EXPECT_EQ(convergence, "");
  EXPECT_GT(failovers, seeds);
  std::printf("%llu of %llu seeds missed placement convergence\n%s",
              static_cast<unsigned long long>(unconverged_seeds), static_cast<unsigned long long>(seeds),
              convergence.c_str());
}

// Every bundled placement and regression scenario (the 999-node benchmark
// aside): no invariant violated on seeds 1 and 2, and no copy left on a live
// node the placement does not list (the replaced system's invisible
// replicas). PLACEMENT_SCENARIO_SEEDS=N runs more seeds by hand.
TEST(PlacementScenarioSweep, BundledFaultScenariosViolateNothingAndLeaveNoStrayCopies) {
  std::uint64_t seeds = 2;
  if (const char* env = std::getenv("PLACEMENT_SCENARIO_SEEDS")) {
    seeds = std::strtoull(env, nullptr, 10);
  }
  int scenarios = 0;
  for (const char* dir : {"/sim/scenarios/placement", "/sim/scenarios/regression"}) {
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(kSourceDir + dir)) {
      if (entry.path().extension() == ".toml") files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    for (const auto& file : files) {
      auto sc = load_scenario(file.string());
      ASSERT_TRUE(sc.has_value()) << file << ": " << (sc ? "" : sc.error().message);
      if (sc->placement.projects > 10000) continue;  // dc_outage_999: a benchmark.
      ++scenarios;
      for (std::uint64_t seed = 1; seed <= seeds; ++seed) {
        const Report r = run_scenario(*sc, seed);
        EXPECT_EQ(ViolationsText(r), "") << file.filename() << " seed " << seed;
        EXPECT_EQ(r.placement.stray_copies_at_end, 0u) << file.filename() << " seed " << seed;
        EXPECT_GT(r.placement.commits, 0u) << file.filename();
        if (file.filename() == "invisible_copies.toml") {
          EXPECT_GT(r.placement.copies_collected, 0u);
        }
      }
    }
  }
  EXPECT_GE(scenarios, 10);
}

// Each placement checker reports its invariant when a deliberate bug breaks it.
TEST(PlacementCheckersCanFail, EachBugIsCaughtByItsChecker) {
  const struct {
    const char* bug;
    const char* checker;
  } cases[] = {
      {"skip_phase1", "one-writer"},
      {"ack_without_majority", "no-lost-snapshot"},
      {"delete_on_doubt", "no-deletion-on-doubt"},
      {"no_repair", "placement-convergence"},
      {"stale_read", "linearizable"},
  };
  for (const auto& c : cases) {
    const Scenario sc = Small(std::string("bug = \"") + c.bug + "\"\n");
    bool caught = false;
    std::string seen;
    for (std::uint64_t seed = 1; seed <= 5 && !caught; ++seed) {
      const Report r = run_scenario(sc, seed);
      for (const auto& v : r.violations) {
        caught = caught || v.invariant == c.checker;
        seen += v.invariant + " ";
      }
    }
    EXPECT_TRUE(caught) << c.bug << " was not caught by " << c.checker << "; saw: " << seen;
  }
}

}  // namespace
}  // namespace shoal::sim
