// tests/sim/sim_test.cc: the simulator drives real gossip cores; these tests
// check scenario parsing and its errors, determinism, asserted outcomes of
// small scenarios, that the checkers do catch a violation, and a sweep of
// 200 seeds over a small faulty cluster with zero violations.

#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>

#include "sim/invariants.h"
#include "sim/report.h"
#include "sim/scenario.h"
#include "sim/world.h"

namespace shoal::sim {
namespace {

const std::string kSourceDir = SHOAL_SOURCE_DIR;

Scenario Parse(const std::string& text) {
  auto sc = parse_scenario(text, "test.toml");
  EXPECT_TRUE(sc.has_value()) << (sc ? "" : sc.error().message);
  return sc ? *sc : Scenario{};
}

std::string ParseError(const std::string& text) {
  auto sc = parse_scenario(text, "bad.toml");
  EXPECT_FALSE(sc.has_value());
  return sc ? "" : sc.error().message;
}

Scenario Load(const std::string& relative) {
  auto sc = load_scenario(kSourceDir + "/" + relative);
  EXPECT_TRUE(sc.has_value()) << (sc ? "" : sc.error().message);
  return sc ? *sc : Scenario{};
}

std::string ViolationsText(const Report& r) {
  std::string out;
  for (const auto& v : r.violations) {
    out += std::to_string(v.at_s) + "s " + v.invariant + ": " + v.message + "\n";
  }
  return out;
}

constexpr const char* kTwoDcs = R"(
name = "two-dcs"
duration = "100s"
[[dc]]
name = "a"
nodes = 10
[[dc]]
name = "b"
nodes = 10
[network]
wan_latency_ms = 10
wan_jitter_ms = 1
[bounds]
detection = "30s"
convergence = "40s"
)";

// --- parsing ------------------------------------------------------------------

TEST(ScenarioTest, EveryBundledScenarioParses) {
  int count = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kSourceDir + "/sim/scenarios")) {
    if (entry.path().extension() != ".toml") {
      continue;
    }
    auto sc = load_scenario(entry.path().string());
    EXPECT_TRUE(sc.has_value()) << entry.path() << ": " << (sc ? "" : sc.error().message);
    ++count;
  }
  EXPECT_GE(count, 9);
}

TEST(ScenarioTest, DurationsAcceptUnitsAndBareSeconds) {
  EXPECT_EQ(*parse_duration("250ms"), milliseconds(250));
  EXPECT_EQ(*parse_duration("1.5s"), milliseconds(1500));
  EXPECT_EQ(*parse_duration("2m"), seconds(120));
  EXPECT_EQ(*parse_duration("3"), seconds(3));
  EXPECT_FALSE(parse_duration("3 parsecs").has_value());
  EXPECT_FALSE(parse_duration("-1s").has_value());
}

TEST(ScenarioTest, JoinWavesAddNodeSlots) {
  const Scenario sc = Parse(std::string(kTwoDcs) + R"(
[[fault]]
kind = "join"
at = "10s"
dc = "b"
count = 5
every = "10s"
times = 2
)");
  EXPECT_EQ(sc.initial_nodes(), 20u);
  EXPECT_EQ(sc.node_slots(), 30u);
}

TEST(ScenarioErrorTest, UnknownKeyNamesFileLineAndKey) {
  const std::string e = ParseError("duration = \"10s\"\n[[dc]]\nname = \"a\"\nnodes = 3\n[network]\nlatncy_ms = 3\n");
  EXPECT_EQ(e, "bad.toml:6: network.latncy_ms: unknown key");
}

TEST(ScenarioErrorTest, WrongTypeNamesTheKey) {
  const std::string e = ParseError("[[dc]]\nname = \"a\"\nnodes = \"three\"\n");
  EXPECT_EQ(e, "bad.toml:3: dc[0].nodes: expected an integer");
}

TEST(ScenarioErrorTest, UnknownFaultKindNamesTheFault) {
  const std::string e =
      ParseError("[[dc]]\nname = \"a\"\nnodes = 3\n[[fault]]\nkind = \"crsh\"\nat = \"1s\"\nnodes = [\"a-1\"]\n");
  EXPECT_NE(e.find("bad.toml:5: fault[0].kind: unknown fault kind 'crsh'"), std::string::npos) << e;
}

TEST(ScenarioErrorTest, MissingDataCentersIsAnError) {
  const std::string e = ParseError("duration = \"10s\"\n");
  EXPECT_NE(e.find("bad.toml:1: dc: required"), std::string::npos) << e;
}

TEST(ScenarioErrorTest, SyntaxErrorNamesTheLine) {
  const std::string e = ParseError("[[dc]]\nname = \"a\"\nnodes = = 3\n");
  EXPECT_EQ(e.rfind("bad.toml:3: ", 0), 0u) << e;
}

TEST(ScenarioErrorTest, OutOfRangeLossIsRejected) {
  const std::string e = ParseError("[[dc]]\nname = \"a\"\nnodes = 3\n[network]\nloss = 1.5\n");
  EXPECT_NE(e.find("bad.toml:5: network.loss: out of range"), std::string::npos) << e;
}

TEST(ScenarioErrorTest, UnknownDataCenterInPartition) {
  const std::string e = ParseError(std::string(kTwoDcs) +
                                   "[[fault]]\nkind = \"partition\"\nat = \"1s\"\ngroups = [[\"a\"], [\"z\"]]\n");
  EXPECT_NE(e.find("fault[0].groups: unknown data center 'z'"), std::string::npos) << e;
}

TEST(ScenarioErrorTest, InvalidGossipConfigIsAnErrorNotACrash) {
  const std::string e = ParseError(std::string(kTwoDcs) + "[gossip]\nprobe_timeout_ms = 5000\nprobe_interval_ms = 1000\n");
  EXPECT_NE(e.find("gossip"), std::string::npos) << e;
}

// --- determinism --------------------------------------------------------------

TEST(DeterminismTest, SameSeedSameHashDifferentSeedDifferentHash) {
  const Scenario sc = Load("tests/sim/data/small_faulty.toml");
  const Report a = run_scenario(sc, 42);
  const Report b = run_scenario(sc, 42);
  const Report c = run_scenario(sc, 43);
  EXPECT_EQ(a.hash.size(), 64u);
  EXPECT_EQ(a.hash, b.hash);
  EXPECT_EQ(a.events, b.events);
  EXPECT_EQ(a.net.datagrams_sent, b.net.datagrams_sent);
  EXPECT_NE(a.hash, c.hash);
}

// --- asserted outcomes ----------------------------------------------------------

TEST(OutcomeTest, SingleCrashIsDetectedByEveryLiveNodeWithinTheBound) {
  const Scenario sc = Parse(std::string(kTwoDcs) + "[[fault]]\nkind = \"crash\"\nat = \"30s\"\nnodes = [\"b-4\"]\n");
  const Report r = run_scenario(sc, 1);
  EXPECT_EQ(r.violations_total, 0u) << ViolationsText(r);
  ASSERT_EQ(r.full_dead_s.size(), 1u);
  ASSERT_EQ(r.first_dead_s.size(), 1u);
  EXPECT_LE(r.first_dead_s[0], r.full_dead_s[0]);
  EXPECT_LE(r.full_dead_s[0], to_seconds(sc.bounds.detection));
  EXPECT_EQ(r.crashes_incomplete, 0u);
  EXPECT_EQ(r.false_positives, 0u);
}

TEST(OutcomeTest, PartitionHealsAndMembershipConverges) {
  const Scenario sc = Parse(std::string(kTwoDcs) +
                            "[[fault]]\nkind = \"partition\"\nat = \"20s\"\ngroups = [[\"a\"], [\"b\"]]\nduration = \"30s\"\n");
  const Report r = run_scenario(sc, 1);
  EXPECT_EQ(r.violations_total, 0u) << ViolationsText(r);
  bool saw_heal = false;
  for (const auto& c : r.convergence) {
    if (c.what.starts_with("heal")) {
      saw_heal = true;
      EXPECT_GE(c.seconds, 0) << "never converged after " << c.what;
      EXPECT_LE(c.seconds, to_seconds(sc.bounds.convergence));
    }
  }
  EXPECT_TRUE(saw_heal);
  EXPECT_GT(r.net.dropped_partition, 0u);
}

TEST(OutcomeTest, DcOutageAndReturnConverges) {
  const Scenario sc = Parse(std::string(kTwoDcs) +
                            "[[fault]]\nkind = \"dc_outage\"\nat = \"20s\"\ndc = \"b\"\nduration = \"30s\"\n");
  const Report r = run_scenario(sc, 3);
  EXPECT_EQ(r.violations_total, 0u) << ViolationsText(r);
  ASSERT_FALSE(r.convergence.empty());
  EXPECT_GE(r.convergence.back().seconds, 0) << r.convergence.back().what;
}

TEST(OutcomeTest, ShortPauseIsNotDeclaredDead) {
  const Scenario sc = Parse(std::string(kTwoDcs) +
                            "[[fault]]\nkind = \"pause\"\nat = \"30s\"\nnodes = [\"a-2\"]\nduration = \"3s\"\n");
  const Report r = run_scenario(sc, 5);
  EXPECT_EQ(r.violations_total, 0u) << ViolationsText(r);
  EXPECT_EQ(r.false_positives, 0u);
}

TEST(OutcomeTest, GracefulLeaveAndRejoinConverge) {
  const Scenario sc = Parse(std::string(kTwoDcs) +
                            "[[fault]]\nkind = \"leave\"\nat = \"20s\"\nnodes = [\"a-1\"]\nduration = \"20s\"\n");
  const Report r = run_scenario(sc, 2);
  EXPECT_EQ(r.violations_total, 0u) << ViolationsText(r);
  EXPECT_EQ(r.false_positives, 0u);
}

TEST(CheckerTest, UndetectableCrashIsReportedAsAViolation) {
  // Probing once every 100 s cannot detect a crash within 10 s.
  const Scenario sc = Parse(R"(
duration = "40s"
[[dc]]
name = "a"
nodes = 10
[gossip]
probe_interval_ms = 100000
push_pull_interval_ms = 3600000
[bounds]
detection = "10s"
[[fault]]
kind = "crash"
at = "20s"
nodes = ["a-3"]
)");
  const Report r = run_scenario(sc, 1);
  ASSERT_GE(r.violations_total, 1u);
  EXPECT_EQ(r.violations[0].invariant, "detection");
  EXPECT_NE(r.violations[0].message.find("a-3"), std::string::npos);
}

TEST(CheckerTest, AddedCheckersSeeEveryEventAndFault) {
  struct Counting final : Checker {
    std::string_view name() const override { return "counting"; }
    void on_fault(World&, const FaultRecord&) override { ++faults; }
    void after_event(World&) override { ++events; }
    int faults = 0;
    std::uint64_t events = 0;
  };
  const Scenario sc = Parse(std::string(kTwoDcs) + "[[fault]]\nkind = \"crash\"\nat = \"30s\"\nnodes = [\"b-4\"]\n");
  WorldOptions options;
  options.seed = 9;
  World world(sc, options);
  auto counting = std::make_unique<Counting>();
  Counting* c = counting.get();
  world.add_checker(std::move(counting));
  world.run();
  EXPECT_EQ(c->faults, 2);  // Bootstrap and the crash.
  EXPECT_EQ(c->events, world.report().events);
}

// Compares the view mirror with what each core reports; returns the pairs compared.
std::uint32_t CompareMirrorWithCores(const World& world) {
  std::uint32_t compared = 0;
  for (std::uint32_t o = 0; o < world.node_count(); ++o) {
    const gossip::Membership* core = world.core(o);
    if (core == nullptr) {
      continue;
    }
    for (const auto& m : core->members()) {
      if (m.id == core->self_id()) {
        continue;
      }
      std::uint32_t s = 0;
      while (s < world.node_count() && world.node_name(s) != m.name) {
        ++s;
      }
      EXPECT_LT(s, world.node_count()) << m.name;
      if (s == world.node_count()) {
        continue;
      }
      const View v = world.view(o, s);
      const bool alive = m.status == gossip::MemberStatus::kAlive || m.status == gossip::MemberStatus::kSuspect;
      EXPECT_EQ(alive, v == View::kAlive || v == View::kSuspect)
          << world.node_name(o) << " sees " << m.name << " as " << gossip::status_name(m.status);
      ++compared;
    }
  }
  return compared;
}

TEST(CheckerTest, ViewMirrorMatchesTheCores) {
  // The checkers trust a mirror built from the cores' events; compare it
  // with what each core reports at the end of a run with faults.
  const Scenario sc = Load("tests/sim/data/small_faulty.toml");
  WorldOptions options;
  options.seed = 11;
  World world(sc, options);
  world.add_membership_checkers();
  world.run();
  EXPECT_GT(CompareMirrorWithCores(world), 50u);
}

// --- converged bootstrap (cores seeded with restore_members) ----------------------

constexpr const char* kConverged = "[bootstrap]\nmode = \"converged\"\n";
constexpr const char* kCrashB4 = "[[fault]]\nkind = \"crash\"\nat = \"30s\"\nnodes = [\"b-4\"]\n";

TEST(ConvergedBootstrapTest, StartsAgreedDetectsACrashAndIsDeterministic) {
  const Scenario sc = Parse(std::string(kTwoDcs) + kConverged + kCrashB4);
  EXPECT_TRUE(sc.bootstrap.converged);
  EXPECT_EQ(sc.bootstrap.spread, Duration(0));
  const Report r = run_scenario(sc, 1);
  EXPECT_EQ(r.violations_total, 0u) << ViolationsText(r);
  EXPECT_EQ(r.steady_from_s, 0.0);  // Agreement from the first instant: no join storm.
  ASSERT_EQ(r.full_dead_s.size(), 1u);
  EXPECT_LE(r.full_dead_s[0], to_seconds(sc.bounds.detection));
  EXPECT_EQ(r.false_positives, 0u);
  EXPECT_EQ(r.false_suspicions, 0u);
  EXPECT_GT(r.core.probes_sent, 20u * 90u);  // Everyone probes from the start.
  const Report again = run_scenario(sc, 1);
  EXPECT_EQ(r.hash, again.hash);
  const Report joined = run_scenario(Parse(std::string(kTwoDcs) + kCrashB4), 1);
  EXPECT_NE(r.hash, joined.hash);
}

TEST(ConvergedBootstrapTest, MirrorMatchesTheCoresWithFaults) {
  Scenario sc = Load("tests/sim/data/small_faulty.toml");
  sc.bootstrap = BootstrapOptions{.spread = Duration(0), .seeds = 3, .converged = true};
  WorldOptions options;
  options.seed = 5;
  World world(sc, options);
  world.add_membership_checkers();
  world.run();
  EXPECT_EQ(world.report().violations_total, 0u) << ViolationsText(world.report());
  EXPECT_GT(CompareMirrorWithCores(world), 50u);
}

TEST(ConvergedBootstrapTest, SpreadOrSeedsWithConvergedIsAnError) {
  const std::string e = ParseError(std::string(kTwoDcs) + "[bootstrap]\nmode = \"converged\"\nspread = \"5s\"\n");
  EXPECT_NE(e.find("bootstrap.spread"), std::string::npos) << e;
  const std::string e2 = ParseError(std::string(kTwoDcs) + "[bootstrap]\nmode = \"warm\"\n");
  EXPECT_NE(e2.find("bootstrap.mode"), std::string::npos) << e2;
}

// --- reports --------------------------------------------------------------------

TEST(ReportTest, PercentilesUseNearestRank) {
  const LatencySummary s = summarize({5, 1, 4, 2, 3});
  EXPECT_EQ(s.count, 5u);
  EXPECT_DOUBLE_EQ(s.p50, 3);
  EXPECT_DOUBLE_EQ(s.p99, 5);
  EXPECT_DOUBLE_EQ(s.max, 5);
  EXPECT_DOUBLE_EQ(s.mean, 3);
  EXPECT_EQ(summarize({}).count, 0u);
}

TEST(ReportTest, SvgPlotIsSelfContained) {
  const std::string svg = svg_line_plot("t <1>", "x", "y", {PlotSeries{"s", {{0, 0}, {1, 0.5}, {2, 1}}}});
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
  EXPECT_NE(svg.find("t &lt;1&gt;"), std::string::npos);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
}

// --- the sweep --------------------------------------------------------------------

TEST(SweepTest, TwoHundredSeedsOfASmallFaultyClusterViolateNothing) {
  const Scenario sc = Load("tests/sim/data/small_faulty.toml");
  std::set<std::string> hashes;
  std::string failures;
  for (std::uint64_t seed = 1; seed <= 200; ++seed) {
    const Report r = run_scenario(sc, seed);
    hashes.insert(r.hash);
    if (r.violations_total > 0) {
      failures += "seed " + std::to_string(seed) + ":\n" + ViolationsText(r);
    }
  }
  EXPECT_EQ(failures, "");
  EXPECT_EQ(hashes.size(), 200u);  // Seeds really change the run.
}

}  // namespace
}  // namespace shoal::sim
