// node/cli/sim_cmd.cc: `shoal sim run` and `shoal sim sweep`. Exit codes: 0
// no invariant violated, 1 an invariant was violated, 2 usage error or a
// malformed scenario file (the message names the file, line and key).

#include <charconv>
#include <chrono>
#include <cstdio>
#include <string>

#include "node/cli/commands.h"
#include "sim/report.h"
#include "sim/scenario.h"
#include "sim/world.h"

namespace shoal::cli {
namespace {

constexpr const char* kUsage =
    "usage: shoal sim run SCENARIO [--seed N] [--json] [--out DIR]\n"
    "       shoal sim sweep SCENARIO --seeds A..B [--json]\n"
    "\n"
    "  run     simulate one scenario; prints a summary and the event-log hash.\n"
    "          --seed N   override the scenario's seed (a run is a pure function of scenario and seed)\n"
    "          --json     print the report as JSON instead of text\n"
    "          --out DIR  write report.md, report.json and SVG plots into DIR\n"
    "  sweep   run seeds A..B (inclusive); prints one line per seed and the seeds that violated an invariant.\n"
    "\n"
    "Exit status: 0 no invariant violated, 1 violations found, 2 usage or scenario error.\n";

bool parse_u64(std::string_view text, std::uint64_t& out) {
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "shoal sim: %s\n\n%s", message.c_str(), kUsage);
  return 2;
}

sim::Report timed_run(const sim::Scenario& scenario, std::uint64_t seed) {
  const auto start = std::chrono::steady_clock::now();
  sim::Report report = sim::run_scenario(scenario, seed);
  report.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

int cmd_sim_run(Args args) {
  std::string path;
  std::optional<std::uint64_t> seed;
  bool json = false;
  std::string out_dir;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view a = args[i];
    if (a == "--seed" && i + 1 < args.size()) {
      std::uint64_t v = 0;
      if (!parse_u64(args[++i], v)) {
        return usage_error("--seed needs a non-negative integer");
      }
      seed = v;
    } else if (a == "--json") {
      json = true;
    } else if (a == "--out" && i + 1 < args.size()) {
      out_dir = std::string(args[++i]);
    } else if (!a.starts_with("--") && path.empty()) {
      path = std::string(a);
    } else {
      return usage_error("unexpected argument '" + std::string(a) + "'");
    }
  }
  if (path.empty()) {
    return usage_error("missing SCENARIO");
  }
  auto scenario = sim::load_scenario(path);
  if (!scenario) {
    std::fprintf(stderr, "shoal sim: %s\n", scenario.error().message.c_str());
    return 2;
  }
  const sim::Report report = timed_run(*scenario, seed.value_or(scenario->seed));
  if (!out_dir.empty()) {
    if (auto st = sim::write_report_dir(report, out_dir); !st) {
      std::fprintf(stderr, "shoal sim: %s\n", st.error().message.c_str());
      return 2;
    }
  }
  const std::string text = json ? sim::format_json(report) : sim::format_text(report);
  std::fputs(text.c_str(), stdout);
  if (!out_dir.empty() && !json) {
    std::printf("report written to %s/report.md\n", out_dir.c_str());
  }
  return report.violations_total > 0 ? 1 : 0;
}

int cmd_sim_sweep(Args args) {
  std::string path;
  std::uint64_t first = 0;
  std::uint64_t last = 0;
  bool have_seeds = false;
  bool json = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view a = args[i];
    if (a == "--seeds" && i + 1 < args.size()) {
      const std::string_view range = args[++i];
      const auto dots = range.find("..");
      if (dots == std::string_view::npos || !parse_u64(range.substr(0, dots), first) ||
          !parse_u64(range.substr(dots + 2), last) || last < first) {
        return usage_error("--seeds needs A..B with A <= B");
      }
      have_seeds = true;
    } else if (a == "--json") {
      json = true;
    } else if (!a.starts_with("--") && path.empty()) {
      path = std::string(a);
    } else {
      return usage_error("unexpected argument '" + std::string(a) + "'");
    }
  }
  if (path.empty() || !have_seeds) {
    return usage_error(path.empty() ? "missing SCENARIO" : "missing --seeds A..B");
  }
  auto scenario = sim::load_scenario(path);
  if (!scenario) {
    std::fprintf(stderr, "shoal sim: %s\n", scenario.error().message.c_str());
    return 2;
  }
  std::vector<std::uint64_t> violating;
  std::vector<double> first_dead;
  std::vector<double> full_dead;
  std::uint64_t false_positives = 0;
  double wall = 0;
  std::string json_runs;
  for (std::uint64_t seed = first;; ++seed) {
    const sim::Report r = timed_run(*scenario, seed);
    wall += r.wall_seconds;
    first_dead.insert(first_dead.end(), r.first_dead_s.begin(), r.first_dead_s.end());
    full_dead.insert(full_dead.end(), r.full_dead_s.begin(), r.full_dead_s.end());
    false_positives += r.false_positives;
    if (r.violations_total > 0) {
      violating.push_back(seed);
    }
    if (json) {
      json_runs += (json_runs.empty() ? "" : ",\n") + std::string("    {\"seed\": ") + std::to_string(seed) +
                   ", \"violations\": " + std::to_string(r.violations_total) + ", \"hash\": \"" + r.hash + "\"}";
    } else {
      std::printf("seed %llu: %s  hash %.16s  fp %llu%s%s\n", static_cast<unsigned long long>(seed),
                  r.violations_total > 0 ? "VIOLATED" : "ok", r.hash.c_str(),
                  static_cast<unsigned long long>(r.false_positives),
                  r.violations.empty() ? "" : "  first: ",
                  r.violations.empty() ? "" : (r.violations[0].invariant + ": " + r.violations[0].message).c_str());
      std::fflush(stdout);
    }
    if (seed == last) {
      break;
    }
  }
  const sim::LatencySummary fd = sim::summarize(first_dead);
  const sim::LatencySummary all = sim::summarize(full_dead);
  std::string seeds;
  for (std::uint64_t s : violating) {
    seeds += (seeds.empty() ? "" : " ") + std::to_string(s);
  }
  if (json) {
    std::printf("{\n  \"scenario\": \"%s\",\n  \"runs\": [\n%s\n  ],\n  \"violating_seeds\": [%s],\n"
                "  \"first_dead_p99_s\": %.3f,\n  \"dead_everywhere_p99_s\": %.3f,\n  \"false_positives\": %llu\n}\n",
                scenario->name.c_str(), json_runs.c_str(), seeds.c_str(), fd.p99, all.p99,
                static_cast<unsigned long long>(false_positives));
  } else {
    std::printf("%llu seeds in %.1fs wall; first dead p50 %.2fs p99 %.2fs; dead everywhere p50 %.2fs p99 %.2fs max %.2fs; "
                "false positives %llu\n",
                static_cast<unsigned long long>(last - first + 1), wall, fd.p50, fd.p99, all.p50, all.p99, all.max,
                static_cast<unsigned long long>(false_positives));
    std::printf("violating seeds: %s\n", violating.empty() ? "none" : seeds.c_str());
  }
  return violating.empty() ? 0 : 1;
}

}  // namespace

int cmd_sim(Args args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  if (args[0] == "run") {
    return cmd_sim_run(args.subspan(1));
  }
  if (args[0] == "sweep") {
    return cmd_sim_sweep(args.subspan(1));
  }
  return usage_error("unknown subcommand '" + std::string(args[0]) + "'");
}

}  // namespace shoal::cli
