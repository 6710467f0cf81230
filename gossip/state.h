#pragma once
// gossip/state.h: the private state of Membership and the verbs its .cc files
// share (internal; include only from gossip/*.cc). The work is split by job:
//   membership.cc     public API, inputs, timers, pause detection, views
//   apply.cc          the update template: alive, suspect, dead, leave, state
//   probe.cc          probe, indirect probe, reachability, awareness
//   dissemination.cc  piggyback packing, gossip rounds, push-pull, join
//
// Every handler in apply.cc follows one template (memberlist state.go):
// look up -> drop stale incarnation -> refute if about self -> apply ->
// enqueue rebroadcast -> emit event.

#include <deque>
#include <map>
#include <optional>
#include <vector>

#include "gossip/awareness.h"
#include "gossip/broadcast_queue.h"
#include "gossip/member_table.h"
#include "gossip/membership.h"
#include "gossip/suspicion.h"
#include "gossip/wire.h"

namespace shoal::gossip {

// Bounds on what a driver that does not drain, or a flood of peers, can grow.
constexpr std::size_t kOutboxMax = 65536;
constexpr std::size_t kEventsMax = 65536;
constexpr std::size_t kForwardsMax = 1024;  // Indirect probes we run for others.
constexpr std::size_t kJoinSeedsMax = 16;
constexpr std::size_t kPendingStreamsMax = 256;
constexpr Duration kReapCheckMax = seconds(60);
// A fresh joiner re-announces what it learned only from meshes this small.
constexpr std::size_t kFreshRebroadcastMax = 256;

// Uniform in [0, range).
Duration random_offset(Random& random, Duration range);

struct Membership::State {
  State(Config config, Random& random, Instant now);

  // --- collaborators and tables -------------------------------------------
  Config config;
  Random& random;
  MemberTable table;  // Slot 0 is this node.
  Awareness awareness;
  BroadcastQueue broadcasts;
  Counters counters;
  NodeId self_id;

  std::deque<Datagram> outbox;
  std::deque<StreamRequest> streams;
  std::deque<Event> events;

  // --- probing (probe.cc) -------------------------------------------------
  struct Probe {
    NodeId target;
    Address addr;
    std::uint64_t seq = 0;
    Instant timeout_at;  // Direct ack due; then indirect probes and a reachability check.
    Instant deadline;    // End of the round: no ack by now means the probe failed.
    bool indirect_sent = false;
    int nacks_expected = 0;
    int nacks = 0;
    std::optional<StreamOutcome> reachability;
  };
  std::optional<Probe> probe;
  // Shuffled round-robin of slots (4 bytes per member, not 16); rebuilt when
  // exhausted and cleared whenever compaction moves slots.
  std::vector<std::uint32_t> probe_order;
  std::size_t probe_next = 0;
  Instant next_probe;
  std::uint64_t next_seq = 1;

  struct Forward {  // An indirect probe we run on behalf of a requester.
    Address requester;
    std::uint64_t requester_seq = 0;
    Instant nack_at;
    bool nack = true;
  };
  std::map<std::uint64_t, Forward> forwards;  // By the seq of our ping.

  std::map<NodeId, Suspicion> suspicions;

  // --- streams, join, gossip timers (dissemination.cc) ---------------------
  enum class Purpose : std::uint8_t { kJoin, kPushPull, kReconnect, kReachability };
  struct PendingStream {
    Purpose purpose;
    NodeId target;
    Address addr;
    std::uint64_t probe_seq = 0;
  };
  std::map<std::uint64_t, PendingStream> pending_streams;
  std::uint64_t next_stream_id = 1;

  std::vector<Address> join_seeds;
  bool join_wanted = false;
  int join_outstanding = 0;
  Instant join_retry_at;
  Duration join_backoff = seconds(1);

  Instant next_gossip;  // Regular cadence.
  Instant last_gossip;  // Any round, regular or eager.
  Instant next_push_pull;
  Instant next_reconnect;
  Instant next_reap;
  Instant next_unknown_sync;  // Rate limit of push-pulls with unknown pingers.

  bool leaving = false;
  Instant leave_started;

  // Pause detection: the deadline we last handed the driver.
  bool armed = false;
  Instant armed_deadline;

  // --- membership.cc ------------------------------------------------------
  void begin_input(Instant now);
  void finish(Instant now);
  void on_pause(Instant now, Duration gap);
  void tick(Instant now);
  Instant compute_deadline() const;
  Entry& self() { return table.at(0); }
  const Entry& self() const { return table.at(0); }
  std::size_t live_members() const;  // alive + suspect, including self unless leaving.
  void emit(Instant now, EventKind kind, std::uint32_t slot);
  void adjust_awareness(int delta);
  wire::Digest self_digest() const;
  wire::MemberRecord record(std::uint32_t slot) const;
  // Up to k distinct random slots (never self) satisfying pred.
  template <class Pred>
  std::vector<std::uint32_t> sample(std::size_t k, Pred pred);

  // --- apply.cc -----------------------------------------------------------
  void handle_packet(Instant now, const Address& from, wire::Packet& packet);
  void apply_alive(Instant now, const wire::MemberRecord& r, bool broadcast_new);
  void apply_suspect(Instant now, const wire::Suspect& s);
  void apply_dead(Instant now, const wire::Dead& d);
  void apply_leave(Instant now, const wire::Leave& l);
  void apply_state(Instant now, const wire::State& s);
  void apply_digest(Instant now, const wire::Digest& d);
  bool apply_state_fields(Instant now, std::uint32_t slot, std::uint64_t seq, std::uint64_t catalog,
                          const Health& health);
  void refute(Instant now, std::uint64_t accused_incarnation);
  void start_suspicion(Instant now, std::uint32_t slot, const NodeId& accuser, bool stalled);
  // Our own verdicts after probing.
  void suspect_member(Instant now, std::uint32_t slot, bool stalled);
  void declare_dead(Instant now, std::uint32_t slot);
  void add_to_probe_order(std::uint32_t slot);
  std::size_t restore(Instant now, std::span<const Member> members);

  // --- probe.cc -----------------------------------------------------------
  void tick_probe(Instant now);
  void start_probe(Instant now);
  void send_indirect(Instant now);
  void probe_failed(Instant now);
  void check_fast_death(Instant now);
  void handle_ping(Instant now, const Address& from, const wire::Ping& p);
  void handle_ping_req(Instant now, const Address& from, const wire::PingReq& p);
  void handle_ack(Instant now, const wire::Ack& a);
  void handle_nack(Instant now, const wire::Nack& n);
  void on_reachability(Instant now, const PendingStream& pending, StreamOutcome outcome);
  void tick_forwards(Instant now);

  // --- dissemination.cc ---------------------------------------------------
  void enqueue(const NodeId& about, Topic topic, const wire::Message& message);
  void broadcast_alive(std::uint32_t slot);
  void broadcast_state(std::uint32_t slot);
  // Sends primary messages plus as many piggybacked broadcasts as fit.
  // Returns false when there was nothing to send.
  bool send(Instant now, const Address& to, std::span<const Bytes> primary);
  bool send_one(Instant now, const Address& to, const wire::Message& message);
  int retransmits() const;
  // push_pull_interval, scaled up with log2 of the live members past 32.
  Duration push_pull_period() const;
  Instant gossip_due() const;
  void tick_gossip(Instant now);
  void gossip_round(Instant now);
  wire::PushPull full_state(bool join) const;
  void start_push_pull(Instant now, Purpose purpose, const Address& to, const NodeId& target);
  void merge(Instant now, const wire::PushPull& remote, const Address& peer, bool initiator);
  void send_join(Instant now);
  void tick_streams(Instant now);
  void handle_stream_result(Instant now, std::uint64_t id, StreamOutcome outcome, ByteView reply);
};

template <class Pred>
std::vector<std::uint32_t> Membership::State::sample(std::size_t k, Pred pred) {
  std::vector<std::uint32_t> chosen;
  const std::size_t n = table.size();
  if (k == 0 || n <= 1) {
    return chosen;
  }
  auto taken = [&chosen](std::uint32_t slot) {
    return std::find(chosen.begin(), chosen.end(), slot) != chosen.end();
  };
  // Rejection sampling keeps this O(k) in large, mostly healthy tables.
  for (std::size_t attempt = 0; attempt < 4 * k + 16 && chosen.size() < k; ++attempt) {
    const auto slot = static_cast<std::uint32_t>(1 + random.uniform(n - 1));
    if (!taken(slot) && pred(table.at(slot))) {
      chosen.push_back(slot);
    }
  }
  if (chosen.size() < k) {
    // Few candidates: collect them all, then draw the rest without replacement.
    std::vector<std::uint32_t> rest;
    for (std::uint32_t slot = 1; slot < n; ++slot) {
      if (!taken(slot) && pred(table.at(slot))) {
        rest.push_back(slot);
      }
    }
    while (chosen.size() < k && !rest.empty()) {
      const std::size_t i = random.uniform(rest.size());
      chosen.push_back(rest[i]);
      rest[i] = rest.back();
      rest.pop_back();
    }
  }
  return chosen;
}

}  // namespace shoal::gossip
