#pragma once
// sim/report.h: what a simulation run measured, and its renderings: a text
// summary, JSON, and a report.md with SVG plots written by this binary (no
// gnuplot needed). Plain data plus pure formatting functions; the only I/O
// is write_report_dir().

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/time.h"

namespace shoal::sim {

struct Violation {
  double at_s = 0;        // Simulated seconds.
  std::string invariant;  // Checker name, e.g. "detection".
  std::string message;
};

struct LatencySummary {
  std::size_t count = 0;
  double mean = 0;
  double p50 = 0;
  double p99 = 0;
  double max = 0;
};
LatencySummary summarize(std::vector<double> samples);

struct ConvergenceSample {
  std::string what;       // "bootstrap", "heal at 60.0s", "join wave at 30.0s", ...
  double at_s = 0;        // When the watch opened.
  double seconds = -1;    // Time to agreement; < 0 when it never happened.
  bool overlapped = false;  // Another fault happened before agreement.
};

struct TrafficBucket {
  std::uint64_t messages = 0;  // Datagrams sent plus stream exchanges.
  std::uint64_t bytes = 0;     // As sealed on the wire (+40 per datagram).
  double node_seconds = 0;     // Running nodes integrated over the bucket.
};

struct AwarenessSeries {
  std::string label;                              // "crash of a-17 at 30.0s"
  std::vector<std::pair<double, double>> points;  // (seconds since the event, fraction aware)
};

struct NetworkCounters {
  std::uint64_t datagrams_sent = 0;
  std::uint64_t datagrams_delivered = 0;
  std::uint64_t dropped_loss = 0;
  std::uint64_t dropped_partition = 0;
  std::uint64_t dropped_queue = 0;       // Egress bandwidth queue over its limit.
  std::uint64_t dropped_not_running = 0;  // Destination crashed, left or host down.
  std::uint64_t dropped_backlog = 0;     // Paused destination's socket buffer full.
  std::uint64_t dropped_bad_address = 0;
  std::uint64_t duplicated = 0;
  std::uint64_t streams = 0;
  std::uint64_t stream_timeouts = 0;
  std::uint64_t stream_refused = 0;
  std::uint64_t layer_sent = 0;       // Placement messages (consensus and modelled transfers).
  std::uint64_t layer_delivered = 0;
};

struct CoreCounters {  // Summed over every process that ran.
  std::uint64_t probes_sent = 0;
  std::uint64_t probes_failed = 0;
  std::uint64_t suspicions = 0;
  std::uint64_t refutations = 0;
  std::uint64_t deaths_declared = 0;
  std::uint64_t push_pulls = 0;
  std::uint64_t decode_errors = 0;
};

// The placement layer's measurements (sim/placement.h); enabled = false
// when the scenario has no [placement] table.
struct PlacementReport {
  bool enabled = false;
  std::uint32_t projects = 0;
  std::uint64_t commits = 0;        // Distinct committed register values (project, version).
  std::uint64_t failovers = 0;      // Committed changes of primary.
  std::uint64_t moves = 0;          // Committed replica-set changes (reconfigurations).
  std::uint64_t saves_started = 0;
  std::uint64_t saves_acked = 0;
  std::uint64_t saves_failed = 0;
  std::uint64_t saves_deferred = 0;  // Periodic saves skipped: the node's link was backlogged.
  std::uint64_t pushes = 0;         // Modelled transfers started.
  std::uint64_t pushes_fenced = 0;  // Refused by the replica: stamped with an older epoch.
  std::uint64_t bytes_copied = 0;   // Modelled bytes stored by receivers.
  std::uint64_t copies_collected = 0;
  std::uint64_t stray_copies_at_end = 0;  // (live node, project) copies on a node the placement does not list.
  std::uint64_t proposals = 0;
  std::uint64_t proposals_failed = 0;
  std::uint64_t fast_path = 0;      // Proposer stats, summed over every process.
  std::uint64_t prepares = 0;
  std::uint64_t conflicts = 0;
  std::uint64_t read_faults = 0;    // Injected empty or short local reads.
  std::vector<double> new_primary_s;        // Primary crash confirmed (first node's view) -> new primary committed.
  std::vector<double> new_primary_periods;  // The same in protocol periods.
  std::uint64_t primaries_lost = 0;         // Projects whose primary crashed (tracked).
  std::uint64_t primaries_not_replaced = 0;  // ... still without a new primary at the end.
  double last_fault_s = -1;
  double rereplicated_s = -1;       // Last fault -> every project at its target with last_ack everywhere.
  std::uint64_t unconverged_at_end = 0;
};

struct Report {
  std::string scenario;
  std::string scenario_path;
  std::uint64_t seed = 0;
  std::uint32_t nodes = 0;  // Node slots (initial plus join waves).
  double sim_seconds = 0;
  double wall_seconds = 0;
  std::uint64_t events = 0;
  std::string hash;  // BLAKE2b-256 of the event log, hex.
  double probe_interval_s = 1;

  // Crash detection, seconds after the crash.
  std::vector<double> first_suspect_s;  // First live node suspects it.
  std::vector<double> first_dead_s;     // First live node declares it dead.
  std::vector<double> full_dead_s;      // Every live node has it dead.
  std::vector<double> dissemination_s;  // From first dead to dead everywhere.
  std::uint32_t crashes_tracked = 0;
  std::uint32_t crashes_incomplete = 0;  // Not every live node knew by the end.
  std::vector<double> join_full_s;       // Every live node knows a joined/restarted node.

  std::uint64_t false_positives = 0;          // Dead declared about a live, reachable node.
  std::uint64_t false_positives_excused = 0;  // ... of which under injected pause/loss/partition.
  std::uint64_t false_suspicions = 0;         // Suspect declared about a live, reachable node.
  double node_hours = 0;

  std::vector<ConvergenceSample> convergence;
  double steady_from_s = 0;  // Traffic rates are measured from here (bootstrap converged).
  double messages_per_node_second = 0;
  double bytes_per_node_second = 0;
  std::vector<TrafficBucket> traffic;  // One per simulated second.

  std::vector<AwarenessSeries> awareness;
  NetworkCounters net;
  CoreCounters core;
  std::vector<Violation> violations;  // The first violations_max.
  std::uint64_t violations_total = 0;
  std::uint64_t tick_storms = 0;  // The core asked to be woken in the past right after a tick.
  PlacementReport placement;
};

std::string format_text(const Report& report);
std::string format_json(const Report& report);
std::string format_markdown(const Report& report);  // References the SVGs below.

struct PlotSeries {
  std::string label;
  std::vector<std::pair<double, double>> points;
};
// A self-contained SVG line plot (axes, ticks, legend). Pure function.
std::string svg_line_plot(const std::string& title, const std::string& x_label, const std::string& y_label,
                          const std::vector<PlotSeries>& series, bool step = false);

// Writes report.md, detection_cdf.svg, awareness.svg and traffic.svg into
// dir (created if missing). IOError naming the file on failure.
[[nodiscard]] Status write_report_dir(const Report& report, const std::string& dir);

}  // namespace shoal::sim
