// sim/world.cc: the event loop, the virtual network and the fault timeline.
//
// Design note. Everything that happens is a QueuedEvent in one binary heap
// ordered by (time, sequence number); the sequence number makes ties
// deterministic. Processing an event hands an input to one core (datagram,
// stream request or result, tick), then drains that core's outputs: datagrams
// go through the network model and come back as future events, stream
// requests are answered by the model (or by the target core for push-pull),
// membership events update the view mirror and the checkers.
//
// Randomness comes from three independent streams forked from the seed: one
// per node (handed to its core), one for the network and one for fault
// selection. A change in how often the network draws does not perturb which
// nodes a fault picks, and vice versa.
//
// A paused node processes nothing: its datagrams wait in a bounded backlog
// (its socket buffer), its timers are ignored, and at resume it drains the
// backlog and ticks once at the new time, seeing the time jump exactly as a
// stopped process would.

#include "sim/world.h"

#include <sodium.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/assert.h"
#include "sim/invariants.h"
#include "sim/placement.h"

namespace shoal::sim {
namespace {

constexpr std::uint16_t kPort = 7946;
constexpr Instant kNever = Instant::max();
// Local clocks start here so that negative skew never makes a time negative.
constexpr Duration kLocalEpoch = seconds(100000);
constexpr std::size_t kTrackedMax = 4096;
constexpr std::size_t kLogFlushBytes = 64 * 1024;
constexpr Duration kLeaveGrace = seconds(10);
constexpr std::uint32_t kRejoinSeeds = 3;
constexpr const char* kSimVersion = "sim";  // Every node's software version.
// kStart's aux: start from the roster (converged bootstrap) instead of joining.
constexpr std::uint64_t kStartRestored = UINT64_MAX;

enum class EvType : std::uint8_t {
  kStart,
  kTimer,
  kDatagram,
  kStreamArrive,
  kStreamResult,
  kFault,
  kResume,
  kStop,
  kWake,
  kLayerMsg,
  kLayerTimer,
};

enum LogType : std::uint8_t {
  kLogEvent = 1,
  kLogSend = 2,
  kLogStream = 3,
  kLogCore = 4,
  kLogFault = 5,
  kLogViolation = 6,
  kLogLayer = 7,
  kLogNote = 8,
};

View view_from_status(gossip::MemberStatus status) {
  switch (status) {
    case gossip::MemberStatus::kAlive: return View::kAlive;
    case gossip::MemberStatus::kSuspect: return View::kSuspect;
    case gossip::MemberStatus::kDead: return View::kDead;
    case gossip::MemberStatus::kLeft: return View::kLeft;
  }
  return View::kUnknown;
}

bool seen_alive(View v) { return v == View::kAlive || v == View::kSuspect; }

std::string address_host(std::uint32_t index) {
  const std::uint32_t n = index + 1;
  return "10." + std::to_string((n >> 16) & 0xff) + "." + std::to_string((n >> 8) & 0xff) + "." +
         std::to_string(n & 0xff);
}

std::string seconds_label(Instant t) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fs", to_seconds(t.time_since_epoch()));
  return buf;
}

}  // namespace

struct HashState {
  crypto_generichash_state state;
};

struct World::QueuedEvent {
  Instant at{};
  std::uint64_t seq = 0;
  EvType type = EvType::kWake;
  gossip::StreamOutcome outcome = gossip::StreamOutcome::kFailed;
  std::uint32_t node = 0;  // Whom the event is for.
  std::uint32_t from = 0;  // Sender / requester.
  std::uint32_t gen = 0;   // Generation of `node` (timers, resume) or of the requester (streams).
  std::uint32_t gen2 = 0;  // Stream arrive: generation of the target when requested.
  std::uint64_t aux = 0;   // Stream id, action index.
  Instant t0{};            // Stream: when it was requested.
  Bytes payload;
};

namespace {
struct Later {
  template <class E>
  bool operator()(const E& a, const E& b) const {
    return a.at != b.at ? a.at > b.at : a.seq > b.seq;
  }
};
}  // namespace

struct World::Node {
  enum class State : std::uint8_t { kNotStarted, kRunning, kCrashed, kLeft };
  std::string name;
  std::uint16_t dc = 0;
  Address addr;
  PublicKey public_key{};
  NodeId id;
  Prng prng{0};
  std::unique_ptr<gossip::Membership> core;
  State state = State::kNotStarted;
  bool is_paused = false;
  bool leaving = false;
  bool host_down = false;
  std::uint32_t gen = 0;
  Instant timer_at = kNever;
  Instant paused_until{};
  std::int64_t skew_us = 0;
  double drift = 0;  // Fractional rate error, e.g. 1e-4 for 100 ppm fast.
  Instant egress_free_at{};
  std::uint64_t incarnation_disk = 0;
  std::uint64_t floor = 0;
  Instant started{};
  Instant disturbed = Instant(-seconds(1000000));
  std::vector<QueuedEvent> backlog;
};

struct World::Partition {
  std::uint32_t id = 0;
  bool one_way = false;
  std::vector<std::uint8_t> side;  // 0 uninvolved, 1 first group, 2.. other groups.
};

struct World::Action {
  FaultKind kind = FaultKind::kCrash;
  int spec = -1;  // Index into scenario.faults, or -1 for a follow-up action.
  std::vector<std::uint32_t> nodes;
  std::int64_t partition_id = -1;
  std::string dc;
  bool power = false;
};

struct World::Tracked {
  std::uint32_t subject = 0;
  bool crash = true;
  Instant at{};
  std::string label;
  std::optional<Duration> first_suspect;
  std::optional<Duration> first_dead;
  std::vector<std::uint64_t> aware_bits;
  std::vector<std::pair<Duration, std::uint32_t>> aware;
};

World::World(const Scenario& scenario, WorldOptions options)
    : scenario_(scenario),
      options_(options),
      world_prng_(options.seed ^ 0x77a11d5eedULL),
      net_prng_(options.seed ^ 0x4e7ULL),
      hash_(std::make_unique<HashState>()) {
  crypto_init();
  crypto_generichash_init(&hash_->state, nullptr, 0, kHashBytes);
#if defined(__GLIBC__)
  // A push-pull at 10,000 nodes builds, encodes and decodes a few
  // megabytes of member records, once per exchange. glibc serves blocks
  // past its mmap threshold (at most 32 MiB, raised as they are freed) with
  // fresh mappings and trims freed heap tops, so every exchange faulted in
  // ~8 MB of zeroed pages again: 22 million page faults and 96 s of system
  // time in the 10,000-node benchmark. The simulator is the process's only
  // work, so keep such blocks on the heap and keep freed memory for reuse.
  // Resident memory is unchanged (measured at 2,000 nodes); results too:
  // allocation never influences the run.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
  end_ = Instant(scenario_.duration);
  Prng node_master(options.seed);
  Prng identity_master(options.seed ^ 0x1d3a7172ULL);
  Prng clock_prng(options.seed ^ 0xc10c4ULL);

  // Slots: the initial nodes of each DC, then every join wave in order.
  const std::uint32_t slots = scenario_.node_slots();
  nodes_.resize(slots);
  std::vector<std::uint32_t> per_dc(scenario_.dcs.size(), 0);
  std::uint32_t next = 0;
  auto dc_index = [&](const std::string& name) {
    for (std::size_t d = 0; d < scenario_.dcs.size(); ++d) {
      if (scenario_.dcs[d].name == name) {
        return static_cast<std::uint16_t>(d);
      }
    }
    SHOAL_ASSERT(false);  // The parser validated every DC name.
    return std::uint16_t{0};
  };
  auto init_slot = [&](std::uint16_t dc) {
    Node& n = nodes_[next];
    n.dc = dc;
    n.name = scenario_.dcs[dc].name + "-" + std::to_string(per_dc[dc]++);
    n.addr = Address{address_host(next), kPort};
    n.prng = node_master.fork();
    Prng id_prng = identity_master.fork();
    const Identity identity = Identity::generate(id_prng);
    n.public_key = identity.public_key();
    n.id = identity.node_id();
    SHOAL_ASSERT(!by_id_.contains(n.id));  // Distinct seeds give distinct keys.
    by_id_.emplace(n.id, next);
    if (scenario_.clock.skew_max.count() > 0) {
      const auto span = static_cast<std::uint64_t>(2 * scenario_.clock.skew_max.count() + 1);
      n.skew_us = static_cast<std::int64_t>(clock_prng.uniform(span)) - scenario_.clock.skew_max.count();
    }
    if (scenario_.clock.drift_ppm_max > 0) {
      n.drift = (clock_prng.uniform_double() * 2 - 1) * scenario_.clock.drift_ppm_max * 1e-6;
    }
    return next++;
  };
  for (std::size_t d = 0; d < scenario_.dcs.size(); ++d) {
    for (std::uint32_t k = 0; k < scenario_.dcs[d].nodes; ++k) {
      init_slot(static_cast<std::uint16_t>(d));
    }
  }
  const std::uint32_t initial = next;
  SHOAL_ASSERT(initial == scenario_.initial_nodes());

  // Fault actions, one per repetition; join waves get their slots now.
  sticky_.resize(scenario_.faults.size());
  for (std::size_t f = 0; f < scenario_.faults.size(); ++f) {
    const FaultSpec& spec = scenario_.faults[f];
    const std::uint32_t reps = spec.every.count() > 0 ? spec.times : 1;
    for (std::uint32_t r = 0; r < reps; ++r) {
      Action action;
      action.kind = spec.kind;
      action.spec = static_cast<int>(f);
      action.dc = spec.dc;
      action.power = spec.power;
      if (spec.kind == FaultKind::kJoin) {
        const std::uint16_t dc = dc_index(spec.dc);
        for (std::uint32_t k = 0; k < spec.select.count; ++k) {
          action.nodes.push_back(init_slot(dc));
        }
      }
      const Instant at = Instant(spec.at + spec.every * r);
      actions_.push_back(std::move(action));
      if (at <= end_) {
        QueuedEvent ev;
        ev.at = at;
        ev.type = EvType::kFault;
        ev.aux = actions_.size() - 1;
        push(std::move(ev));
      }
    }
  }
  SHOAL_ASSERT(next == slots);

  views_.assign(static_cast<std::size_t>(slots) * slots, static_cast<std::uint8_t>(View::kUnknown));
  live_.assign(slots, 0);
  open_tracked_.assign(slots, -1);
  dc_net_down_.assign(scenario_.dcs.size(), 0);
  report_.traffic.resize(static_cast<std::size_t>(scenario_.duration.count() / 1000000) + 1);

  // Bootstrap: initial node k starts at k * spread / N and joins; or, when
  // converged, every initial node starts at 0 s from the roster of all.
  if (scenario_.bootstrap.converged) {
    roster_.reserve(initial);
    for (std::uint32_t k = 0; k < initial; ++k) {
      const Node& n = nodes_[k];
      gossip::Member m;
      m.id = n.id;
      m.name = n.name;
      m.dc = scenario_.dcs[n.dc].name;
      m.addr = n.addr;
      m.public_key = n.public_key;
      m.incarnation = n.incarnation_disk + 1;  // What the core starts with (Config::initial_incarnation + 1).
      m.status = gossip::MemberStatus::kAlive;
      m.health.version = kSimVersion;
      roster_.push_back(std::move(m));
    }
    roster_pending_ = initial;
  }
  for (std::uint32_t k = 0; k < initial; ++k) {
    QueuedEvent ev;
    ev.at = Instant(scenario_.bootstrap.spread * k / initial);
    ev.type = EvType::kStart;
    ev.node = k;
    ev.aux = scenario_.bootstrap.converged ? kStartRestored : scenario_.bootstrap.seeds;
    push(std::move(ev));
  }
}

World::~World() = default;

void World::add_membership_checkers() {
  for (auto& c : make_membership_checkers()) {
    add_checker(std::move(c));
  }
}

void World::add_checker(std::unique_ptr<Checker> checker) { checkers_.push_back(std::move(checker)); }

void World::set_layer(std::unique_ptr<Layer> layer) {
  SHOAL_ASSERT(layer_ == nullptr && !ran_);
  layer_ = layer.get();
  checkers_.push_back(std::move(layer));
}

std::uint16_t World::node_dc(std::uint32_t i) const { return nodes_[i].dc; }
const NodeId& World::node_id(std::uint32_t i) const { return nodes_[i].id; }
std::optional<std::uint32_t> World::index_of_id(const NodeId& id) const {
  const auto it = by_id_.find(id);
  if (it == by_id_.end()) {
    return std::nullopt;
  }
  return it->second;
}

void World::layer_send(std::uint32_t from, std::uint32_t to, Bytes payload, bool reliable, Duration extra) {
  const std::size_t wire = payload.size() + kSealOverheadBytes;
  ++report_.net.layer_sent;
  add_traffic(1, wire);
  log(kLogLayer, from, to, payload.size());
  if (blocked(from, to) || nodes_[from].host_down) {
    ++report_.net.dropped_partition;
    return;
  }
  int copies = 1;
  if (!reliable) {
    const double p = loss(from, to);
    if (p > 0 && net_prng_.chance(p)) {
      ++report_.net.dropped_loss;
      return;
    }
    if (scenario_.net.duplicate > 0 && net_prng_.chance(scenario_.net.duplicate)) {
      copies = 2;
      ++report_.net.duplicated;
    }
  }
  for (int c = 0; c < copies; ++c) {
    Duration lat = latency(from, to) + extra;
    if (!reliable && scenario_.net.reorder > 0 && net_prng_.chance(scenario_.net.reorder)) {
      lat += Duration(static_cast<std::int64_t>(
          net_prng_.uniform(static_cast<std::uint64_t>(scenario_.net.reorder_delay.count()) + 1)));
    }
    QueuedEvent ev;
    ev.at = now_ + lat;
    ev.type = EvType::kLayerMsg;
    ev.node = to;
    ev.from = from;
    ev.aux = reliable ? 1 : 0;
    ev.payload = (c + 1 == copies) ? std::move(payload) : payload;
    push(std::move(ev));
  }
}

void World::layer_timer(std::uint32_t node, Instant at, std::uint64_t token) {
  QueuedEvent ev;
  ev.at = std::max(at, now_);
  if (ev.at > end_) {
    return;
  }
  ev.type = EvType::kLayerTimer;
  ev.node = node;
  ev.gen = nodes_[node].gen;
  ev.aux = token;
  push(std::move(ev));
}

void World::note(std::uint32_t a, std::uint32_t b, std::uint64_t c) { log(kLogNote, a, b, c); }

// --- views --------------------------------------------------------------------

std::uint32_t World::node_count() const { return static_cast<std::uint32_t>(nodes_.size()); }
const std::string& World::node_name(std::uint32_t i) const { return nodes_[i].name; }
bool World::running(std::uint32_t i) const { return nodes_[i].state == Node::State::kRunning; }
bool World::live(std::uint32_t i) const { return running(i) && !nodes_[i].leaving; }
bool World::paused(std::uint32_t i) const { return nodes_[i].is_paused; }
std::uint32_t World::generation(std::uint32_t i) const { return nodes_[i].gen; }
Instant World::started_at(std::uint32_t i) const { return nodes_[i].started; }
Instant World::last_disturbed(std::uint32_t i) const { return nodes_[i].disturbed; }
std::uint64_t World::incarnation_floor(std::uint32_t i) const { return nodes_[i].floor; }
const gossip::Membership* World::core(std::uint32_t i) const { return nodes_[i].core.get(); }

View World::view(std::uint32_t observer, std::uint32_t subject) const {
  return static_cast<View>(views_[static_cast<std::size_t>(observer) * nodes_.size() + subject]);
}

bool World::lossy() const { return scenario_.any_loss() || scenario_.net.bandwidth_bytes_per_second > 0; }

bool World::reachable(std::uint32_t a, std::uint32_t b) const {
  return !nodes_[a].host_down && !nodes_[b].host_down && !blocked(a, b) && !blocked(b, a);
}

void World::wake_at(Instant at) {
  if (at < now_ || at > end_) {
    return;
  }
  QueuedEvent ev;
  ev.at = at;
  ev.type = EvType::kWake;
  push(std::move(ev));
}

void World::violate(std::string_view invariant, std::string message) {
  ++report_.violations_total;
  log(kLogViolation, static_cast<std::uint32_t>(invariant.size()), 0, report_.violations_total);
  if (report_.violations.size() < options_.violations_max) {
    report_.violations.push_back(Violation{to_seconds(now_.time_since_epoch()), std::string(invariant),
                                           std::move(message)});
  }
}

void World::count_false_positive(bool excused, bool suspicion) {
  if (suspicion) {
    ++report_.false_suspicions;
    return;
  }
  ++report_.false_positives;
  if (excused) {
    ++report_.false_positives_excused;
  }
}

// --- event loop ---------------------------------------------------------------

void World::push(QueuedEvent event) {
  event.seq = seq_++;
  queue_.push_back(std::move(event));
  std::push_heap(queue_.begin(), queue_.end(), Later{});
}

void World::advance_to(Instant t) {
  SHOAL_ASSERT(t >= now_);  // Time never goes backwards.
  while (now_ < t) {
    const std::int64_t bucket = now_.time_since_epoch().count() / 1000000;
    const Instant bucket_end = Instant(seconds(bucket + 1));
    const Instant step = std::min(t, bucket_end);
    const double dt = to_seconds(step - now_);
    const double ns = dt * running_count_;
    node_seconds_ += ns;
    if (static_cast<std::size_t>(bucket) < report_.traffic.size()) {
      report_.traffic[static_cast<std::size_t>(bucket)].node_seconds += ns;
    }
    now_ = step;
  }
}

void World::run() {
  SHOAL_ASSERT(!ran_);
  ran_ = true;
  {
    FaultRecord boot;
    boot.kind = FaultKind::kJoin;
    boot.at = Instant{};
    boot.label = "bootstrap";
    boot.spread = scenario_.bootstrap.spread;
    record_fault(std::move(boot));
  }
  while (!queue_.empty() && queue_.front().at <= end_) {
    std::pop_heap(queue_.begin(), queue_.end(), Later{});
    QueuedEvent ev = std::move(queue_.back());
    queue_.pop_back();
    advance_to(ev.at);
    process(ev);
    ++events_;
    if (!steady_from_ && now_ >= Instant(scenario_.bootstrap.spread) && disagreements_ == 0) {
      steady_from_ = now_;
      node_seconds_at_steady_ = node_seconds_;
    }
    for (auto& c : checkers_) {
      c->after_event(*this);
    }
  }
  advance_to(end_);

  // Close the books: open records in the order their events happened, so
  // the awareness plot shows the first events of the run.
  for (std::size_t k = 0; k < tracked_.size(); ++k) {
    const std::uint32_t subject = tracked_[k].subject;
    if (open_tracked_[subject] == static_cast<std::int32_t>(k)) {
      close_tracked(subject);
    }
  }
  for (std::uint32_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].core) {
      const auto& c = nodes_[i].core->counters();
      report_.core.probes_sent += c.probes_sent;
      report_.core.probes_failed += c.probes_failed;
      report_.core.suspicions += c.suspicions;
      report_.core.refutations += c.refutations;
      report_.core.deaths_declared += c.deaths_declared;
      report_.core.push_pulls += c.push_pulls;
      report_.core.decode_errors += c.decode_errors;
    }
  }
  report_.scenario = scenario_.name;
  report_.scenario_path = scenario_.path;
  report_.seed = options_.seed;
  report_.nodes = node_count();
  report_.sim_seconds = to_seconds(end_.time_since_epoch());
  report_.events = events_;
  report_.node_hours = node_seconds_ / 3600.0;
  report_.probe_interval_s = to_seconds(scenario_.gossip.probe_interval);
  const Instant steady = steady_from_.value_or(Instant{});
  report_.steady_from_s = steady_from_ ? to_seconds(steady.time_since_epoch()) : -1;
  {
    std::uint64_t messages = 0;
    std::uint64_t bytes = 0;
    double node_seconds = 0;
    const auto first = static_cast<std::size_t>(std::ceil(to_seconds(steady.time_since_epoch())));
    for (std::size_t b = first; b < report_.traffic.size(); ++b) {
      messages += report_.traffic[b].messages;
      bytes += report_.traffic[b].bytes;
      node_seconds += report_.traffic[b].node_seconds;
    }
    if (node_seconds > 0) {
      report_.messages_per_node_second = static_cast<double>(messages) / node_seconds;
      report_.bytes_per_node_second = static_cast<double>(bytes) / node_seconds;
    }
  }
  for (auto& c : checkers_) {
    c->finish(*this, report_);
  }
  // Finish the log hash last: it covers every event and violation.
  if (!log_buffer_.empty()) {
    crypto_generichash_update(&hash_->state, log_buffer_.data(), log_buffer_.size());
    log_buffer_.clear();
  }
  std::uint8_t digest[kHashBytes];
  crypto_generichash_final(&hash_->state, digest, sizeof digest);
  report_.hash = to_hex(ByteView(digest, sizeof digest));
}

Report World::report() const {
  SHOAL_ASSERT(ran_);
  return report_;
}

void World::process(QueuedEvent& ev) {
  switch (ev.type) {
    case EvType::kStart: {
      Node& n = nodes_[ev.node];
      if (n.state == Node::State::kNotStarted && ev.aux == kStartRestored) {
        start_node(ev.node, {}, /*restore=*/true);
      } else if (n.state == Node::State::kNotStarted) {
        start_node(ev.node, pick_seeds(ev.node, static_cast<std::uint32_t>(ev.aux)));
      }
      break;
    }
    case EvType::kTimer: {
      Node& n = nodes_[ev.node];
      if (n.state != Node::State::kRunning || n.gen != ev.gen || n.is_paused || n.timer_at != ev.at) {
        break;  // Stale: crashed, restarted, paused or re-armed earlier.
      }
      n.timer_at = kNever;
      log(kLogCore, ev.node, 0, 0);
      n.core->on_tick(local_time(ev.node, now_));
      drive(ev.node);
      arm_timer(ev.node, true);
      break;
    }
    case EvType::kDatagram: deliver_datagram(ev); break;
    case EvType::kStreamArrive: stream_arrive(ev); break;
    case EvType::kStreamResult: stream_result(ev); break;
    case EvType::kFault: run_action(static_cast<std::uint32_t>(ev.aux)); break;
    case EvType::kResume: {
      Node& n = nodes_[ev.node];
      if (n.state == Node::State::kRunning && n.gen == ev.gen && n.is_paused && n.paused_until == ev.at) {
        resume_node(ev.node);
      }
      break;
    }
    case EvType::kStop: {
      Node& n = nodes_[ev.node];
      if (n.state == Node::State::kRunning && n.gen == ev.gen && n.leaving) {
        stop_node(ev.node);
      }
      break;
    }
    case EvType::kWake: break;
    case EvType::kLayerMsg: {
      Node& n = nodes_[ev.node];
      if (layer_ == nullptr || n.state != Node::State::kRunning || n.host_down) {
        ++report_.net.dropped_not_running;
        break;
      }
      if (ev.aux != 0 && blocked(ev.from, ev.node)) {
        ++report_.net.dropped_partition;  // A stream whose path was cut meanwhile.
        break;
      }
      if (n.is_paused) {
        n.backlog.push_back(std::move(ev));
        break;
      }
      ++report_.net.layer_delivered;
      layer_->on_message(*this, ev.node, ev.from, ev.payload);
      break;
    }
    case EvType::kLayerTimer: {
      Node& n = nodes_[ev.node];
      if (layer_ != nullptr && n.state == Node::State::kRunning && n.gen == ev.gen && !n.is_paused) {
        layer_->on_timer(*this, ev.node, ev.aux);
      }
      break;
    }
  }
}

// --- clocks ---------------------------------------------------------------------

Instant World::local_time(std::uint32_t i, Instant t) const {
  const Node& n = nodes_[i];
  const std::int64_t us = t.time_since_epoch().count();
  std::int64_t local = kLocalEpoch.count() + n.skew_us + us;
  if (n.drift != 0) {
    local += static_cast<std::int64_t>(std::floor(static_cast<double>(us) * n.drift));
  }
  return Instant(Duration(local));
}

Instant World::sim_time_for_local(std::uint32_t i, Instant local) const {
  const Node& n = nodes_[i];
  const std::int64_t target = local.time_since_epoch().count() - kLocalEpoch.count() - n.skew_us;
  if (n.drift == 0) {
    return Instant(Duration(target));
  }
  // Smallest t with local_time(t) >= local; the estimate is off by at most a few microseconds.
  auto t = static_cast<std::int64_t>(std::ceil(static_cast<double>(target) / (1.0 + n.drift)));
  while (local_time(i, Instant(Duration(t))) < local) {
    ++t;
  }
  while (local_time(i, Instant(Duration(t - 1))) >= local) {
    --t;
  }
  return Instant(Duration(t));
}

// --- node lifecycle ---------------------------------------------------------------

std::vector<std::uint32_t> World::pick_seeds(std::uint32_t self, std::uint32_t count) {
  std::vector<std::uint32_t> candidates;
  for (std::uint32_t j = 0; j < nodes_.size(); ++j) {
    if (j != self && live(j)) {
      candidates.push_back(j);
    }
  }
  std::vector<std::uint32_t> out;
  for (std::uint32_t k = 0; k < count && !candidates.empty(); ++k) {
    const auto pick = static_cast<std::size_t>(world_prng_.uniform(candidates.size()));
    out.push_back(candidates[pick]);
    candidates[pick] = candidates.back();
    candidates.pop_back();
  }
  return out;
}

void World::start_node(std::uint32_t i, std::vector<std::uint32_t> seeds, bool restore) {
  Node& n = nodes_[i];
  SHOAL_ASSERT(n.state != Node::State::kRunning);
  const bool restart = n.state != Node::State::kNotStarted;
  ++n.gen;
  gossip::Config cfg = scenario_.gossip;
  cfg.name = n.name;
  cfg.dc = scenario_.dcs[n.dc].name;
  cfg.public_key = n.public_key;
  cfg.advertise = n.addr;
  cfg.initial_incarnation = n.incarnation_disk;
  cfg.health.version = kSimVersion;
  const Instant local = local_time(i, now_);
  n.core = std::make_unique<gossip::Membership>(std::move(cfg), n.prng, local);
  n.floor = n.core->self().incarnation;
  n.state = Node::State::kRunning;
  n.is_paused = false;
  n.leaving = false;
  n.host_down = false;
  n.timer_at = kNever;
  n.started = now_;
  n.egress_free_at = now_;
  if (restart) {
    n.disturbed = now_;
  }
  ++running_count_;
  close_tracked(i);
  // A new process knows nobody: reset its row of the mirror, then count it.
  std::uint8_t* row = &views_[static_cast<std::size_t>(i) * nodes_.size()];
  std::memset(row, 0, nodes_.size());
  if (restore) {
    // Seeded with every initial node, all alive; the core emits no events
    // for a restore, so the mirror row is set from the same roster.
    SHOAL_ASSERT(roster_pending_ > 0);
    const std::size_t added = n.core->restore_members(local, roster_);
    SHOAL_ASSERT(added + 1 == roster_.size());
    std::memset(row, static_cast<int>(View::kAlive), roster_.size());
    row[i] = static_cast<std::uint8_t>(View::kUnknown);
    if (--roster_pending_ == 0) {
      roster_.clear();
      roster_.shrink_to_fit();
    }
  }
  set_truth(i, true);
  set_counted(i, true);
  if (restart || now_ > Instant(scenario_.bootstrap.spread)) {
    open_tracked(i, false);
  }
  log(kLogCore, i, n.gen, 1);
  if (!seeds.empty()) {
    std::vector<Address> addrs;
    for (std::uint32_t s : seeds) {
      addrs.push_back(nodes_[s].addr);
    }
    n.core->join(local, addrs);
  }
  drive(i);
  if (layer_ != nullptr && nodes_[i].state == Node::State::kRunning) {
    layer_->on_node_start(*this, i, restart);
  }
}

void World::crash_node(std::uint32_t i, bool host_down) {
  Node& n = nodes_[i];
  n.host_down = n.host_down || host_down;
  if (n.state != Node::State::kRunning) {
    return;
  }
  stop_node(i);
  n.state = Node::State::kCrashed;
  open_tracked(i, true);
}

void World::stop_node(std::uint32_t i) {
  Node& n = nodes_[i];
  SHOAL_ASSERT(n.state == Node::State::kRunning);
  SHOAL_ASSERT(n.core != nullptr);
  n.incarnation_disk = std::max(n.incarnation_disk, n.core->self().incarnation);
  const auto& c = n.core->counters();
  report_.core.probes_sent += c.probes_sent;
  report_.core.probes_failed += c.probes_failed;
  report_.core.suspicions += c.suspicions;
  report_.core.refutations += c.refutations;
  report_.core.deaths_declared += c.deaths_declared;
  report_.core.push_pulls += c.push_pulls;
  report_.core.decode_errors += c.decode_errors;
  set_counted(i, false);
  n.core.reset();
  n.state = Node::State::kLeft;
  n.is_paused = false;
  n.leaving = false;
  n.backlog.clear();
  n.backlog.shrink_to_fit();
  n.timer_at = kNever;
  n.disturbed = now_;
  SHOAL_ASSERT(running_count_ > 0);
  --running_count_;
  set_truth(i, false);
  close_tracked(i);
  log(kLogCore, i, n.gen, 2);
  if (layer_ != nullptr) {
    layer_->on_node_stop(*this, i);
  }
}

void World::pause_node(std::uint32_t i, Duration d) {
  Node& n = nodes_[i];
  if (n.state != Node::State::kRunning || n.is_paused) {
    return;
  }
  n.is_paused = true;
  n.paused_until = now_ + d;
  n.timer_at = kNever;
  n.disturbed = now_;
  QueuedEvent ev;
  ev.at = n.paused_until;
  ev.type = EvType::kResume;
  ev.node = i;
  ev.gen = n.gen;
  push(std::move(ev));
}

void World::resume_node(std::uint32_t i) {
  Node& n = nodes_[i];
  n.is_paused = false;
  n.disturbed = now_;
  std::vector<QueuedEvent> backlog = std::move(n.backlog);
  n.backlog.clear();
  log(kLogCore, i, n.gen, 3);
  for (auto& ev : backlog) {
    process(ev);
    if (nodes_[i].state != Node::State::kRunning || nodes_[i].is_paused) {
      return;
    }
  }
  n.core->on_tick(local_time(i, now_));
  drive(i);
  arm_timer(i, true);
  if (layer_ != nullptr && nodes_[i].state == Node::State::kRunning && !nodes_[i].is_paused) {
    layer_->on_node_resume(*this, i);
  }
}

void World::drive(std::uint32_t i) {
  Node& n = nodes_[i];
  gossip::Membership& core = *n.core;
  while (auto dg = core.poll_transmit()) {
    send_datagram(i, std::move(*dg));
  }
  while (auto sr = core.poll_stream()) {
    send_stream(i, std::move(*sr));
  }
  while (auto ev = core.poll_event()) {
    on_core_event(i, *ev);
  }
  if (n.leaving && core.leave_done(local_time(i, now_))) {
    stop_node(i);
    return;
  }
  arm_timer(i, false);
}

void World::arm_timer(std::uint32_t i, bool after_tick) {
  Node& n = nodes_[i];
  if (n.state != Node::State::kRunning || n.is_paused) {
    return;
  }
  const auto deadline = n.core->next_deadline();
  if (!deadline) {
    return;
  }
  Instant at = sim_time_for_local(i, *deadline);
  if (at <= now_) {
    if (after_tick) {
      // The core asked to be woken in the past right after a tick: a core
      // bug, but not one to spin on. Count it and wake a millisecond later.
      ++report_.tick_storms;
      at = now_ + milliseconds(1);
    } else {
      at = now_;
    }
  }
  if (at >= n.timer_at) {
    return;  // An earlier or equal timer is already armed; it will re-arm.
  }
  n.timer_at = at;
  QueuedEvent ev;
  ev.at = at;
  ev.type = EvType::kTimer;
  ev.node = i;
  ev.gen = n.gen;
  push(std::move(ev));
}

// --- network ----------------------------------------------------------------------

std::optional<std::uint32_t> World::index_of(const Address& address) const {
  if (address.port != kPort) {
    return std::nullopt;
  }
  const std::string& h = address.host;
  if (h.size() < 8 || h.compare(0, 3, "10.") != 0) {
    return std::nullopt;
  }
  std::uint32_t parts[3] = {0, 0, 0};
  std::size_t k = 0;
  std::size_t pos = 3;
  while (k < 3) {
    std::uint32_t v = 0;
    std::size_t digits = 0;
    while (pos < h.size() && h[pos] >= '0' && h[pos] <= '9' && digits < 3) {
      v = v * 10 + static_cast<std::uint32_t>(h[pos] - '0');
      ++pos;
      ++digits;
    }
    if (digits == 0 || v > 255) {
      return std::nullopt;
    }
    parts[k++] = v;
    if (k < 3) {
      if (pos >= h.size() || h[pos] != '.') {
        return std::nullopt;
      }
      ++pos;
    }
  }
  if (pos != h.size()) {
    return std::nullopt;
  }
  const std::uint32_t n = (parts[0] << 16) | (parts[1] << 8) | parts[2];
  if (n == 0 || n > nodes_.size()) {
    return std::nullopt;
  }
  return n - 1;
}

bool World::blocked(std::uint32_t from, std::uint32_t to) const {
  const std::uint16_t a = nodes_[from].dc;
  const std::uint16_t b = nodes_[to].dc;
  if (a != b && (dc_net_down_[a] != 0 || dc_net_down_[b] != 0)) {
    return true;
  }
  for (const auto& p : partitions_) {
    const std::uint8_t sa = p.side[from];
    const std::uint8_t sb = p.side[to];
    if (sa != 0 && sb != 0 && sa != sb && (!p.one_way || sa == 1)) {
      return true;
    }
  }
  return false;
}

double World::loss(std::uint32_t from, std::uint32_t to) const {
  const std::string& a = scenario_.dcs[nodes_[from].dc].name;
  const std::string& b = scenario_.dcs[nodes_[to].dc].name;
  for (const auto& link : scenario_.net.links) {
    if ((link.from == a && link.to == b) || (link.from == b && link.to == a)) {
      return link.loss.value_or(scenario_.net.loss);
    }
  }
  return scenario_.net.loss;
}

Duration World::latency(std::uint32_t from, std::uint32_t to) {
  const std::uint16_t a = nodes_[from].dc;
  const std::uint16_t b = nodes_[to].dc;
  Duration mean = scenario_.net.latency_mean;
  Duration jitter = scenario_.net.latency_jitter;
  if (a != b) {
    mean = scenario_.net.wan_latency_mean;
    jitter = scenario_.net.wan_latency_jitter;
    const std::string& na = scenario_.dcs[a].name;
    const std::string& nb = scenario_.dcs[b].name;
    for (const auto& link : scenario_.net.links) {
      if ((link.from == na && link.to == nb) || (link.from == nb && link.to == na)) {
        mean = link.latency_mean;
        jitter = link.latency_jitter;
      }
    }
  }
  std::int64_t us = mean.count();
  if (jitter.count() > 0) {
    us += static_cast<std::int64_t>(net_prng_.uniform(static_cast<std::uint64_t>(2 * jitter.count() + 1))) -
          jitter.count();
  }
  return Duration(std::max<std::int64_t>(us, 1));
}

void World::add_traffic(std::uint64_t messages, std::uint64_t bytes) {
  const auto bucket = static_cast<std::size_t>(now_.time_since_epoch().count() / 1000000);
  if (bucket < report_.traffic.size()) {
    report_.traffic[bucket].messages += messages;
    report_.traffic[bucket].bytes += bytes;
  }
}

void World::send_datagram(std::uint32_t from, gossip::Datagram datagram) {
  const std::size_t wire = datagram.payload.size() + kSealOverheadBytes;
  ++report_.net.datagrams_sent;
  add_traffic(1, wire);
  const auto to = index_of(datagram.to);
  log(kLogSend, from, to.value_or(UINT32_MAX), datagram.payload.size());
  if (!to) {
    ++report_.net.dropped_bad_address;
    return;
  }
  if (blocked(from, *to) || nodes_[from].host_down) {
    ++report_.net.dropped_partition;
    return;
  }
  Node& n = nodes_[from];
  Instant depart = now_;
  if (scenario_.net.bandwidth_bytes_per_second > 0) {
    const Instant start = std::max(now_, n.egress_free_at);
    if (start - now_ > scenario_.net.egress_queue_max) {
      ++report_.net.dropped_queue;
      return;
    }
    const auto tx_us = static_cast<std::int64_t>(wire * 1000000 / scenario_.net.bandwidth_bytes_per_second);
    depart = start + Duration(std::max<std::int64_t>(tx_us, 1));
    n.egress_free_at = depart;
  }
  const double p = loss(from, *to);
  if (p > 0 && net_prng_.chance(p)) {
    ++report_.net.dropped_loss;
    return;
  }
  int copies = 1;
  if (scenario_.net.duplicate > 0 && net_prng_.chance(scenario_.net.duplicate)) {
    copies = 2;
    ++report_.net.duplicated;
  }
  for (int c = 0; c < copies; ++c) {
    Duration lat = latency(from, *to);
    if (scenario_.net.reorder > 0 && net_prng_.chance(scenario_.net.reorder)) {
      lat += Duration(static_cast<std::int64_t>(
          net_prng_.uniform(static_cast<std::uint64_t>(scenario_.net.reorder_delay.count()) + 1)));
    }
    QueuedEvent ev;
    ev.at = depart + lat;
    ev.type = EvType::kDatagram;
    ev.node = *to;
    ev.from = from;
    ev.payload = (c + 1 == copies) ? std::move(datagram.payload) : datagram.payload;
    push(std::move(ev));
  }
}

void World::deliver_datagram(QueuedEvent& ev) {
  Node& n = nodes_[ev.node];
  if (n.state != Node::State::kRunning || n.host_down) {
    ++report_.net.dropped_not_running;
    return;
  }
  if (n.is_paused) {
    if (n.backlog.size() < scenario_.net.paused_backlog_max) {
      n.backlog.push_back(std::move(ev));
    } else {
      ++report_.net.dropped_backlog;
    }
    return;
  }
  ++report_.net.datagrams_delivered;
  n.core->on_datagram(local_time(ev.node, now_), nodes_[ev.from].addr, ev.payload);
  drive(ev.node);
}

void World::send_stream(std::uint32_t from, gossip::StreamRequest request) {
  ++report_.net.streams;
  add_traffic(1, request.payload.size() + kSealOverheadBytes);
  const auto to = index_of(request.to);
  log(kLogStream, from, to.value_or(UINT32_MAX), request.id);
  QueuedEvent result;
  result.type = EvType::kStreamResult;
  result.node = from;
  result.gen = nodes_[from].gen;
  result.aux = request.id;
  result.t0 = now_;
  // As the agent does: a reachability check gives up after probe_timeout,
  // a push-pull after the stream timeout.
  const Duration timeout = request.kind == gossip::StreamKind::kReachability ? scenario_.gossip.probe_timeout
                                                                              : scenario_.net.stream_timeout;
  if (!to || !reachable(from, *to)) {
    ++report_.net.stream_timeouts;
    result.at = now_ + timeout;
    result.outcome = gossip::StreamOutcome::kTimeout;
    push(std::move(result));
    return;
  }
  const Duration rtt = latency(from, *to) + latency(*to, from);
  if (nodes_[*to].state != Node::State::kRunning) {
    ++report_.net.stream_refused;
    result.at = now_ + rtt;
    result.outcome = gossip::StreamOutcome::kRefused;
    push(std::move(result));
    return;
  }
  if (request.kind == gossip::StreamKind::kReachability) {
    // The target's kernel completes the handshake even when the process is paused.
    result.at = now_ + rtt;
    result.outcome = gossip::StreamOutcome::kConnected;
    push(std::move(result));
    return;
  }
  QueuedEvent arrive;
  arrive.at = now_ + rtt + latency(from, *to);
  arrive.type = EvType::kStreamArrive;
  arrive.node = *to;
  arrive.from = from;
  arrive.gen = nodes_[from].gen;
  arrive.gen2 = nodes_[*to].gen;
  arrive.aux = request.id;
  arrive.t0 = now_;
  arrive.payload = std::move(request.payload);
  push(std::move(arrive));
}

void World::stream_arrive(QueuedEvent& ev) {
  Node& n = nodes_[ev.node];
  const Duration timeout = scenario_.net.stream_timeout;
  QueuedEvent result;
  result.type = EvType::kStreamResult;
  result.node = ev.from;
  result.gen = ev.gen;
  result.aux = ev.aux;
  result.t0 = ev.t0;
  if (n.state != Node::State::kRunning || n.gen != ev.gen2 || n.host_down) {
    result.at = now_ + latency(ev.node, ev.from);  // Connection reset.
    result.outcome = gossip::StreamOutcome::kFailed;
    push(std::move(result));
    return;
  }
  if (n.is_paused) {
    if (n.paused_until < ev.t0 + timeout && n.backlog.size() < scenario_.net.paused_backlog_max) {
      n.backlog.push_back(std::move(ev));  // Served when the process resumes.
      return;
    }
    ++report_.net.stream_timeouts;
    result.at = std::max(now_, ev.t0 + timeout);
    result.outcome = gossip::StreamOutcome::kTimeout;
    push(std::move(result));
    return;
  }
  auto reply = n.core->on_stream_request(local_time(ev.node, now_), nodes_[ev.from].addr, ev.payload);
  drive(ev.node);
  result.at = now_ + latency(ev.node, ev.from);
  if (!reply) {
    result.outcome = gossip::StreamOutcome::kFailed;
  } else {
    add_traffic(0, reply->size() + kSealOverheadBytes);
    result.outcome = gossip::StreamOutcome::kReplied;
    result.payload = std::move(*reply);
  }
  if (result.at > ev.t0 + timeout) {
    ++report_.net.stream_timeouts;
    result.at = ev.t0 + timeout;
    result.outcome = gossip::StreamOutcome::kTimeout;
    result.payload.clear();
  }
  push(std::move(result));
}

void World::stream_result(QueuedEvent& ev) {
  Node& n = nodes_[ev.node];
  if (n.state != Node::State::kRunning || n.gen != ev.gen) {
    return;  // The requester is gone; nobody reads the socket.
  }
  if (n.is_paused) {
    n.backlog.push_back(std::move(ev));
    return;
  }
  log(kLogStream, ev.node, static_cast<std::uint32_t>(ev.outcome), ev.aux);
  n.core->on_stream_result(local_time(ev.node, now_), ev.aux, ev.outcome, ev.payload);
  drive(ev.node);
}

// --- faults -------------------------------------------------------------------------

void World::mark_network_disturbed() { network_disturbed_at_ = now_; }

void World::record_fault(FaultRecord record) {
  log(kLogFault, static_cast<std::uint32_t>(record.kind), static_cast<std::uint32_t>(record.nodes.size()),
      static_cast<std::uint64_t>(record.at.time_since_epoch().count()));
  for (auto& c : checkers_) {
    c->on_fault(*this, record);
  }
}

std::vector<std::uint32_t> World::select(const FaultSpec& spec, std::size_t spec_index, bool want_running) {
  if (spec.sticky && !sticky_[spec_index].empty()) {
    return sticky_[spec_index];
  }
  std::vector<std::uint32_t> out;
  for (const auto& name : spec.select.names) {
    for (std::uint32_t i = 0; i < nodes_.size(); ++i) {
      if (nodes_[i].name == name) {
        out.push_back(i);
      }
    }
  }
  if (spec.select.count > 0 || spec.select.fraction > 0) {
    std::vector<std::uint32_t> candidates;
    for (std::uint32_t i = 0; i < nodes_.size(); ++i) {
      const Node& n = nodes_[i];
      if (!spec.select.dc.empty() && scenario_.dcs[n.dc].name != spec.select.dc) {
        continue;
      }
      if (std::find(out.begin(), out.end(), i) != out.end()) {
        continue;
      }
      const bool ok = want_running ? (live(i) && !n.is_paused)
                                   : (n.state == Node::State::kCrashed || n.state == Node::State::kLeft) &&
                                         !n.host_down;
      if (ok) {
        candidates.push_back(i);
      }
    }
    std::size_t want = spec.select.count;
    if (spec.select.fraction > 0) {
      want = std::max<std::size_t>(
          want, static_cast<std::size_t>(std::llround(spec.select.fraction * static_cast<double>(candidates.size()))));
      want = std::max<std::size_t>(want, 1);
    }
    for (std::size_t k = 0; k < want && !candidates.empty(); ++k) {
      const auto pick = static_cast<std::size_t>(world_prng_.uniform(candidates.size()));
      out.push_back(candidates[pick]);
      candidates[pick] = candidates.back();
      candidates.pop_back();
    }
  }
  if (spec.sticky) {
    sticky_[spec_index] = out;
  }
  return out;
}

void World::run_action(std::uint32_t action_index) {
  const Action action = actions_[action_index];  // Copy: follow-ups may grow actions_.
  const FaultSpec* spec = action.spec >= 0 ? &scenario_.faults[static_cast<std::size_t>(action.spec)] : nullptr;
  auto draw_duration = [&]() -> Duration {
    SHOAL_ASSERT(spec != nullptr && spec->duration.has_value());
    if (!spec->duration_max || *spec->duration_max == *spec->duration) {
      return *spec->duration;
    }
    const auto span = static_cast<std::uint64_t>((*spec->duration_max - *spec->duration).count()) + 1;
    return *spec->duration + Duration(static_cast<std::int64_t>(world_prng_.uniform(span)));
  };
  auto follow_up = [&](Action next, Duration after) {
    actions_.push_back(std::move(next));
    QueuedEvent ev;
    ev.at = now_ + after;
    ev.type = EvType::kFault;
    ev.aux = actions_.size() - 1;
    push(std::move(ev));
  };
  auto dc_of = [&](const std::string& name) {
    for (std::size_t d = 0; d < scenario_.dcs.size(); ++d) {
      if (scenario_.dcs[d].name == name) {
        return d;
      }
    }
    SHOAL_ASSERT(false);  // Validated by the parser.
    return std::size_t{0};
  };
  FaultRecord rec;
  rec.kind = action.kind;
  rec.at = now_;
  rec.label = std::string(fault_kind_name(action.kind));
  auto names = [&](const std::vector<std::uint32_t>& nodes) {
    std::string s;
    for (std::size_t k = 0; k < nodes.size() && k < 5; ++k) {
      s += (k == 0 ? " " : ",") + nodes_[nodes[k]].name;
    }
    if (nodes.size() > 5) {
      s += ",... (" + std::to_string(nodes.size()) + " nodes)";
    }
    return s;
  };

  switch (action.kind) {
    case FaultKind::kCrash: {
      rec.nodes = spec != nullptr ? select(*spec, static_cast<std::size_t>(action.spec), true) : action.nodes;
      const bool host_down = spec != nullptr && spec->power;
      for (std::uint32_t i : rec.nodes) {
        crash_node(i, host_down);
      }
      if (spec != nullptr && spec->duration) {
        for (std::uint32_t i : rec.nodes) {
          Action restart;
          restart.kind = FaultKind::kRestart;
          restart.nodes = {i};
          follow_up(std::move(restart), draw_duration());
        }
      }
      break;
    }
    case FaultKind::kRestart: {
      if (spec != nullptr && (!spec->select.names.empty() || spec->select.count > 0 || spec->select.fraction > 0)) {
        rec.nodes = select(*spec, static_cast<std::size_t>(action.spec), false);
      } else if (spec != nullptr) {
        for (std::uint32_t i = 0; i < nodes_.size(); ++i) {
          const Node& n = nodes_[i];
          if ((n.state == Node::State::kCrashed || n.state == Node::State::kLeft) && !n.host_down) {
            rec.nodes.push_back(i);
          }
        }
      } else {
        rec.nodes = action.nodes;  // The follow-up of a crash or leave: power comes back too.
        for (std::uint32_t i : rec.nodes) {
          nodes_[i].host_down = false;
        }
      }
      std::vector<std::uint32_t> started;
      for (std::uint32_t i : rec.nodes) {
        if (nodes_[i].state != Node::State::kRunning && nodes_[i].state != Node::State::kNotStarted &&
            !nodes_[i].host_down) {
          start_node(i, pick_seeds(i, kRejoinSeeds));
          started.push_back(i);
        }
      }
      rec.nodes = std::move(started);
      break;
    }
    case FaultKind::kPause: {
      SHOAL_ASSERT(spec != nullptr);
      rec.nodes = select(*spec, static_cast<std::size_t>(action.spec), true);
      for (std::uint32_t i : rec.nodes) {
        pause_node(i, draw_duration());
      }
      break;
    }
    case FaultKind::kDcOutage: {
      const std::size_t d = dc_of(action.dc);
      rec.label += " " + action.dc;
      if (action.power) {
        for (std::uint32_t i = 0; i < nodes_.size(); ++i) {
          if (nodes_[i].dc == d && nodes_[i].state != Node::State::kNotStarted) {
            rec.nodes.push_back(i);
            crash_node(i, true);
          }
        }
      } else {
        dc_net_down_[d] = 1;
        for (std::uint32_t i = 0; i < nodes_.size(); ++i) {
          if (nodes_[i].dc == d) {
            rec.nodes.push_back(i);
          }
        }
      }
      mark_network_disturbed();
      if (spec != nullptr && spec->duration) {
        Action back;
        back.kind = FaultKind::kDcReturn;
        back.dc = action.dc;
        back.power = action.power;
        follow_up(std::move(back), draw_duration());
      }
      break;
    }
    case FaultKind::kDcReturn: {
      const std::size_t d = dc_of(action.dc);
      rec.label += " " + action.dc;
      dc_net_down_[d] = 0;
      mark_network_disturbed();
      for (std::uint32_t i = 0; i < nodes_.size(); ++i) {
        Node& n = nodes_[i];
        if (n.dc == d && n.host_down) {
          n.host_down = false;
          rec.nodes.push_back(i);
          if (n.state == Node::State::kCrashed) {
            start_node(i, pick_seeds(i, kRejoinSeeds));
          }
        }
      }
      break;
    }
    case FaultKind::kPartition: {
      SHOAL_ASSERT(spec != nullptr);
      Partition p;
      p.id = action_index;
      p.one_way = spec->one_way;
      p.side.assign(nodes_.size(), 0);
      if (!spec->groups.empty()) {
        for (std::size_t g = 0; g < spec->groups.size(); ++g) {
          for (const auto& name : spec->groups[g]) {
            const std::size_t d = dc_of(name);
            for (std::uint32_t i = 0; i < nodes_.size(); ++i) {
              if (nodes_[i].dc == d) {
                p.side[i] = static_cast<std::uint8_t>(g + 1);
              }
            }
          }
        }
      } else {
        std::fill(p.side.begin(), p.side.end(), 2);
        for (std::uint32_t i : select(*spec, static_cast<std::size_t>(action.spec), true)) {
          p.side[i] = 1;
          rec.nodes.push_back(i);
        }
      }
      rec.label += spec->one_way ? " (one way)" : "";
      partitions_.push_back(std::move(p));
      mark_network_disturbed();
      if (spec->duration) {
        Action heal;
        heal.kind = FaultKind::kHeal;
        heal.partition_id = action_index;
        follow_up(std::move(heal), draw_duration());
      }
      break;
    }
    case FaultKind::kHeal: {
      if (action.partition_id >= 0) {
        std::erase_if(partitions_, [&](const Partition& p) { return p.id == action.partition_id; });
      } else {
        partitions_.clear();
      }
      mark_network_disturbed();
      break;
    }
    case FaultKind::kJoin: {
      SHOAL_ASSERT(spec != nullptr);
      rec.nodes = action.nodes;
      rec.spread = spec->spread;
      const auto count = static_cast<std::int64_t>(action.nodes.size());
      for (std::int64_t k = 0; k < count; ++k) {
        QueuedEvent ev;
        ev.at = now_ + spec->spread * k / std::max<std::int64_t>(count, 1);
        ev.type = EvType::kStart;
        ev.node = action.nodes[static_cast<std::size_t>(k)];
        ev.aux = kRejoinSeeds;
        push(std::move(ev));
      }
      break;
    }
    case FaultKind::kLeave: {
      SHOAL_ASSERT(spec != nullptr);
      rec.nodes = select(*spec, static_cast<std::size_t>(action.spec), true);
      for (std::uint32_t i : rec.nodes) {
        Node& n = nodes_[i];
        if (n.state != Node::State::kRunning || n.leaving) {
          continue;
        }
        n.leaving = true;
        n.core->leave(local_time(i, now_));
        QueuedEvent stop;
        stop.at = now_ + kLeaveGrace;
        stop.type = EvType::kStop;
        stop.node = i;
        stop.gen = n.gen;
        push(std::move(stop));
        drive(i);
      }
      if (spec->duration) {
        Action rejoin;
        rejoin.kind = FaultKind::kRestart;
        rejoin.nodes = rec.nodes;
        follow_up(std::move(rejoin), draw_duration());
      }
      break;
    }
  }
  rec.label += names(rec.nodes);
  record_fault(std::move(rec));
}

// --- the view mirror and measurements ---------------------------------------------

void World::on_core_event(std::uint32_t observer, const gossip::Event& event) {
  const auto it = by_id_.find(event.member.id);
  if (it == by_id_.end()) {
    return;  // Not a node of this world; the core made it up or decoded garbage.
  }
  const std::uint32_t subject = it->second;
  log(kLogEvent, observer, subject,
      (static_cast<std::uint64_t>(event.kind) << 56) | (static_cast<std::uint64_t>(event.member.status) << 48) |
          (event.member.incarnation & 0xffffffffffffULL));
  if (subject == observer) {
    return;
  }
  set_view(observer, subject, view_from_status(event.member.status), event);
}

bool World::bad(std::uint32_t observer, std::uint32_t subject) const {
  if (observer == subject) {
    return false;
  }
  const View v = view(observer, subject);
  return live_[subject] != 0 ? !seen_alive(v) : seen_alive(v);
}

void World::set_view(std::uint32_t o, std::uint32_t s, View v, const gossip::Event& event) {
  const std::size_t idx = static_cast<std::size_t>(o) * nodes_.size() + s;
  const View before = static_cast<View>(views_[idx]);
  if (before != v) {
    const bool counted = nodes_[o].state == Node::State::kRunning;
    if (counted) {
      disagreements_ -= bad(o, s) ? 1 : 0;
    }
    views_[idx] = static_cast<std::uint8_t>(v);
    if (counted) {
      disagreements_ += bad(o, s) ? 1 : 0;
    }
  }
  if (open_tracked_[s] >= 0) {
    Tracked& t = tracked_[static_cast<std::size_t>(open_tracked_[s])];
    const Duration since = now_ - t.at;
    bool aware = false;
    if (t.crash) {
      if (v == View::kSuspect && !t.first_suspect) {
        t.first_suspect = since;
      }
      if (v == View::kDead && !t.first_dead) {
        t.first_dead = since;
        if (!t.first_suspect) {
          t.first_suspect = since;
        }
      }
      aware = v == View::kDead || v == View::kLeft;
    } else {
      aware = seen_alive(v) && event.member.incarnation >= nodes_[s].floor;
    }
    const std::uint64_t bit = 1ULL << (o % 64);
    if (aware && (t.aware_bits[o / 64] & bit) == 0) {
      t.aware_bits[o / 64] |= bit;
      t.aware.emplace_back(since, o);
    }
  }
  if (before != v) {
    for (auto& c : checkers_) {
      c->on_view(*this, o, s, before, event);
    }
  }
}

void World::set_truth(std::uint32_t s, bool is_live) {
  if ((live_[s] != 0) == is_live) {
    return;
  }
  std::int64_t delta = 0;
  for (std::uint32_t o = 0; o < nodes_.size(); ++o) {
    if (o == s || nodes_[o].state != Node::State::kRunning) {
      continue;
    }
    const bool alive_view = seen_alive(view(o, s));
    // As live, a non-alive view is bad; as gone, an alive view is bad.
    delta += is_live ? (alive_view ? -1 : 1) : (alive_view ? 1 : -1);
  }
  live_[s] = is_live ? 1 : 0;
  disagreements_ = static_cast<std::uint64_t>(static_cast<std::int64_t>(disagreements_) + delta);
}

void World::set_counted(std::uint32_t o, bool counted) {
  std::uint64_t row = 0;
  for (std::uint32_t s = 0; s < nodes_.size(); ++s) {
    row += bad(o, s) ? 1 : 0;
  }
  if (counted) {
    disagreements_ += row;
  } else {
    SHOAL_ASSERT(disagreements_ >= row);
    disagreements_ -= row;
  }
}

void World::open_tracked(std::uint32_t subject, bool crash) {
  close_tracked(subject);
  if (tracked_.size() >= kTrackedMax) {
    return;
  }
  Tracked t;
  t.subject = subject;
  t.crash = crash;
  t.at = now_;
  t.label = std::string(crash ? "crash of " : "join of ") + nodes_[subject].name + " at " + seconds_label(now_);
  t.aware_bits.assign(nodes_.size() / 64 + 1, 0);
  tracked_.push_back(std::move(t));
  open_tracked_[subject] = static_cast<std::int32_t>(tracked_.size() - 1);
}

void World::close_tracked(std::uint32_t subject) {
  const std::int32_t idx = open_tracked_[subject];
  if (idx < 0) {
    return;
  }
  open_tracked_[subject] = -1;
  Tracked& t = tracked_[static_cast<std::size_t>(idx)];
  // Expected observers: running now and continuously since before the event.
  std::uint32_t expected = 0;
  for (std::uint32_t o = 0; o < nodes_.size(); ++o) {
    if (o != subject && nodes_[o].state == Node::State::kRunning && nodes_[o].started <= t.at) {
      ++expected;
    }
  }
  std::vector<Duration> times;
  for (const auto& [since, o] : t.aware) {
    if (nodes_[o].state == Node::State::kRunning && nodes_[o].started <= t.at) {
      times.push_back(since);
    }
  }
  std::sort(times.begin(), times.end());
  const bool complete = expected > 0 && times.size() == expected;
  const Duration open_for = now_ - t.at;
  if (t.crash) {
    if (t.first_suspect) {
      report_.first_suspect_s.push_back(to_seconds(*t.first_suspect));
    }
    if (t.first_dead) {
      report_.first_dead_s.push_back(to_seconds(*t.first_dead));
    }
    if (complete) {
      ++report_.crashes_tracked;
      report_.full_dead_s.push_back(to_seconds(times.back()));
      if (t.first_dead) {
        report_.dissemination_s.push_back(to_seconds(times.back() - *t.first_dead));
      }
    } else if (open_for >= scenario_.bounds.detection && expected > 0) {
      ++report_.crashes_tracked;
      ++report_.crashes_incomplete;
    }
  } else if (complete) {
    report_.join_full_s.push_back(to_seconds(times.back()));
  }
  if (report_.awareness.size() < options_.awareness_series_max && expected > 0 && !times.empty()) {
    AwarenessSeries series;
    series.label = t.label;
    series.points.emplace_back(0.0, 0.0);
    for (std::size_t k = 0; k < times.size(); ++k) {
      series.points.emplace_back(to_seconds(times[k]), static_cast<double>(k + 1) / expected);
    }
    report_.awareness.push_back(std::move(series));
  }
  t.aware.clear();
  t.aware.shrink_to_fit();
  t.aware_bits.clear();
  t.aware_bits.shrink_to_fit();
}

void World::log(std::uint8_t type, std::uint32_t a, std::uint32_t b, std::uint64_t c) {
  std::uint8_t rec[25];
  const std::int64_t t = now_.time_since_epoch().count();
  rec[0] = type;
  std::memcpy(rec + 1, &t, 8);
  std::memcpy(rec + 9, &a, 4);
  std::memcpy(rec + 13, &b, 4);
  std::memcpy(rec + 17, &c, 8);
  log_buffer_.insert(log_buffer_.end(), rec, rec + sizeof rec);
  if (log_buffer_.size() >= kLogFlushBytes) {
    crypto_generichash_update(&hash_->state, log_buffer_.data(), log_buffer_.size());
    log_buffer_.clear();
  }
}

Report run_scenario(const Scenario& scenario, std::uint64_t seed) {
  WorldOptions options;
  options.seed = seed;
  World world(scenario, options);
  world.add_membership_checkers();
  if (scenario.placement.enabled) {
    world.set_layer(make_placement_layer(scenario, seed));
  }
  world.run();
  return world.report();
}

}  // namespace shoal::sim
