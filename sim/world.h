#pragma once
// sim/world.h: the deterministic simulator. Owns every virtual node (a real
// gossip::Membership core with its own seeded Prng stream, a skewed and
// drifting local clock, a socket backlog while paused), the virtual network
// (latency per DC pair, loss, duplication, reordering, egress bandwidth,
// partitions, DC outages), the fault timeline, the invariant checkers and
// the measurements. Does not seal datagrams (the core takes plaintext; bytes
// are counted as if sealed).
//
// Single-threaded. A run is a pure function of (scenario, seed): every event
// is ordered by (time, sequence number), every random choice comes from a
// Prng forked from the seed, and nothing iterates an unordered container.
//
// Design note. Each node's view of every other node is mirrored from the
// core's events into one byte per (observer, subject) pair. That mirror lets
// the checkers ask "does everyone agree?" in O(1) after every event: the
// world keeps a running count of (observer, subject) pairs whose view
// disagrees with the truth, updated per event and per lifecycle change.
// At 10,000 nodes it costs 100 MB, small beside the cores' own tables.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/crypto.h"
#include "base/random.h"
#include "gossip/membership.h"
#include "sim/report.h"
#include "sim/scenario.h"

namespace shoal::sim {

// One observer's view of one subject, mirrored from the core's events.
enum class View : std::uint8_t { kUnknown = 0, kAlive, kSuspect, kDead, kLeft };

// A fault as it actually happened (after random selection), for checkers.
struct FaultRecord {
  FaultKind kind = FaultKind::kCrash;
  Instant at{};
  std::vector<std::uint32_t> nodes;  // Nodes it touched (may be empty, e.g. heal).
  std::string label;                 // "crash a-3", "heal", ...
  Duration spread{0};                // kJoin: arrivals are spread over this.
};

class World;

// An invariant or measurement hooked into the run. Every hook has a cheap
// default; the world calls after_event() after every event it processes, so
// implementations must be incremental (O(1) or amortized). The placement
// issue adds its own checkers through World::add_checker().
class Checker {
 public:
  virtual ~Checker() = default;
  virtual std::string_view name() const = 0;
  virtual void on_fault(World&, const FaultRecord&) {}
  // The observer's view of subject changed from `before` (core event `event`).
  virtual void on_view(World&, std::uint32_t /*observer*/, std::uint32_t /*subject*/, View /*before*/,
                       const gossip::Event& /*event*/) {}
  virtual void after_event(World&) {}
  virtual void finish(World&, Report&) {}
};

// A per-node service above the membership core that the world drives (the
// placement layer, sim/placement.h). It is also a Checker: it sees every
// fault, view change and event. Its messages travel the virtual network
// (latency, loss, partitions, DC outages, pauses apply); its timers are
// per node life (a crash cancels them).
class Layer : public Checker {
 public:
  virtual void on_node_start(World&, std::uint32_t /*node*/, bool /*restart*/) {}
  // Crash or leave: the process and its volatile state are gone (disk stays).
  virtual void on_node_stop(World&, std::uint32_t /*node*/) {}
  virtual void on_node_resume(World&, std::uint32_t /*node*/) {}
  virtual void on_message(World&, std::uint32_t /*to*/, std::uint32_t /*from*/, const Bytes& /*payload*/) {}
  virtual void on_timer(World&, std::uint32_t /*node*/, std::uint64_t /*token*/) {}
};

struct WorldOptions {
  std::uint64_t seed = 1;
  std::size_t violations_max = 100;  // Kept in the report; the rest are only counted.
  std::size_t awareness_series_max = 6;
};

class World {
 public:
  World(const Scenario& scenario, WorldOptions options);
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  // Adds the membership invariants (detection, false positives, convergence).
  void add_membership_checkers();
  void add_checker(std::unique_ptr<Checker> checker);
  // Installs the per-node layer (also added as a checker). At most one.
  void set_layer(std::unique_ptr<Layer> layer);

  // Runs until the scenario's duration. Call once.
  void run();
  // Measurements and violations. REQUIRES: run() returned.
  Report report() const;

  // --- views for checkers ---------------------------------------------------
  Instant now() const { return now_; }
  const Scenario& scenario() const { return scenario_; }
  std::uint32_t node_count() const;
  const std::string& node_name(std::uint32_t i) const;
  bool running(std::uint32_t i) const;  // A process exists (possibly paused).
  bool live(std::uint32_t i) const;     // Running and not leaving.
  bool paused(std::uint32_t i) const;
  std::uint32_t generation(std::uint32_t i) const;  // Bumped at every start.
  Instant started_at(std::uint32_t i) const;
  Instant last_disturbed(std::uint32_t i) const;     // Last pause, restart or isolation.
  Instant network_disturbed_at() const { return network_disturbed_at_; }
  std::uint64_t incarnation_floor(std::uint32_t i) const;  // First incarnation of the current life.
  bool reachable(std::uint32_t from, std::uint32_t to) const;  // Both ways, host up.
  bool lossy() const;  // The scenario injects loss or a bandwidth limit anywhere.
  View view(std::uint32_t observer, std::uint32_t subject) const;
  // Number of (running observer, subject) pairs whose view disagrees with
  // the truth: live subjects must be alive or suspect, gone subjects dead,
  // left or unknown.
  std::uint64_t disagreements() const { return disagreements_; }
  const gossip::Membership* core(std::uint32_t i) const;

  std::uint16_t node_dc(std::uint32_t i) const;
  const NodeId& node_id(std::uint32_t i) const;
  std::optional<std::uint32_t> index_of_id(const NodeId& id) const;

  // --- services for the layer -------------------------------------------------
  // A message from one running node to another (or itself). Datagram-like
  // (reliable = false): loss, duplication and reordering apply. Stream-like
  // (reliable = true, e.g. a modelled transfer): no loss, but dropped when
  // the path is cut at delivery. `extra` is added before the latency (the
  // sender's modelled transfer time).
  void layer_send(std::uint32_t from, std::uint32_t to, Bytes payload, bool reliable, Duration extra = Duration(0));
  // Calls Layer::on_timer(node, token) at `at` unless the node stopped, restarted or is paused then.
  void layer_timer(std::uint32_t node, Instant at, std::uint64_t token);
  // Adds a record to the event-log hash.
  void note(std::uint32_t a, std::uint32_t b, std::uint64_t c);

  // --- services for checkers ------------------------------------------------
  void wake_at(Instant at);  // Guarantees an after_event() call at `at`.
  void violate(std::string_view invariant, std::string message);
  void count_false_positive(bool excused, bool suspicion);

 private:
  struct Node;
  struct QueuedEvent;
  struct Partition;
  struct Action;
  struct Tracked;

  void push(QueuedEvent event);
  void process(QueuedEvent& event);
  void advance_to(Instant t);

  // Node lifecycle.
  // `restore`: the converged bootstrap; the core is seeded with roster_.
  void start_node(std::uint32_t i, std::vector<std::uint32_t> seeds, bool restore = false);
  void crash_node(std::uint32_t i, bool host_down);
  void stop_node(std::uint32_t i);  // After a graceful leave.
  void pause_node(std::uint32_t i, Duration d);
  void resume_node(std::uint32_t i);
  void drive(std::uint32_t i);  // Drain the core's outputs and re-arm its timer.
  void arm_timer(std::uint32_t i, bool after_tick);
  Instant local_time(std::uint32_t i, Instant t) const;
  Instant sim_time_for_local(std::uint32_t i, Instant local) const;
  std::vector<std::uint32_t> pick_seeds(std::uint32_t i, std::uint32_t count);

  // Network.
  void send_datagram(std::uint32_t from, gossip::Datagram datagram);
  void send_stream(std::uint32_t from, gossip::StreamRequest request);
  void deliver_datagram(QueuedEvent& event);
  void stream_arrive(QueuedEvent& event);
  void stream_result(QueuedEvent& event);
  Duration latency(std::uint32_t from, std::uint32_t to);
  double loss(std::uint32_t from, std::uint32_t to) const;
  bool blocked(std::uint32_t from, std::uint32_t to) const;
  std::optional<std::uint32_t> index_of(const Address& address) const;

  // Faults.
  void run_action(std::uint32_t action_index);
  std::vector<std::uint32_t> select(const FaultSpec& spec, std::size_t spec_index, bool want_running);
  void record_fault(FaultRecord record);
  void mark_network_disturbed();

  // Views and measurements.
  void on_core_event(std::uint32_t observer, const gossip::Event& event);
  void set_view(std::uint32_t observer, std::uint32_t subject, View view, const gossip::Event& event);
  void set_truth(std::uint32_t subject, bool live);
  void set_counted(std::uint32_t observer, bool counted);
  bool bad(std::uint32_t observer, std::uint32_t subject) const;
  void open_tracked(std::uint32_t subject, bool crash);
  void close_tracked(std::uint32_t subject);
  void log(std::uint8_t type, std::uint32_t a, std::uint32_t b, std::uint64_t c);
  void add_traffic(std::uint64_t messages, std::uint64_t bytes);

  Scenario scenario_;
  WorldOptions options_;
  Instant now_{};
  Instant end_{};
  std::uint64_t seq_ = 0;
  std::vector<QueuedEvent> queue_;  // A binary min-heap on (at, seq).
  std::vector<Node> nodes_;
  std::unordered_map<NodeId, std::uint32_t, NodeIdHash> by_id_;  // Lookup only, never iterated.
  std::vector<std::uint8_t> dc_net_down_;
  std::vector<Partition> partitions_;
  std::vector<Action> actions_;
  std::vector<std::vector<std::uint32_t>> sticky_;  // Per fault spec: nodes picked first.
  std::vector<std::uint8_t> views_;                 // node_count^2, View values.
  std::vector<gossip::Member> roster_;  // Converged bootstrap: the initial nodes, freed once all started.
  std::uint32_t roster_pending_ = 0;    // Initial nodes still to start from roster_.
  std::vector<std::uint8_t> live_;                  // Truth per subject.
  std::uint64_t disagreements_ = 0;
  Instant network_disturbed_at_ = Instant(-seconds(1000000));
  Prng world_prng_;  // Fault selection and seeds.
  Prng net_prng_;    // Latency, loss, duplication.
  std::vector<std::unique_ptr<Checker>> checkers_;
  Layer* layer_ = nullptr;  // Owned by checkers_.
  std::vector<Tracked> tracked_;
  std::vector<std::int32_t> open_tracked_;  // Per subject, index into tracked_ or -1.
  std::uint32_t running_count_ = 0;
  double node_seconds_ = 0;
  double node_seconds_at_steady_ = 0;
  std::optional<Instant> steady_from_;
  mutable Report report_;
  std::unique_ptr<struct HashState> hash_;
  std::vector<std::uint8_t> log_buffer_;
  std::uint64_t events_ = 0;
  bool ran_ = false;
  double wall_seconds_ = 0;
};

// Runs a scenario with the membership checkers and returns its report.
Report run_scenario(const Scenario& scenario, std::uint64_t seed);

}  // namespace shoal::sim
