// sim/placement.cc: node/core's placement register on every virtual node,
// the agent's save / failover / repair / collect loops over it, modelled
// storage and transfer, and the placement invariants.
//
// Design note. Durable state (acceptor records, stored snapshots, whether a
// working directory exists) lives in PNode and survives crashes; everything
// else (the Proposer, operation continuations, repair bookkeeping) lives in
// Live and dies with the process. Every decision the agent delegates to
// node/core is delegated here to the same functions; what is re-expressed
// is only the glue (which project to look at when, and the continuations).
// Nothing iterates an unordered container; every random draw comes from a
// Prng derived from the seed, so a run stays a pure function of the seed.

#include "sim/placement.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <set>

#include "base/assert.h"
#include "node/core/paxos.h"
#include "node/core/project_plan.h"
#include "node/core/proposer.h"
#include "node/core/ranking.h"

namespace shoal::sim {
namespace {

using core::AcceptorRecord;
using core::Placement;
using core::RegisterValue;

constexpr std::uint8_t kMsgPaxos = 1;
constexpr std::uint8_t kMsgPush = 2;
constexpr std::uint8_t kMsgPushReply = 3;
constexpr Instant kNever = Instant::max();

std::string project_name(std::uint32_t k) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "p%07u", k);
  return buf;
}

std::optional<std::uint32_t> project_index(std::string_view name) {
  if (name.size() < 2 || name[0] != 'p') {
    return std::nullopt;
  }
  std::uint64_t v = 0;
  for (std::size_t k = 1; k < name.size(); ++k) {
    if (name[k] < '0' || name[k] > '9') {
      return std::nullopt;
    }
    v = v * 10 + static_cast<std::uint64_t>(name[k] - '0');
    if (v > UINT32_MAX) {
      return std::nullopt;
    }
  }
  return static_cast<std::uint32_t>(v);
}

Hash256 snap_hash(std::uint64_t snap) {
  Hash256 h{};
  std::memcpy(h.data(), &snap, sizeof snap);
  return h;
}

std::uint64_t snap_of(const Hash256& h) {
  std::uint64_t v = 0;
  std::memcpy(&v, h.data(), sizeof v);
  return v;
}

std::uint64_t fnv1a(const Bytes& bytes) {
  std::uint64_t h = 1469598103934665603ULL;
  for (std::uint8_t b : bytes) {
    h = (h ^ b) * 1099511628211ULL;
  }
  return h;
}

// Fixed-width little-endian fields for the modelled transfer messages.
void put(Bytes& out, std::uint64_t v, int width) {
  for (int k = 0; k < width; ++k) {
    out.push_back(static_cast<std::uint8_t>(v >> (8 * k)));
  }
}
std::uint64_t get(const Bytes& in, std::size_t& pos, int width) {
  std::uint64_t v = 0;
  for (int k = 0; k < width && pos < in.size(); ++k, ++pos) {
    v |= static_cast<std::uint64_t>(in[pos]) << (8 * k);
  }
  return v;
}

struct Copy {
  std::uint64_t snap = 0;  // Global, grows with creation time: a larger id is a newer snapshot.
  std::uint64_t epoch = 0;
  std::uint64_t bytes = 0;
};

// What survives a crash: the acceptor table, the store, the working directory.
struct Durable {
  std::map<std::uint64_t, AcceptorRecord> acc;  // By generation.
  std::vector<Copy> copies;                      // Ascending snap.
  bool workdir = false;
  std::optional<Instant> confirmed_at;  // Checker only: the last push this node confirmed.

  const RegisterValue* newest() const {
    for (auto it = acc.rbegin(); it != acc.rend(); ++it) {
      if (it->second.value) {
        return &*it->second.value;
      }
    }
    return nullptr;
  }
  bool holds(std::uint64_t snap) const {
    return std::any_of(copies.begin(), copies.end(), [&](const Copy& c) { return c.snap == snap; });
  }
  std::uint64_t newest_snap() const { return copies.empty() ? 0 : copies.back().snap; }
  Copy newest_in_history() const;
};

// The project's history order: epochs first (a deposed primary's later,
// unacknowledged save is behind everything the next epoch saved), then
// creation time within an epoch.
bool history_before(const Copy& a, const Copy& b) {
  return a.epoch != b.epoch ? a.epoch < b.epoch : a.snap < b.snap;
}

Copy Durable::newest_in_history() const {
  SHOAL_ASSERT(!copies.empty());
  return *std::max_element(copies.begin(), copies.end(), history_before);
}

// Called with the number of targets that stored the snapshot, and which.
using PushDone = std::function<void(std::size_t, std::vector<std::uint32_t>)>;

struct PushWait {
  std::size_t expected = 0;
  std::size_t answered = 0;
  std::vector<std::uint32_t> confirmed;
  Instant deadline{};
  PushDone done;
};

struct Pending {
  std::uint32_t project = 0;
  std::uint64_t start_version = 0;
  std::function<void(Result<RegisterValue>)> done;
};

// One process life: lost at a crash.
struct Live {
  std::unique_ptr<Prng> prng;
  std::unique_ptr<core::Proposer> proposer;
  std::uint64_t floor = 0;
  Instant started{};
  std::map<std::uint64_t, Pending> pending;  // By proposer op id.
  std::set<std::uint32_t> busy;
  std::set<std::uint32_t> saving;
  std::map<std::uint32_t, Instant> dead_since;
  std::map<std::uint32_t, Instant> primary_checked;
  std::map<std::uint32_t, Instant> last_save;
  std::map<std::uint32_t, Instant> collect_checked;
  // Project -> since when this life collects its copy (the collection's
  // token). An incoming push erases it: that collection then deletes nothing.
  std::map<std::uint32_t, Instant> collecting;
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint64_t> pushed_seq;  // (project, replica) -> seq.
  std::map<std::uint64_t, PushWait> pushes;                                      // By token.
  Instant next_repair{};
  Instant next_collect{};
  Instant timer_at = kNever;
  std::uint64_t bug_counter = 0;
};

struct PNode {
  std::map<std::uint32_t, Durable> projects;
  std::unique_ptr<Live> live;
  std::uint32_t lives = 0;
  Instant xfer_free_at{};
  std::vector<core::MemberInfo> members;
  bool members_dirty = true;
};

struct CommittedEntry {
  std::uint64_t hash = 0;
  std::uint64_t epoch = 0;
};

// The checker's record of one project: every committed value by version.
struct Truth {
  std::map<std::uint64_t, CommittedEntry> history;
  std::map<std::uint64_t, NodeId> epoch_primary;
  std::map<std::uint64_t, std::uint32_t> epoch_saver;
  Placement current;
  std::uint32_t holders = 0;  // Nodes with at least one stored copy.
  // Primary crash tracking (time to new primary).
  bool lost = false;
  std::uint32_t lost_node = 0;
  std::uint64_t lost_epoch = 0;
};

class PlacementLayer final : public Layer {
 public:
  PlacementLayer(const Scenario& scenario, std::uint64_t seed)
      : o_(scenario.placement),
        probe_interval_(scenario.gossip.probe_interval),
        settle_(scenario.gossip.push_pull_interval),
        seed_(seed),
        prng_(seed ^ 0x91acee7ULL) {
    for (const DcOptions& dc : scenario.dcs) {
      dc_names_.push_back(dc.name);
    }
    report_.enabled = true;
    report_.projects = o_.projects;
  }

  std::string_view name() const override { return "placement"; }

  // --- node lifecycle ---------------------------------------------------------

  void on_node_start(World& w, std::uint32_t i, bool /*restart*/) override {
    ensure(w);
    if (!wake_requested_) {
      wake_requested_ = true;
      w.wake_at(Instant(o_.create_at));
    }
    PNode& n = nodes_[i];
    ++n.lives;
    n.live = std::make_unique<Live>();
    Live& l = *n.live;
    l.prng = std::make_unique<Prng>(seed_ ^ (0x9e3779b97f4a7c15ULL * (i + 1)) ^ (static_cast<std::uint64_t>(n.lives) << 40));
    // Never reuse a ballot: each life's counters start above every earlier life's.
    l.floor = static_cast<std::uint64_t>(n.lives) << 32;
    l.started = w.now();
    core::ProposerConfig cfg;
    cfg.counter_floor = l.floor;
    l.proposer = std::make_unique<core::Proposer>(w.node_id(i), *l.prng, cfg);
    l.next_repair = w.now() + Duration(static_cast<std::int64_t>(
                                  l.prng->uniform(static_cast<std::uint64_t>(o_.repair_interval.count()) + 1)));
    l.next_collect = l.next_repair;
    n.members_dirty = true;
    // A restarted primary is no longer "lost".
    for (std::uint32_t p = 0; p < truth_.size(); ++p) {
      if (truth_[p].lost && truth_[p].lost_node == i) {
        truth_[p].lost = false;
      }
    }
    arm(w, i);
  }

  void on_node_stop(World& w, std::uint32_t i) override {
    ensure(w);
    PNode& n = nodes_[i];
    if (n.live) {
      add_stats(*n.live->proposer);
      n.live.reset();
    }
    confirmed_at_[i].reset();
    stopped_[i] = true;
    if (!installed_) {
      return;
    }
    const NodeId& id = w.node_id(i);
    for (Truth& t : truth_) {
      if (!t.lost && t.current.primary == id) {
        t.lost = true;
        t.lost_node = i;
        t.lost_epoch = t.current.epoch;
        ++report_.primaries_lost;
      }
    }
  }

  void on_node_resume(World& w, std::uint32_t i) override {
    PNode& n = nodes_[i];
    if (n.live) {
      n.live->timer_at = kNever;
      arm(w, i);
    }
  }

  void on_view(World& w, std::uint32_t observer, std::uint32_t subject, View /*before*/,
               const gossip::Event& /*event*/) override {
    ensure(w);
    nodes_[observer].members_dirty = true;
    const View v = w.view(observer, subject);
    if ((v == View::kDead || v == View::kLeft) && !w.running(subject) && w.running(observer) &&
        stopped_[subject] && !confirmed_at_[subject]) {
      confirmed_at_[subject] = w.now();
    }
  }

  void on_fault(World& w, const FaultRecord& fault) override {
    if (fault.label == "bootstrap") {
      return;
    }
    last_fault_ = w.now();
    rereplicated_.reset();
    each_converged_.reset();
    std::fill(project_converged_.begin(), project_converged_.end(), false);
  }

  void after_event(World& w) override {
    if (!installed_ && wake_requested_ && w.now() >= Instant(o_.create_at)) {
      install(w);
    }
    if (installed_ && !rereplicated_ && w.now() >= next_sample_) {
      next_sample_ = w.now() + o_.sample_interval;
      w.wake_at(next_sample_);
      sample(w);
    }
  }

  void on_timer(World& w, std::uint32_t i, std::uint64_t token) override {
    PNode& n = nodes_[i];
    if (!n.live || Instant(Duration(static_cast<std::int64_t>(token))) != n.live->timer_at) {
      return;  // Superseded by an earlier timer.
    }
    n.live->timer_at = kNever;
    tick(w, i);
    arm(w, i);
  }

  void on_message(World& w, std::uint32_t to, std::uint32_t from, const Bytes& payload) override {
    if (payload.empty() || !installed_) {
      return;
    }
    switch (payload[0]) {
      case kMsgPaxos: {
        auto message = core::decode_message(ByteView(payload.data() + 1, payload.size() - 1));
        if (!message) {
          return;
        }
        if (std::holds_alternative<core::Prepare>(*message) || std::holds_alternative<core::Accept>(*message)) {
          acceptor(w, to, from, *message);
          return;
        }
        PNode& n = nodes_[to];
        if (!n.live) {
          return;
        }
        core::ProposerOutput out;
        n.live->proposer->on_message(w.node_id(from), *message, w.now(), out);
        flush(w, to, out);
        arm(w, to);
        return;
      }
      case kMsgPush: {
        std::size_t pos = 1;
        const auto project = static_cast<std::uint32_t>(get(payload, pos, 4));
        Copy c;
        c.snap = get(payload, pos, 8);
        c.epoch = get(payload, pos, 8);
        c.bytes = get(payload, pos, 8);
        const std::uint64_t token = get(payload, pos, 8);
        receive_push(w, to, from, project, c, token);
        return;
      }
      case kMsgPushReply: {
        std::size_t pos = 1;
        const std::uint64_t token = get(payload, pos, 8);
        const bool ok = get(payload, pos, 1) != 0;
        PNode& n = nodes_[to];
        if (!n.live) {
          return;
        }
        auto it = n.live->pushes.find(token);
        if (it == n.live->pushes.end()) {
          return;
        }
        ++it->second.answered;
        if (ok) {
          it->second.confirmed.push_back(from);
        }
        if (it->second.answered >= it->second.expected) {
          auto done = std::move(it->second.done);
          std::vector<std::uint32_t> confirmed = std::move(it->second.confirmed);
          n.live->pushes.erase(it);
          const std::size_t count = confirmed.size();
          done(count, std::move(confirmed));
        }
        return;
      }
      default: return;
    }
  }

  void finish(World& w, Report& report) override {
    for (PNode& n : nodes_) {
      if (n.live) {
        add_stats(*n.live->proposer);
      }
    }
    for (const Truth& t : truth_) {
      report_.primaries_not_replaced += t.lost ? 1 : 0;
    }
    report_.last_fault_s = last_fault_ ? to_seconds(last_fault_->time_since_epoch()) : -1;
    report_.rereplicated_s = rereplicated_ ? to_seconds(*rereplicated_) : -1;
    report_.unconverged_at_end = installed_ ? unconverged(w) : 0;
    for (std::uint32_t i = 0; i < nodes_.size(); ++i) {
      if (!nodes_[i].live) {
        continue;  // Down at the end: whatever its disk holds waits for its return.
      }
      for (const auto& [p, d] : nodes_[i].projects) {
        report_.stray_copies_at_end += !d.copies.empty() && !truth_[p].current.is_replica(w.node_id(i)) ? 1 : 0;
      }
    }
    // Invariant 4: every project converged within the bound after the last
    // fault (each at some sample; not necessarily all at one instant, which
    // saves acknowledged by a majority while a replica refused under a read
    // fault keep preventing until the next copy round).
    const Instant from = last_fault_.value_or(Instant(o_.create_at));
    if (installed_ && w.now() - from >= o_.convergence) {
      if (!each_converged_ || *each_converged_ > o_.convergence + o_.sample_interval) {
        std::uint64_t never = 0;
        std::string example;
        for (std::uint32_t p = 0; p < truth_.size(); ++p) {
          if (!project_converged_[p]) {
            if (never++ == 0) {
              example = describe(w, p);
            }
          }
        }
        w.violate("placement-convergence",
                  std::to_string(never) + " projects never at their replica count with the acknowledged snapshot "
                  "on every live replica within " + fmt_s(o_.convergence) + " after the last fault" +
                  (example.empty() ? "" : " (e.g., at the end: " + example + ")"));
      }
    }
    report.placement = report_;
  }

 private:
  static std::string fmt_s(Duration d) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1fs", to_seconds(d));
    return buf;
  }

  void ensure(World& w) {
    if (nodes_.empty()) {
      nodes_.resize(w.node_count());
      confirmed_at_.resize(w.node_count());
      stopped_.assign(w.node_count(), false);
    }
  }

  void add_stats(const core::Proposer& p) {
    report_.fast_path += p.stats().fast_path;
    report_.prepares += p.stats().prepares;
    report_.conflicts += p.stats().conflicts;
  }

  // --- installation: the mesh had these projects before the scenario began -----

  void install(World& w) {
    installed_ = true;
    next_sample_ = w.now();
    std::vector<core::Candidate> candidates;
    for (std::uint32_t i = 0; i < w.node_count(); ++i) {
      if (w.live(i)) {
        candidates.push_back({w.node_id(i), dc_names_[w.node_dc(i)], 1.0});
      }
    }
    auto table = std::make_shared<std::map<NodeId, std::uint16_t>>();
    for (std::uint32_t i = 0; i < w.node_count(); ++i) {
      table->emplace(w.node_id(i), w.node_dc(i));
    }
    dc_table_ = std::move(table);
    truth_.resize(o_.projects);
    project_converged_.assign(o_.projects, false);
    for (std::uint32_t k = 0; k < o_.projects; ++k) {
      const std::string name = project_name(k);
      const std::string& preferred = dc_names_[k % dc_names_.size()];
      const core::Target target = core::rank_placement(name, candidates, preferred, o_.replication_factor);
      if (target.replicas.empty()) {
        continue;
      }
      const std::uint64_t snap = ++next_snap_;
      const Copy copy{snap, 1, draw_bytes()};
      Placement p;
      p.project = name;
      p.version = 1;
      p.epoch = 1;
      p.primary = target.primary;
      p.replicas = target.replicas;
      p.state = core::ProjectState::kRunning;
      p.last_ack = core::SnapshotRef{snap_hash(snap), 1, 1};
      p.preferred_dc = preferred;
      AcceptorRecord rec;
      rec.promised = core::Ballot{1, target.primary};
      rec.accepted = rec.promised;
      rec.value = RegisterValue{0, target.replicas, false, p};
      for (const NodeId& r : target.replicas) {
        const std::uint32_t i = *w.index_of_id(r);
        Durable& d = nodes_[i].projects[k];
        d.acc[0] = rec;
        add_copy(k, d, copy);
        d.workdir = r == target.primary;
      }
      commit(w, k, *rec.value);
    }
  }

  std::uint64_t draw_bytes() {
    const std::uint64_t span = o_.snapshot_bytes_max - o_.snapshot_bytes_min;
    return o_.snapshot_bytes_min + (span > 0 ? prng_.uniform(span + 1) : 0);
  }

  void add_copy(std::uint32_t project, Durable& d, const Copy& c) {
    if (d.holds(c.snap)) {
      return;
    }
    if (d.copies.empty()) {
      ++truth_[project].holders;
    }
    const auto at = std::lower_bound(d.copies.begin(), d.copies.end(), c.snap,
                                     [](const Copy& a, std::uint64_t s) { return a.snap < s; });
    d.copies.insert(at, c);
  }

  // --- reads with injected faults ---------------------------------------------

  bool read_fault(PNode& n) {
    if (o_.read_fault <= 0 || !n.live || !n.live->prng->chance(o_.read_fault)) {
      return false;
    }
    ++report_.read_faults;
    return true;
  }

  // The node's newest accepted value of a project (the agent's local_value):
  // empty when the project is unknown here or the read failed (empty or short).
  std::optional<RegisterValue> local_read(PNode& n, std::uint32_t project) {
    if (read_fault(n)) {
      return std::nullopt;
    }
    auto it = n.projects.find(project);
    if (it == n.projects.end()) {
      return std::nullopt;
    }
    const RegisterValue* v = it->second.newest();
    if (v == nullptr) {
      return std::nullopt;
    }
    return *v;
  }

  // As local_read, without copying (for the per-second scans).
  const RegisterValue* local_peek(PNode& n, std::uint32_t project) {
    if (read_fault(n)) {
      return nullptr;
    }
    const auto it = n.projects.find(project);
    return it == n.projects.end() ? nullptr : it->second.newest();
  }

  // The store's listing of a project's snapshots: empty or short under a read fault.
  std::vector<Copy> list_copies(PNode& n, std::uint32_t project) {
    auto it = n.projects.find(project);
    if (it == n.projects.end()) {
      return {};
    }
    std::vector<Copy> out = it->second.copies;
    if (read_fault(n)) {
      if (!out.empty() && n.live->prng->chance(0.5)) {
        out.pop_back();  // Short: the newest entries are missing.
      } else {
        out.clear();
      }
    }
    return out;
  }

  const std::vector<core::MemberInfo>& members(World& w, std::uint32_t i) {
    PNode& n = nodes_[i];
    if (n.members_dirty) {
      n.members_dirty = false;
      n.members.clear();
      for (std::uint32_t j = 0; j < w.node_count(); ++j) {
        core::Liveness liveness = core::Liveness::kAlive;
        if (j != i) {
          const View v = w.view(i, j);
          if (v == View::kUnknown) {
            continue;  // Missing information: neither dead nor a candidate.
          }
          if (v == View::kDead || v == View::kLeft) {
            liveness = core::Liveness::kDead;
          }
        }
        n.members.push_back({w.node_id(j), dc_names_[w.node_dc(j)], liveness, 1.0});
      }
    }
    return n.members;
  }

  // --- consensus plumbing -------------------------------------------------------

  void send(World& w, std::uint32_t from, const NodeId& to_id, const core::Message& message) {
    const auto to = w.index_of_id(to_id);
    if (!to) {
      return;
    }
    Bytes payload{kMsgPaxos};
    const Bytes body = core::encode_message(message);
    payload.insert(payload.end(), body.begin(), body.end());
    w.layer_send(from, *to, std::move(payload), false);
  }

  void acceptor(World& w, std::uint32_t i, std::uint32_t from, const core::Message& message) {
    const auto project = project_index(core::message_project(message));
    if (!project || *project >= truth_.size()) {
      return;
    }
    PNode& n = nodes_[i];
    if (read_fault(n)) {
      return;  // The record could not be read: no reply (the agent's transaction fails).
    }
    Durable& d = n.projects[*project];
    const std::uint64_t generation = core::message_generation(message);
    AcceptorRecord& rec = d.acc[generation];
    core::AcceptorStep step = core::acceptor_step(rec, message);
    if (step.write) {
      rec = std::move(*step.write);  // Durable before the reply.
      if (std::holds_alternative<core::Accept>(message) && rec.value) {
        check_chosen(w, *project, generation, rec);
      }
    }
    send(w, i, w.node_id(from), step.reply);
  }

  // A value accepted by a majority of its generation's acceptors at one ballot is chosen.
  void check_chosen(World& w, std::uint32_t project, std::uint64_t generation, const AcceptorRecord& rec) {
    const RegisterValue& value = *rec.value;
    std::size_t count = 0;
    for (const NodeId& a : value.acceptors) {
      const auto j = w.index_of_id(a);
      if (!j) {
        continue;
      }
      const auto pit = nodes_[*j].projects.find(project);
      if (pit == nodes_[*j].projects.end()) {
        continue;
      }
      const auto ait = pit->second.acc.find(generation);
      if (ait != pit->second.acc.end() && ait->second.accepted == rec.accepted && ait->second.value &&
          *ait->second.value == value) {
        ++count;
      }
    }
    if (count >= core::majority_of(value.acceptors.size())) {
      commit(w, project, value);
    }
  }

  std::uint32_t idx(World& w, const NodeId& id) const { return w.index_of_id(id).value_or(UINT32_MAX); }

  // A value is committed (chosen): record it and check invariants 1 and 2.
  void commit(World& w, std::uint32_t project, const RegisterValue& value) {
    Truth& t = truth_[project];
    const Placement& p = value.placement;
    Encoder enc;
    core::encode_placement(enc, p);
    const std::uint64_t h = fnv1a(enc.take());
    const auto found = t.history.find(p.version);
    if (found != t.history.end()) {
      if (found->second.hash != h) {
        w.violate("one-writer", "project " + p.project + ": two different values committed at version " +
                                    std::to_string(p.version) + " (epoch " + std::to_string(found->second.epoch) +
                                    " and " + std::to_string(p.epoch) + ", primary " + name(w, p.primary) + ")");
      }
      return;
    }
    const auto next = t.history.upper_bound(p.version);
    if (next != t.history.end() && next->second.epoch < p.epoch) {
      w.violate("one-writer", "project " + p.project + ": epoch shrinks after version " + std::to_string(p.version));
    }
    if (next != t.history.begin()) {
      const auto prev = std::prev(next);
      if (prev->second.epoch > p.epoch) {
        w.violate("one-writer", "project " + p.project + ": epoch " + std::to_string(p.epoch) + " at version " +
                                    std::to_string(p.version) + " is older than epoch " +
                                    std::to_string(prev->second.epoch) + " at version " + std::to_string(prev->first));
      }
    }
    t.history.emplace(p.version, CommittedEntry{h, p.epoch});
    const auto [ep, fresh_epoch] = t.epoch_primary.try_emplace(p.epoch, p.primary);
    if (!fresh_epoch && ep->second != p.primary) {
      w.violate("one-writer", "project " + p.project + ": two primaries in epoch " + std::to_string(p.epoch) + ": " +
                                  name(w, ep->second) + " and " + name(w, p.primary));
    }
    ++report_.commits;
    w.note(project, static_cast<std::uint32_t>(p.version), p.epoch);
    if (t.current.version != 0 && p.version <= t.current.version) {
      return;
    }
    const Placement before = t.current;
    t.current = p;
    if (before.version == 0) {
      return;
    }
    if (before.primary != p.primary) {
      ++report_.failovers;
      if (p.last_ack.seq > 0 && !holds(w, p.primary, project, snap_of(p.last_ack.id))) {
        w.violate("no-lost-snapshot", "project " + p.project + ": new primary " + name(w, p.primary) + " at epoch " +
                                          std::to_string(p.epoch) + " does not hold the acknowledged snapshot");
      }
      if (t.lost && p.epoch > t.lost_epoch) {
        t.lost = false;
        if (const auto& c = confirmed_at_[t.lost_node]) {
          const double s = std::max(0.0, to_seconds(w.now() - *c));
          report_.new_primary_s.push_back(s);
          report_.new_primary_periods.push_back(s / std::max(1e-9, to_seconds(probe_interval_)));
        }
      }
    }
    if (!core::same_node_set(before.replicas, p.replicas)) {
      ++report_.moves;
    }
    if (p.last_ack.seq > before.last_ack.seq) {
      // Invariant 2: acknowledged = held by a majority of the replica set, in two DCs when it spans two.
      const std::uint64_t snap = snap_of(p.last_ack.id);
      std::size_t holders = 0;
      std::set<std::uint16_t> dcs;
      std::set<std::uint16_t> holder_dcs;
      for (const NodeId& r : p.replicas) {
        const std::uint32_t j = idx(w, r);
        if (j == UINT32_MAX) {
          continue;
        }
        dcs.insert(w.node_dc(j));
        if (holds(w, r, project, snap)) {
          ++holders;
          holder_dcs.insert(w.node_dc(j));
        }
      }
      if (holders < core::majority_of(p.replicas.size()) || (dcs.size() >= 2 && holder_dcs.size() < 2)) {
        w.violate("no-lost-snapshot", "project " + p.project + ": save " + std::to_string(p.last_ack.seq) +
                                          " acknowledged while " + std::to_string(holders) + " of " +
                                          std::to_string(p.replicas.size()) + " replicas (in " +
                                          std::to_string(holder_dcs.size()) + " DCs) hold it");
      }
    }
  }

  bool holds(World& w, const NodeId& node, std::uint32_t project, std::uint64_t snap) {
    const std::uint32_t j = idx(w, node);
    if (j == UINT32_MAX) {
      return false;
    }
    const auto it = nodes_[j].projects.find(project);
    return it != nodes_[j].projects.end() && it->second.holds(snap);
  }

  std::string name(World& w, const NodeId& id) const {
    const auto j = w.index_of_id(id);
    return j ? w.node_name(*j) : id.short_hex();
  }

  using Done = std::function<void(Result<RegisterValue>)>;

  // The agent's submit_change: a compare-and-set through this node's proposer,
  // starting from its own record of the project (no record: unavailable; the
  // agent would ask other nodes with Locate).
  void submit(World& w, std::uint32_t i, std::uint32_t project, core::ChangeFn change, Done done,
              bool read_only = false) {
    PNode& n = nodes_[i];
    SHOAL_ASSERT(n.live != nullptr);
    ++report_.proposals;
    const std::optional<RegisterValue> own = local_read(n, project);
    const std::uint64_t start = truth_[project].current.version;
    if (o_.bug == PlacementBug::kStaleRead && read_only && own) {
      finish_op(w, Pending{project, start, std::move(done)}, *own);  // Bug: no consensus.
      return;
    }
    if (!own) {
      ++report_.proposals_failed;
      done(make_error(Code::kUnavailable, "no local record of the project"));
      return;
    }
    core::ProposerOutput out;
    const std::uint64_t op = n.live->proposer->propose(
        project_name(project), core::Hint{own->generation, own->acceptors}, std::move(change), w.now(), out);
    n.live->pending.emplace(op, Pending{project, start, std::move(done)});
    flush(w, i, out);
    arm(w, i);
  }

  // A linearizable read of the register (a compare-and-set that keeps the value).
  void read(World& w, std::uint32_t i, std::uint32_t project, Done done) {
    submit(
        w, i, project,
        [](const std::optional<Placement>& current) -> Result<Placement> {
          if (!current) {
            return make_error(Code::kNotFound, "no such project");
          }
          return *current;
        },
        std::move(done), true);
  }

  void flush(World& w, std::uint32_t i, core::ProposerOutput& out) {
    for (const core::Envelope& e : out.send) {
      send(w, i, e.to, e.message);
    }
    for (core::Outcome& outcome : out.done) {
      PNode& n = nodes_[i];
      if (!n.live) {
        return;
      }
      auto it = n.live->pending.find(outcome.op);
      if (it == n.live->pending.end()) {
        continue;
      }
      Pending pending = std::move(it->second);
      n.live->pending.erase(it);
      if (!outcome.result) {
        ++report_.proposals_failed;
        pending.done(std::move(outcome.result));
        continue;
      }
      finish_op(w, std::move(pending), *outcome.result);
    }
  }

  // Invariant 6 on every completed operation, then its continuation.
  void finish_op(World& w, Pending pending, const RegisterValue& value) {
    const Placement& p = value.placement;
    if (p.version < pending.start_version) {
      w.violate("linearizable", "project " + p.project + ": an operation returned version " +
                                    std::to_string(p.version) + " although version " +
                                    std::to_string(pending.start_version) + " was committed before it started");
    } else if (o_.bug != PlacementBug::kStaleRead) {
      commit(w, pending.project, value);  // A proposer's result was chosen by a majority.
    }
    pending.done(value);
  }

  // --- timers and the repair loop ---------------------------------------------

  void arm(World& w, std::uint32_t i) {
    PNode& n = nodes_[i];
    if (!n.live || !w.running(i)) {
      return;
    }
    Live& l = *n.live;
    Instant at = std::min(l.next_repair, l.next_collect);
    if (const auto wake = l.proposer->next_wakeup()) {
      at = std::min(at, *wake);
    }
    for (const auto& [token, push] : l.pushes) {
      at = std::min(at, push.deadline);
    }
    at = std::max(at, w.now());
    if (at >= l.timer_at) {
      return;
    }
    l.timer_at = at;
    w.layer_timer(i, at, static_cast<std::uint64_t>(at.time_since_epoch().count()));
  }

  void tick(World& w, std::uint32_t i) {
    Live* l = nodes_[i].live.get();
    core::ProposerOutput out;
    l->proposer->on_tick(w.now(), out);
    flush(w, i, out);
    for (auto it = l->pushes.begin(); it != l->pushes.end();) {
      if (it->second.deadline <= w.now()) {
        auto done = std::move(it->second.done);
        std::vector<std::uint32_t> confirmed = std::move(it->second.confirmed);
        it = l->pushes.erase(it);
        const std::size_t count = confirmed.size();
          done(count, std::move(confirmed));
      } else {
        ++it;
      }
    }
    if (!installed_) {
      l->next_repair = w.now() + o_.repair_interval;
      l->next_collect = l->next_repair;
      return;
    }
    if (w.now() >= l->next_repair) {
      l->next_repair = w.now() + o_.repair_interval;
      repair(w, i);
      periodic_saves(w, i);
    }
    if (w.now() >= l->next_collect) {
      l->next_collect = w.now() + o_.repair_interval;
      collect(w, i);
    }
  }

  std::vector<std::uint32_t> projects_of(std::uint32_t i) const {
    std::vector<std::uint32_t> out;
    out.reserve(nodes_[i].projects.size());
    for (const auto& [p, d] : nodes_[i].projects) {
      out.push_back(p);
    }
    return out;
  }

  void repair(World& w, std::uint32_t i) {
    for (std::uint32_t p : projects_of(i)) {
      PNode& n = nodes_[i];
      if (!n.live || n.live->busy.contains(p)) {
        continue;
      }
      const RegisterValue* value = local_peek(n, p);
      if (value == nullptr || !value->placement.is_replica(w.node_id(i)) ||
          value->placement.state == core::ProjectState::kDeleted) {
        continue;
      }
      repair_one(w, i, p, value->placement);  // Stays valid: acceptor records change only on messages.
    }
  }

  void repair_one(World& w, std::uint32_t i, std::uint32_t project, const Placement& placement) {
    Live& l = *nodes_[i].live;
    const NodeId self = w.node_id(i);
    const std::vector<core::MemberInfo>& view = members(w, i);
    if (placement.primary != self) {
      // As in act_as_primary: once settled, an absent primary died before this life joined.
      const bool absent_is_gone = w.now() - l.started >= settle_;
      if (!core::confirmed_dead(view, placement.primary) &&
          !(absent_is_gone && core::find_member(view, placement.primary) == nullptr)) {
        l.dead_since.erase(project);
        return;
      }
      const auto since = l.dead_since.try_emplace(project, w.now()).first;
      const bool grace = w.now() - since->second >= o_.failover_grace;
      const bool have = nodes_[i].projects[project].holds(snap_of(placement.last_ack.id)) ||
                        placement.last_ack.seq == 0;
      if (o_.bug == PlacementBug::kSkipPhase1) {
        skip_phase1_failover(w, i, project, placement);
        return;
      }
      if (!core::plan_failover(placement, view, self, have, grace, absent_is_gone)) {
        return;
      }
      l.busy.insert(project);
      const NodeId dead = placement.primary;
      const std::uint64_t epoch = placement.epoch;
      const core::SnapshotRef held = placement.last_ack;
      const std::vector<core::MemberInfo> snapshot_view = view;
      submit(w, i, project,
             [snapshot_view, self, dead, epoch, held, absent_is_gone](const std::optional<Placement>& current) -> Result<Placement> {
               if (!current) {
                 return make_error(Code::kNotFound, "no such project");
               }
               // As the agent (since ab63e92): a save acknowledged after our record
               // keeps primary and epoch but moves last_ack, and this node may not
               // hold it (found by the sweep, seed 139).
               if (current->primary != dead || current->epoch != epoch || !(current->last_ack == held)) {
                 return make_error(Code::kAborted, "the placement changed meanwhile");
               }
               auto next = core::plan_failover(*current, snapshot_view, self, true, true, absent_is_gone);
               if (!next) {
                 return make_error(Code::kAborted, "failover no longer applies");
               }
               return *next;
             },
             [this, &w, i, project](Result<RegisterValue> r) {
               Live* live = nodes_[i].live.get();
               if (live == nullptr) {
                 return;
               }
               live->busy.erase(project);
               if (r) {
                 live->dead_since.erase(project);
                 live->primary_checked.erase(project);
                 live->next_repair = w.now();
               }
             });
      return;
    }
    // Primary by its own record, which may be stale: act only on a fresh read.
    const auto checked = l.primary_checked.find(project);
    if (checked != l.primary_checked.end() && w.now() - checked->second < o_.primary_check) {
      return;
    }
    l.primary_checked[project] = w.now();
    l.busy.insert(project);
    read(
        w, i, project,
        [this, &w, i, project](Result<RegisterValue> r) {
          Live* live = nodes_[i].live.get();
          if (live == nullptr) {
            return;
          }
          live->busy.erase(project);
          if (r && r->placement.primary == w.node_id(i)) {
            act_as_primary(w, i, project, r->placement);
          }
        });
  }

  void act_as_primary(World& w, std::uint32_t i, std::uint32_t project, const Placement& placement) {
    Live& l = *nodes_[i].live;
    if (l.busy.contains(project)) {
      return;
    }
    const NodeId self = w.node_id(i);
    Durable& d = nodes_[i].projects[project];
    const std::vector<core::MemberInfo>& view = members(w, i);
    const std::uint64_t seq = placement.last_ack.seq;
    // Forget what was pushed to nodes that left the replica set: one that
    // comes back may have collected its copy meanwhile, and must be copied
    // to again (as the agent since ab63e92).
    for (auto it = l.pushed_seq.lower_bound({project, 0}); it != l.pushed_seq.end() && it->first.first == project;) {
      it = placement.is_replica(w.node_id(it->first.second)) ? std::next(it) : l.pushed_seq.erase(it);
    }
    // A replica that died before this process joined is never heard of (the
    // join's push-pull ignores dead members it never knew); after a full
    // push-pull period a live one would be known, so an absent one is gone.
    const bool absent_is_gone = w.now() - l.started >= settle_;
    const core::PrimaryPlan plan = core::plan_primary_step(
        placement, view, self, seq == 0 || d.holds(snap_of(placement.last_ack.id)),
        d.workdir || placement.state != core::ProjectState::kRunning,
        [&](const NodeId& r) {
          const auto it = l.pushed_seq.find({project, idx(w, r)});
          return it != l.pushed_seq.end() && it->second >= seq;
        },
        absent_is_gone);
    switch (plan.step) {
      case core::PrimaryStep::kNothing: return;
      case core::PrimaryStep::kReplaceDead: {
        if (o_.bug == PlacementBug::kNoRepair) {
          return;
        }
        l.busy.insert(project);
        const std::uint64_t epoch = placement.epoch;
        const std::vector<core::MemberInfo> snapshot_view = view;
        submit(w, i, project,
               [snapshot_view, self, epoch, absent_is_gone](const std::optional<Placement>& current) -> Result<Placement> {
                 if (!current) {
                   return make_error(Code::kNotFound, "no such project");
                 }
                 if (current->primary != self || current->epoch != epoch) {
                   return make_error(Code::kAborted, "no longer primary");
                 }
                 auto next = core::plan_replace_dead(*current, snapshot_view, self, absent_is_gone);
                 if (!next) {
                   return make_error(Code::kAborted, "nothing to replace any more");
                 }
                 return *next;
               },
               [this, &w, i, project](Result<RegisterValue> r) {
                 Live* live = nodes_[i].live.get();
                 if (live == nullptr) {
                   return;
                 }
                 live->busy.erase(project);
                 if (r) {
                   live->primary_checked.erase(project);
                   live->next_repair = w.now();
                 }
               });
        return;
      }
      case core::PrimaryStep::kOpenWorkdir:
        d.workdir = true;  // Restoring is modelled as instant.
        l.primary_checked.erase(project);
        return;
      case core::PrimaryStep::kCopySnapshot: {
        const std::uint64_t snap = snap_of(placement.last_ack.id);
        const Copy* copy = find_copy(d, snap);
        if (copy == nullptr) {
          return;
        }
        l.busy.insert(project);
        std::vector<std::uint32_t> lacking;
        for (const NodeId& r : plan.copy_to) {
          lacking.push_back(idx(w, r));
        }
        push_to(w, i, project, *copy, lacking,
                [this, i, project, lacking, seq](std::size_t copied, std::vector<std::uint32_t> confirmed) {
          Live* live = nodes_[i].live.get();
          if (live == nullptr) {
            return;
          }
          live->busy.erase(project);
          // As the agent: remember the replicas that confirmed; retry the rest next round.
          for (std::uint32_t r : confirmed) {
            live->pushed_seq[{project, r}] = seq;
          }
          if (copied != lacking.size()) {
            live->primary_checked.erase(project);
          }
        });
        return;
      }
    }
  }

  static const Copy* find_copy(const Durable& d, std::uint64_t snap) {
    for (const Copy& c : d.copies) {
      if (c.snap == snap) {
        return &c;
      }
    }
    return nullptr;
  }

  // Test-only bug: failover by writing Accept straight away, skipping phase 1 and the grace.
  void skip_phase1_failover(World& w, std::uint32_t i, std::uint32_t project, const Placement& placement) {
    Live& l = *nodes_[i].live;
    if (l.busy.contains(project)) {
      return;
    }
    const NodeId self = w.node_id(i);
    auto next = core::plan_failover(placement, members(w, i), self, true, true);
    const std::optional<RegisterValue> own = local_read(nodes_[i], project);
    if (!next || !own) {
      return;
    }
    l.busy.insert(project);
    next->version = placement.version + 1;
    const core::Ballot ballot{l.floor + 1 + l.bug_counter++, self};
    const RegisterValue value{own->generation, own->acceptors, false, *next};
    for (const NodeId& a : own->acceptors) {
      send(w, i, a, core::Accept{next->project, own->generation, ballot, value, core::Ballot{ballot.counter + 1, self}});
    }
  }

  // --- saves ----------------------------------------------------------------------

  void periodic_saves(World& w, std::uint32_t i) {
    if (o_.save_interval.count() == 0) {
      return;
    }
    const NodeId self = w.node_id(i);
    for (std::uint32_t p : projects_of(i)) {
      PNode& n = nodes_[i];
      Live& l = *n.live;
      if (l.saving.contains(p)) {
        continue;
      }
      const RegisterValue* value = local_peek(n, p);
      if (value == nullptr || value->placement.primary != self ||
          value->placement.state != core::ProjectState::kRunning) {
        continue;
      }
      // First sight: a random point within one interval (the agent: a full interval).
      const auto [last, first] = l.last_save.try_emplace(
          p, w.now() - Duration(static_cast<std::int64_t>(
                           l.prng->uniform(static_cast<std::uint64_t>(o_.save_interval.count())))));
      if (w.now() - last->second < o_.save_interval) {
        continue;
      }
      // Copies already queued on this node's link for longer than a save
      // interval: a new save would only push repairs further back. Skip
      // this round. (The agent has no such guard yet: docs/simulation.md.)
      if (n.xfer_free_at - w.now() > o_.save_interval) {
        ++report_.saves_deferred;
        continue;
      }
      last->second = w.now();
      save(w, i, p);
    }
  }

  // The agent's save: read, snapshot at the epoch, push to the replicas,
  // acknowledge with a compare-and-set "still primary at this epoch".
  void save(World& w, std::uint32_t i, std::uint32_t project) {
    Live& l = *nodes_[i].live;
    l.saving.insert(project);
    ++report_.saves_started;
    auto fail = [this, i, project] {
      ++report_.saves_failed;
      if (Live* live = nodes_[i].live.get()) {
        live->saving.erase(project);
      }
    };
    read(
        w, i, project,
        [this, &w, i, project, fail](Result<RegisterValue> read) {
          if (!read || !nodes_[i].live || read->placement.primary != w.node_id(i)) {
            return fail();
          }
          const Placement placement = read->placement;
          const std::uint64_t epoch = placement.epoch;
          // Invariant 1: one saving node per (project, epoch).
          Truth& t = truth_[project];
          const auto [saver, fresh] = t.epoch_saver.try_emplace(epoch, i);
          if (!fresh && saver->second != i) {
            w.violate("one-writer", "project " + placement.project + ": " + w.node_name(saver->second) + " and " +
                                        w.node_name(i) + " both saved at epoch " + std::to_string(epoch));
          }
          const Copy copy{++next_snap_, epoch, draw_bytes()};
          Durable& d = nodes_[i].projects[project];
          add_copy(project, d, copy);
          d.workdir = true;
          std::vector<std::uint32_t> others;
          if (o_.bug != PlacementBug::kAckWithoutMajority) {
            for (const NodeId& r : placement.replicas) {
              if (r != w.node_id(i)) {
                others.push_back(idx(w, r));
              }
            }
          }
          push_to(w, i, project, copy, others,
                  [this, &w, i, project, placement, epoch, copy, fail](std::size_t /*copied*/,
                                                                       std::vector<std::uint32_t> confirmed) {
            if (!nodes_[i].live) {
              return fail();
            }
            const bool bug = o_.bug == PlacementBug::kAckWithoutMajority;
            const NodeId self = w.node_id(i);
            // Who holds the snapshot: this node and those that confirmed. As the
            // agent's enough_holders: a majority of the replica set that was read,
            // in two DCs when that set spans two.
            std::vector<NodeId> holders{self};
            for (std::uint32_t j : confirmed) {
              holders.push_back(w.node_id(j));
            }
            if (!bug && !enough_holders(placement.replicas, holders)) {
              return fail();
            }
            const Hash256 id = snap_hash(copy.snap);
            submit(w, i, project,
                   [self, epoch, id, replicas = placement.replicas](const std::optional<Placement>& current) -> Result<Placement> {
                     if (!current) {
                       return make_error(Code::kNotFound, "no such project");
                     }
                     if (current->primary != self || current->epoch != epoch) {
                       return make_error(Code::kFailedPrecondition, "lost the epoch while saving");
                     }
                     if (!core::same_node_set(current->replicas, replicas)) {
                       // The holders were counted against the old set.
                       return make_error(Code::kAborted, "the replica set changed during the save");
                     }
                     Placement next = *current;
                     if (next.last_ack.id != id) {
                       next.last_ack = core::SnapshotRef{id, current->last_ack.seq + 1, epoch};
                     }
                     return next;
                   },
                   [this, i, project, fail](Result<RegisterValue> r) {
                     if (!r) {
                       return fail();
                     }
                     ++report_.saves_acked;
                     if (Live* live = nodes_[i].live.get()) {
                       live->saving.erase(project);
                     }
                   });
          });
        });
  }

  // The agent's enough_holders: a majority of `replicas` among `holders`, in
  // two DCs when the replicas span two (DCs from the scenario; the agent takes
  // them from its gossip member list).
  bool enough_holders(const std::vector<NodeId>& replicas, const std::vector<NodeId>& holders) const {
    std::size_t listed = 0;
    std::set<std::uint16_t> replica_dcs;
    std::set<std::uint16_t> holder_dcs;
    const auto dc_of = [&](const NodeId& id) -> std::uint16_t {
      const auto it = dc_table_->find(id);
      return it == dc_table_->end() ? UINT16_MAX : it->second;
    };
    for (const NodeId& r : replicas) {
      replica_dcs.insert(dc_of(r));
    }
    for (const NodeId& h : holders) {
      if (std::find(replicas.begin(), replicas.end(), h) == replicas.end()) {
        continue;
      }
      ++listed;
      holder_dcs.insert(dc_of(h));
    }
    return listed >= core::majority_of(replicas.size()) &&
           holder_dcs.size() >= std::min<std::size_t>(2, replica_dcs.size());
  }

  // --- modelled transfers ---------------------------------------------------------

  void push_to(World& w, std::uint32_t i, std::uint32_t project, const Copy& copy,
               const std::vector<std::uint32_t>& targets, PushDone done) {
    if (targets.empty()) {
      done(0, {});
      return;
    }
    PNode& n = nodes_[i];
    Live& l = *n.live;
    const std::uint64_t token = ++next_token_;
    PushWait wait;
    wait.expected = targets.size();
    wait.done = std::move(done);
    Instant last_end = w.now();
    for (std::uint32_t to : targets) {
      if (to == UINT32_MAX) {
        ++wait.answered;
        continue;
      }
      Duration tx{0};
      Instant start = w.now();
      if (o_.bandwidth_bytes_per_second > 0) {
        start = std::max(w.now(), n.xfer_free_at);
        tx = Duration(static_cast<std::int64_t>(copy.bytes * 1000000 / o_.bandwidth_bytes_per_second));
        n.xfer_free_at = start + tx;
      }
      last_end = std::max(last_end, start + tx);
      ++report_.pushes;
      Bytes payload{kMsgPush};
      put(payload, project, 4);
      put(payload, copy.snap, 8);
      put(payload, copy.epoch, 8);
      put(payload, copy.bytes, 8);
      put(payload, token, 8);
      w.layer_send(i, to, std::move(payload), true, (start - w.now()) + tx);
    }
    wait.deadline = last_end + o_.push_timeout;
    if (wait.answered >= wait.expected) {
      wait.done(0, {});
      return;
    }
    l.pushes.emplace(token, std::move(wait));
    arm(w, i);
  }

  void receive_push(World& w, std::uint32_t to, std::uint32_t from, std::uint32_t project, const Copy& c,
                    std::uint64_t token) {
    if (project >= truth_.size()) {
      return;
    }
    PNode& n = nodes_[to];
    bool ok = true;
    // The agent's check_incoming: refuse a snapshot stamped with an older epoch
    // than the accepted one, except the acknowledged snapshot itself. An
    // unreadable record refuses too (doubt never stores a fenced snapshot).
    auto it = n.projects.find(project);
    if (n.live) {
      // A primary wants this node to hold the project: abandon a collection
      // of it, so nothing confirmed here is deleted by that collection.
      n.live->collecting.erase(project);
    }
    if (read_fault(n)) {
      ok = false;
    } else if (it != n.projects.end()) {
      if (const RegisterValue* v = it->second.newest()) {
        const Placement& p = v->placement;
        if (c.epoch < p.epoch && !(p.last_ack.seq > 0 && snap_of(p.last_ack.id) == c.snap)) {
          ok = false;
          ++report_.pushes_fenced;
        }
      }
    }
    if (ok) {
      Durable& d = n.projects[project];
      if (!d.holds(c.snap)) {
        add_copy(project, d, c);
        report_.bytes_copied += c.bytes;
      }
      d.confirmed_at = w.now();
    }
    Bytes reply{kMsgPushReply};
    put(reply, token, 8);
    put(reply, ok ? 1 : 0, 1);
    w.layer_send(to, from, std::move(reply), true);
  }

  // --- obsolete copies (invariant 3) -------------------------------------------------

  void collect(World& w, std::uint32_t i) {
    const NodeId self = w.node_id(i);
    for (std::uint32_t p : projects_of(i)) {
      PNode& n = nodes_[i];
      Live& l = *n.live;
      if (n.projects[p].copies.empty() || l.busy.contains(p)) {
        continue;
      }
      const auto checked = l.collect_checked.find(p);
      if (checked != l.collect_checked.end() && w.now() - checked->second < o_.collect_interval) {
        continue;
      }
      l.collect_checked[p] = w.now();
      std::vector<Copy> listing = list_copies(n, p);
      if (listing.empty()) {
        continue;  // Nothing listed (or the listing failed): nothing to do.
      }
      if (o_.bug == PlacementBug::kDeleteOnDoubt) {
        if (!local_read(n, p)) {
          forget(w, i, p, UINT64_MAX);  // Bug: an empty read taken as "not listed".
        }
        continue;
      }
      l.busy.insert(p);
      read(w, i, p, [this, &w, i, p, self, listing](Result<RegisterValue> r) {
        Live* live = nodes_[i].live.get();
        if (live == nullptr) {
          return;
        }
        live->busy.erase(p);
        // No answer, or no such project: missing information never deletes.
        if (!r || !obsolete_here(r->placement, self)) {
          return;
        }
        live->collecting[p] = w.now();
        collect_one(w, i, p, r->placement, listing, w.now());
      });
    }
  }

  static bool obsolete_here(const Placement& fresh, const NodeId& self) {
    return fresh.state == core::ProjectState::kDeleted || !fresh.is_replica(self);
  }

  static bool still_collecting(const Live& l, std::uint32_t project, Instant since) {
    const auto it = l.collecting.find(project);
    return it != l.collecting.end() && it->second == since;
  }
  static void end_collection(Live& l, std::uint32_t project, Instant since) {
    if (still_collecting(l, project, since)) {
      l.collecting.erase(project);
    }
  }

  // The collection started at `since`; a push received meanwhile abandons it
  // (receive_push), so it never deletes a copy this node confirmed.
  void collect_one(World& w, std::uint32_t i, std::uint32_t project, const Placement& fresh,
                   const std::vector<Copy>& listing, Instant since) {
    // Covered or pushed: the newest in history order; forgotten: every copy listed.
    const Copy newest = *std::max_element(listing.begin(), listing.end(), history_before);
    const std::uint64_t up_to = listing.back().snap;
    PNode& n = nodes_[i];
    const std::optional<RegisterValue> own = local_read(n, project);
    // The agent's rule (collect_one): covered by an acknowledged save as far
    // along the history, or by a later epoch's.
    if ((fresh.last_ack.seq > 0 && fresh.last_ack.epoch > newest.epoch) ||
        (own && own->placement.last_ack.seq > 0 && snap_of(own->placement.last_ack.id) == newest.snap &&
         fresh.last_ack.seq >= own->placement.last_ack.seq)) {
      forget_if_still_obsolete(w, i, project, up_to, since);
      return;
    }
    std::vector<std::uint32_t> targets;
    for (const NodeId& r : fresh.replicas) {
      targets.push_back(idx(w, r));
    }
    n.live->busy.insert(project);
    push_to(w, i, project, newest, targets, [this, &w, i, project, targets, up_to, since](std::size_t copied, std::vector<std::uint32_t>) {
      Live* live = nodes_[i].live.get();
      if (live == nullptr) {
        return;
      }
      live->busy.erase(project);
      if (copied != targets.size()) {
        end_collection(*live, project, since);  // Not every listed replica took it: keep everything.
        return;
      }
      forget_if_still_obsolete(w, i, project, up_to, since);
    });
  }

  // The agent's forget_if_still_obsolete: a primary may have listed this
  // node again since the first read. One more read shows it if it did so
  // before; if it pushed since, the collection was abandoned.
  void forget_if_still_obsolete(World& w, std::uint32_t i, std::uint32_t project, std::uint64_t up_to, Instant since) {
    nodes_[i].live->busy.insert(project);
    read(w, i, project, [this, &w, i, project, up_to, since](Result<RegisterValue> r) {
      Live* live = nodes_[i].live.get();
      if (live == nullptr) {
        return;
      }
      live->busy.erase(project);
      if (still_collecting(*live, project, since) && r && obsolete_here(r->placement, w.node_id(i))) {
        forget(w, i, project, up_to);
      }
      end_collection(*live, project, since);
    });
  }

  // Deletes this node's copies up to `up_to` (the one the listed replicas
  // confirmed), checking invariant 3 for each. The agent forgets the whole
  // project: its listing is one LMDB transaction and cannot be short.
  void forget(World& w, std::uint32_t i, std::uint32_t project, std::uint64_t up_to) {
    Durable& d = nodes_[i].projects[project];
    std::vector<Copy> removed;
    std::vector<Copy> kept;
    for (const Copy& c : d.copies) {
      (c.snap <= up_to ? removed : kept).push_back(c);
    }
    if (removed.empty()) {
      return;
    }
    d.copies = std::move(kept);
    Truth& t = truth_[project];
    if (d.copies.empty()) {
      --t.holders;
      d.workdir = false;
    }
    ++report_.copies_collected;
    const NodeId self = w.node_id(i);
    w.note(i, project, removed.back().snap);
    const std::uint64_t newest_removed = removed.back().snap;
    const std::string what = "project " + t.current.project + ": " + w.node_name(i) + " deleted its copy " +
                             std::to_string(newest_removed);
    if (t.holders == 0) {
      w.violate("no-deletion-on-doubt", what + ", the last copy anywhere");
      return;
    }
    const std::uint64_t acked = snap_of(t.current.last_ack.id);
    // Listed again while it collected: harmless while the primary has not
    // counted this copy (it copies last_ack to the node again), harmful once
    // the node confirmed a push during the collection. Outside a collection
    // (the deliberate bug) any deletion by a listed node is one.
    if (t.current.is_replica(self) && newest_removed >= acked) {
      const Live* live = nodes_[i].live.get();
      const auto since = live != nullptr ? live->collecting.find(project) : decltype(live->collecting)::const_iterator{};
      const bool collecting = live != nullptr && since != live->collecting.end();
      if (!collecting || (d.confirmed_at && *d.confirmed_at >= since->second)) {
        w.violate("no-deletion-on-doubt", what + " although the committed placement lists it" +
                                              (collecting ? " and it confirmed a push while collecting" : ""));
        return;
      }
    }
    const Copy newest_removed_in_history = *std::max_element(removed.begin(), removed.end(), history_before);
    bool covered = false;
    for (const NodeId& r : t.current.replicas) {
      const std::uint32_t j = idx(w, r);
      if (j == i || j == UINT32_MAX) {
        continue;
      }
      const auto it = nodes_[j].projects.find(project);
      if (it != nodes_[j].projects.end() && !it->second.copies.empty() &&
          !history_before(it->second.newest_in_history(), newest_removed_in_history)) {
        covered = true;
        break;
      }
    }
    if (!covered) {
      w.violate("no-deletion-on-doubt", what + ", newer (epoch, then time) than every listed replica's");
    }
  }

  // --- convergence (invariant 4) ------------------------------------------------------

  bool converged(World& w, std::uint32_t project) const {
    const Placement& p = truth_[project].current;
    if (p.version == 0) {
      return true;  // Never installed (no candidates).
    }
    if (p.replicas.size() != o_.replication_factor) {
      return false;
    }
    const std::uint64_t snap = snap_of(p.last_ack.id);
    for (const NodeId& r : p.replicas) {
      const auto j = w.index_of_id(r);
      if (!j || !w.live(*j)) {
        return false;
      }
      if (p.last_ack.seq > 0) {
        const auto it = nodes_[*j].projects.find(project);
        if (it == nodes_[*j].projects.end() || !it->second.holds(snap)) {
          return false;
        }
      }
    }
    return true;
  }

  std::string describe(World& w, std::uint32_t project) const {
    const Placement& p = truth_[project].current;
    std::string out = p.project + " v" + std::to_string(p.version) + " epoch " + std::to_string(p.epoch) +
                      " primary " + name(w, p.primary) + " last_ack " + std::to_string(snap_of(p.last_ack.id)) +
                      " replicas";
    for (const NodeId& r : p.replicas) {
      const auto j = w.index_of_id(r);
      out += " " + name(w, r);
      if (!j || !w.live(*j)) {
        out += "(down)";
        continue;
      }
      const auto it = nodes_[*j].projects.find(project);
      out += "(newest " + std::to_string(it == nodes_[*j].projects.end() ? 0 : it->second.newest_snap()) + ")";
    }
    return out;
  }

  std::uint64_t unconverged(World& w) const {
    std::uint64_t count = 0;
    for (std::uint32_t p = 0; p < truth_.size(); ++p) {
      count += converged(w, p) ? 0 : 1;
    }
    return count;
  }

  void sample(World& w) {
    const Instant from = last_fault_.value_or(Instant(o_.create_at));
    std::uint64_t count = 0;
    std::uint64_t never = 0;
    for (std::uint32_t p = 0; p < truth_.size(); ++p) {
      if (converged(w, p)) {
        project_converged_[p] = true;
      } else {
        ++count;
      }
      never += project_converged_[p] ? 0 : 1;
    }
    if (never == 0 && !each_converged_) {
      each_converged_ = w.now() - from;
    }
    if (count == 0 && !rereplicated_) {
      rereplicated_ = w.now() - from;
    }
  }

  const PlacementOptions o_;
  const Duration probe_interval_;
  const Duration settle_;  // A process life's member view is settled after one push-pull period.
  std::vector<std::string> dc_names_;
  const std::uint64_t seed_;
  Prng prng_;  // Snapshot sizes.
  std::vector<PNode> nodes_;
  std::vector<Truth> truth_;
  std::vector<std::optional<Instant>> confirmed_at_;  // Per node: first live node saw it dead.
  std::vector<bool> stopped_;
  bool wake_requested_ = false;
  bool installed_ = false;
  Instant next_sample_{};
  std::optional<Instant> last_fault_;
  std::optional<Duration> rereplicated_;  // First sample with every project converged at once.
  std::optional<Duration> each_converged_;  // First sample by which each project had converged at some sample.
  std::vector<bool> project_converged_;    // Per project, since the last fault.
  std::shared_ptr<const std::map<NodeId, std::uint16_t>> dc_table_;  // Node -> DC index (enough_holders).
  std::uint64_t next_snap_ = 0;
  std::uint64_t next_token_ = 0;
  PlacementReport report_;
};

}  // namespace

std::unique_ptr<Layer> make_placement_layer(const Scenario& scenario, std::uint64_t seed) {
  return std::make_unique<PlacementLayer>(scenario, seed);
}

}  // namespace shoal::sim
