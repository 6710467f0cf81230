#pragma once
// sim/scenario.h: what a simulation run is asked to do, as plain options
// structs (one per concern) parsed from a TOML scenario file. Owns parsing and
// validation only: nothing here runs anything. A scenario plus a seed fully
// determines a run. Single-threaded; no I/O except load_scenario().
//
// Format reference: docs/simulation.md. Errors name the file, the line and
// the key ("steady.toml:12: fault[2].kind: unknown fault kind 'crsh'").

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/time.h"
#include "gossip/types.h"

namespace shoal::sim {

// Limits on what a scenario may ask for, so a typo cannot exhaust memory.
constexpr std::uint32_t kNodesMax = 20000;
constexpr std::uint32_t kDcsMax = 16;
constexpr std::uint32_t kFaultActionsMax = 100000;
constexpr Duration kDurationMax = seconds(24 * 3600);
constexpr Duration kSkewMax = seconds(600);

struct DcOptions {
  std::string name;
  std::uint32_t nodes = 0;  // Nodes started during bootstrap.
};

// Overrides for the path between two data centers (both directions).
struct LinkOptions {
  std::string from;
  std::string to;
  Duration latency_mean{0};
  Duration latency_jitter{0};
  std::optional<double> loss;
};

struct NetOptions {
  Duration latency_mean = std::chrono::microseconds(250);  // One way, inside a DC.
  Duration latency_jitter = std::chrono::microseconds(50);  // Uniform +/- around the mean.
  Duration wan_latency_mean = milliseconds(30);            // One way, between DCs.
  Duration wan_latency_jitter = milliseconds(3);
  double loss = 0;       // Probability a datagram is dropped.
  double duplicate = 0;  // Probability a datagram is delivered twice.
  double reorder = 0;    // Probability a datagram is held back by up to reorder_delay.
  Duration reorder_delay = milliseconds(20);
  std::uint64_t bandwidth_bytes_per_second = 0;  // Egress per node; 0 is unlimited.
  Duration egress_queue_max = milliseconds(200);  // Datagrams queued longer are dropped.
  Duration stream_timeout = seconds(10);          // Push-pull timeout (the agent's kPushPullTimeout).
                                                  // Reachability checks time out after gossip.probe_timeout.
  std::size_t paused_backlog_max = 512;           // Datagrams a paused node's socket buffers.
  std::vector<LinkOptions> links;
};

struct ClockOptions {
  Duration skew_max{0};    // Each node's clock is offset by uniform(-max, +max).
  double drift_ppm_max = 0;  // Each node's clock runs fast or slow by uniform(-max, +max) ppm.
};

// How the initial nodes start. "join" (the default): node i starts at
// i * spread / N and joins through up to `seeds` nodes started before it, a
// real join storm. "converged": every initial node starts at t = 0 already
// knowing all the others, as a mesh that was running before the scenario
// began; each core is seeded with Membership::restore_members (the same call
// an agent makes with its saved member list after a restart). Spread and
// seeds do not apply to it.
struct BootstrapOptions {
  Duration spread = seconds(5);
  std::uint32_t seeds = 3;
  bool converged = false;
};

struct Bounds {
  Duration detection = seconds(30);    // Crash -> every live node sees it dead.
  Duration convergence = seconds(60);  // Heal or join wave -> every live node agrees.
  // A false positive is excused (counted, not a violation) if a pause,
  // partition, restart or loss touched either node within this window.
  Duration disturbance_window = seconds(60);
};

enum class FaultKind : std::uint8_t {
  kCrash,      // Process stops; host stays up (TCP refused). `duration` restarts it.
  kRestart,    // Start crashed or left nodes again; they rejoin.
  kPause,      // Process stops processing for `duration` (or uniform duration..duration_max).
  kDcOutage,   // A DC drops off the network (or loses power with power = true).
  kDcReturn,   // Undo kDcOutage for `dc`.
  kPartition,  // Groups of DCs or a random fraction cut off; one_way blocks first -> rest only.
  kHeal,       // Remove every partition.
  kJoin,       // New nodes join (a join wave), spread over `spread`.
  kLeave,      // Graceful leave; `duration` makes them rejoin after it.
};
std::string_view fault_kind_name(FaultKind kind);

// Which nodes a fault applies to: named nodes, or `count` / `fraction` picked
// at random (seeded) among the live nodes, optionally of one DC.
struct Selector {
  std::vector<std::string> names;
  std::uint32_t count = 0;
  double fraction = 0;
  std::string dc;
};

struct FaultSpec {
  FaultKind kind = FaultKind::kCrash;
  Duration at{0};
  Selector select;
  std::optional<Duration> duration;
  std::optional<Duration> duration_max;  // Duration is uniform in [duration, duration_max].
  Duration every{0};                     // Repeat period; 0 = once.
  std::uint32_t times = 1;               // Number of repetitions when every > 0.
  bool sticky = false;                   // Repeat on the nodes picked the first time.
  std::string dc;                        // kDcOutage / kDcReturn / kJoin.
  bool power = false;                    // kCrash / kDcOutage: the host goes down too (TCP times out).
  std::vector<std::vector<std::string>> groups;  // kPartition: DC names per side.
  bool one_way = false;                  // kPartition: only the first group's sends are dropped.
  Duration spread{0};                    // kJoin: arrivals spread over this.
  int line = 0;                          // Source line, for messages.
};

// Deliberate bugs for the placement layer, test-only: each makes one
// invariant checker fire, to show the checkers can fail (tests/sim).
enum class PlacementBug : std::uint8_t {
  kNone,
  kSkipPhase1,           // Failover writes Accept directly, no Prepare, no grace (invariant 1).
  kAckWithoutMajority,   // A save is acknowledged without pushing it (invariant 2).
  kDeleteOnDoubt,        // An empty local read counts as "not listed": delete at once (invariant 3).
  kNoRepair,             // Primaries never replace dead replicas (invariant 4).
  kStaleRead,            // Reads answer the local record instead of running consensus (invariant 6).
};

// The placement layer (sim/placement.h): node/core's register, ranking and
// plans on every virtual node, storage and transfer modelled by size and
// bandwidth. Absent [placement] table: disabled (membership only).
struct PlacementOptions {
  bool enabled = false;
  std::uint32_t projects = 0;
  std::uint32_t replication_factor = 3;
  Duration create_at = seconds(5);          // Projects are installed (converged) at this time.
  Duration save_interval = seconds(300);    // Periodic saves by primaries; 0 = none.
  Duration save_jitter = seconds(0);        // First save of each project at create_at + uniform(0, this) + interval.
  std::uint64_t snapshot_bytes_min = 1 << 20;
  std::uint64_t snapshot_bytes_max = 64 << 20;
  std::uint64_t bandwidth_bytes_per_second = 100'000'000;  // Transfer egress per node (the budget); 0 = unlimited.
  Duration failover_grace = seconds(3);     // The agent's kFailoverGrace.
  Duration repair_interval = seconds(1);    // The agent's kRepairInterval.
  Duration primary_check = seconds(5);      // The agent's kPrimaryCheckInterval (fresh read by each primary).
  Duration collect_interval = seconds(10);  // The agent's kObsoleteCheckInterval.
  Duration push_timeout = seconds(30);      // Added to the modelled transfer time.
  double read_fault = 0;                    // A local placement or store read returns empty or short.
  Duration convergence = seconds(120);      // Invariant 4: every project converged this long after the last fault.
  Duration sample_interval = seconds(1);    // How often convergence is sampled.
  PlacementBug bug = PlacementBug::kNone;   // Test-only.
};

struct Scenario {
  std::string path;
  std::string name;
  std::string description;
  std::uint64_t seed = 1;
  Duration duration = seconds(60);
  gossip::Config gossip;  // Profile defaults plus [gossip] overrides; identity fields unset.
  std::string profile_name = "lan";
  std::vector<DcOptions> dcs;
  NetOptions net;
  ClockOptions clock;
  BootstrapOptions bootstrap;
  Bounds bounds;
  std::vector<FaultSpec> faults;
  PlacementOptions placement;

  std::uint32_t initial_nodes() const;
  // Initial nodes plus every join wave: the number of node slots to allocate.
  std::uint32_t node_slots() const;
  bool any_loss() const;
};

// Parses scenario text. `path` is used in messages only. Returns
// InvalidArgument "path:line: key: what is wrong" for any malformed,
// unknown or out-of-range key.
[[nodiscard]] Result<Scenario> parse_scenario(std::string_view text, std::string_view path);
// Reads and parses a file. NotFound / IOError when it cannot be read.
[[nodiscard]] Result<Scenario> load_scenario(const std::string& path);

// "1.5s", "250ms", "2m", "1h", "40us" or a bare number of seconds.
[[nodiscard]] Result<Duration> parse_duration(std::string_view text);

}  // namespace shoal::sim
