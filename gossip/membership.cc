// gossip/membership.cc: the public face of the gossip core: inputs, timers,
// pause detection and views. The protocol work lives in apply.cc, probe.cc
// and dissemination.cc (see state.h for the map).
//
// Design note: pauses. A process that was stopped (SIGSTOP, a long GC-like
// stall, an overloaded host) wakes up to find every timer it armed long
// expired. Counting those expiries as failed probes would make the one node
// that misbehaved accuse healthy peers. Every input therefore first compares
// `now` with the deadline we last handed the driver; a jump far beyond it
// means we were paused: in-flight probes are discarded, suspicion timers are
// pushed back by the gap, and our own local health score goes up instead.

#include <algorithm>

#include "gossip/state.h"

namespace shoal::gossip {

Status validate_config(const Config& c) {
  auto bad = [](std::string what) { return make_error(Code::kInvalidArgument, "gossip config: " + what); };
  if (c.name.empty() || c.name.size() > wire::kNameBytesMax) {
    return bad("name must be 1.." + std::to_string(wire::kNameBytesMax) + " bytes");
  }
  if (c.dc.size() > wire::kDcBytesMax) {
    return bad("dc longer than " + std::to_string(wire::kDcBytesMax) + " bytes");
  }
  if (c.advertise.host.empty() || c.advertise.host.size() > wire::kHostBytesMax || c.advertise.port == 0) {
    return bad("advertise address must have a host and a non-zero port");
  }
  if (c.health.version.size() > wire::kVersionBytesMax) {
    return bad("health.version longer than " + std::to_string(wire::kVersionBytesMax) + " bytes");
  }
  if (c.probe_interval <= Duration(0) || c.probe_timeout <= Duration(0) || c.probe_timeout > c.probe_interval) {
    return bad("need 0 < probe_timeout <= probe_interval");
  }
  if (c.gossip_interval <= Duration(0) || c.eager_gossip_interval <= Duration(0) ||
      c.push_pull_interval <= Duration(0) || c.reconnect_interval <= Duration(0)) {
    return bad("intervals must be positive");
  }
  if (c.indirect_checks < 0 || c.suspicion_mult < 1 || c.suspicion_max_timeout_mult < 1 || c.gossip_nodes < 1 ||
      c.retransmit_mult < 1 || c.awareness_max < 1) {
    return bad("counts and multipliers must be positive");
  }
  if (c.awareness_max > 64) {
    return bad("awareness_max must be at most 64");
  }
  if (c.datagram_bytes_max < 512 || c.datagram_bytes_max > wire::kDatagramBytesMax) {
    return bad("datagram_bytes_max must be in 512..65507");
  }
  if (c.members_max < 2 || c.broadcasts_max < 16) {
    return bad("members_max >= 2 and broadcasts_max >= 16");
  }
  return ok_status();
}

Duration random_offset(Random& random, Duration range) {
  return Duration(
      static_cast<std::int64_t>(random.uniform(static_cast<std::uint64_t>(std::max<std::int64_t>(1, range.count())))));
}

bool health_change_is_significant(const Health& before, const Health& after) {
  if (before.version != after.version || before.projects_hosted != after.projects_hosted) {
    return true;
  }
  auto moved = [](std::uint64_t a, std::uint64_t b, std::uint64_t absolute, std::uint64_t percent) {
    const std::uint64_t diff = a > b ? a - b : b - a;
    return diff >= absolute && diff * 100 >= std::max(a, b) * percent;
  };
  // Load by at least 0.5 and 25 %; free disk by at least 1 GiB and 10 %.
  return moved(before.load_milli, after.load_milli, 500, 25) ||
         moved(before.free_disk_bytes, after.free_disk_bytes, 1ull << 30, 10);
}

Membership::State::State(Config cfg, Random& rng, Instant now)
    : config(std::move(cfg)),
      random(rng),
      awareness(config.awareness_max),
      broadcasts(config.broadcasts_max),
      self_id(node_id_from_public_key(config.public_key)) {
  const Status valid = validate_config(config);
  SHOAL_ASSERT(valid.has_value());  // The driver validates its configuration first.
  Entry self_entry;
  self_entry.id = self_id;
  self_entry.public_key = config.public_key;
  self_entry.incarnation = config.initial_incarnation + 1;  // Above whatever the mesh last saw of us.
  // The top half orders lives of this node, so a restarted node's health
  // updates are newer than its previous life's without any stored counter.
  self_entry.state_seq = (std::min<std::uint64_t>(self_entry.incarnation, 0x7fffffff) << 32) | 1;
  self_entry.catalog_version = 0;
  self_entry.status = MemberStatus::kAlive;
  self_entry.set_status_since(now);
  table.set_addr(self_entry, config.advertise);
  table.set_dc(self_entry, config.dc);
  table.set_health(self_entry, config.health);
  self_entry.local_health = 0;
  const std::uint32_t slot = table.insert(self_entry, config.name);
  SHOAL_ASSERT(slot == 0);

  next_seq = 1 + (random.next_u64() & 0xffffffff);
  // Staggered first timers so that nodes started together do not tick together.
  next_probe = now + random_offset(random, config.probe_interval);
  next_gossip = now + random_offset(random, config.gossip_interval);
  last_gossip = now - config.eager_gossip_interval;
  next_push_pull = now + config.push_pull_interval / 2 + random_offset(random, config.push_pull_interval / 2);
  next_reconnect = now + random_offset(random, config.reconnect_interval);
  next_reap = now + std::min(config.dead_reap, kReapCheckMax);
  broadcast_alive(0);  // Announce ourselves to whoever we meet first.
}

void Membership::State::begin_input(Instant now) {
  const Duration threshold = std::max(config.probe_interval, milliseconds(500));
  if (armed && now > armed_deadline + threshold) {
    on_pause(now, now - armed_deadline);
  }
}

void Membership::State::finish(Instant now) {
  armed = true;
  // A deadline already past (an eager gossip round due "now" after a long
  // idle spell) means the driver wakes us at once: measure pauses from now.
  armed_deadline = std::max(compute_deadline(), now);
}

void Membership::State::on_pause(Instant now, Duration gap) {
  ++counters.pauses_detected;
  probe.reset();  // Its timeouts measured our pause, not the target.
  forwards.clear();
  std::erase_if(pending_streams, [](const auto& kv) { return kv.second.purpose == Purpose::kReachability; });
  for (auto& [id, suspicion] : suspicions) {
    suspicion.postpone(gap);  // Refutations may be waiting in our socket buffer.
  }
  adjust_awareness(+1);
  next_probe = now + awareness.scale(config.probe_interval);
}

void Membership::State::tick(Instant now) {
  // Suspicion timers: collect first, the handlers change the map.
  std::vector<NodeId> expired;
  for (const auto& [id, suspicion] : suspicions) {
    if (suspicion.deadline() <= now) {
      expired.push_back(id);
    }
  }
  for (const NodeId& id : expired) {
    const std::uint32_t slot = table.find(id);
    suspicions.erase(id);
    if (slot != MemberTable::kNone && table.at(slot).status == MemberStatus::kSuspect) {
      declare_dead(now, slot);
    }
  }
  tick_forwards(now);
  tick_probe(now);
  tick_streams(now);
  tick_gossip(now);
  if (now >= next_reap && table.count(MemberStatus::kDead) + table.count(MemberStatus::kLeft) == 0) {
    next_reap = now + std::min(config.dead_reap, kReapCheckMax);  // Nobody to reap: skip the scan.
  } else if (now >= next_reap) {
    next_reap = now + std::min(config.dead_reap, kReapCheckMax);
    const Duration keep = config.dead_reap;
    const std::size_t removed = table.compact([&](const Entry& e) {
      return (e.status == MemberStatus::kDead || e.status == MemberStatus::kLeft) && e.status_since() + keep <= now;
    });
    if (removed > 0) {
      probe_order.clear();
      probe_next = 0;
    }
  }
}

Instant Membership::State::compute_deadline() const {
  Instant d = gossip_due();
  auto consider = [&d](Instant t) { d = std::min(d, t); };
  if (probe) {
    consider(probe->indirect_sent ? probe->deadline : probe->timeout_at);
  } else if (!leaving) {
    consider(next_probe);
  }
  if (!leaving) {
    consider(next_push_pull);
    consider(next_reconnect);
  }
  consider(next_reap);
  for (const auto& [seq, forward] : forwards) {
    consider(forward.nack_at);
  }
  for (const auto& [id, suspicion] : suspicions) {
    consider(suspicion.deadline());
  }
  if (join_wanted && join_outstanding == 0) {
    consider(join_retry_at);
  }
  return d;
}

std::size_t Membership::State::live_members() const {
  return table.count(MemberStatus::kAlive) + table.count(MemberStatus::kSuspect);
}

void Membership::State::emit(Instant now, EventKind kind, std::uint32_t slot) {
  if (events.size() >= kEventsMax) {
    events.pop_front();
    ++counters.outputs_dropped;
  }
  events.push_back(Event{kind, now, table.view(slot)});
}

void Membership::State::adjust_awareness(int delta) {
  const int before = awareness.score();
  awareness.apply(delta);
  if (awareness.score() != before) {
    // Rides on the next ping/ack digest; not worth a broadcast of its own.
    self().local_health = static_cast<std::uint8_t>(awareness.score());
    ++self().state_seq;
  }
}

wire::Digest Membership::State::self_digest() const {
  const Entry& e = self();
  return wire::Digest{e.id, e.incarnation, e.state_seq, e.catalog_version, table.health(e)};
}

wire::MemberRecord Membership::State::record(std::uint32_t slot) const {
  const Entry& e = table.at(slot);
  wire::MemberRecord r;
  r.id = e.id;
  r.name = table.name(e);
  r.dc = table.dc(e);
  r.addr = table.addr(e);
  r.public_key = e.public_key;
  r.incarnation = e.incarnation;
  r.status = e.status;
  r.stalled = e.stalled;
  r.state_seq = e.state_seq;
  r.catalog_version = e.catalog_version;
  r.health = table.health(e);
  return r;
}

// --- Membership ----------------------------------------------------------------

Membership::Membership(Config config, Random& random, Instant now)
    : state_(std::make_unique<State>(std::move(config), random, now)) {}

Membership::~Membership() = default;

void Membership::on_datagram(Instant now, const Address& from, ByteView payload) {
  State& s = *state_;
  s.begin_input(now);
  s.counters.bytes_in += payload.size();
  auto packet = wire::decode_packet(payload);
  if (!packet) {
    ++s.counters.decode_errors;
  } else {
    s.counters.unknown_message_types += packet->unknown_types;
    s.counters.messages_in += packet->messages.size();
    s.handle_packet(now, from, *packet);
  }
  s.finish(now);
}

Result<Bytes> Membership::on_stream_request(Instant now, const Address& from, ByteView payload) {
  State& s = *state_;
  s.begin_input(now);
  s.counters.bytes_in += payload.size();
  auto remote = wire::decode_push_pull(payload, s.config.members_max);
  if (!remote) {
    ++s.counters.decode_errors;
    s.finish(now);
    return std::unexpected(remote.error());
  }
  ++s.counters.messages_in;
  s.merge(now, *remote, from, /*initiator=*/false);
  // The reply is built after merging, so a refutation we just made rides on it.
  Bytes reply = wire::encode(s.full_state(false));
  ++s.counters.messages_out;
  s.counters.bytes_out += reply.size();
  s.finish(now);
  return reply;
}

void Membership::on_stream_result(Instant now, std::uint64_t stream_id, StreamOutcome outcome, ByteView reply) {
  State& s = *state_;
  s.begin_input(now);
  s.handle_stream_result(now, stream_id, outcome, reply);
  s.finish(now);
}

void Membership::on_tick(Instant now) {
  State& s = *state_;
  s.begin_input(now);
  s.tick(now);
  s.finish(now);
}

void Membership::join(Instant now, std::span<const Address> seeds) {
  State& s = *state_;
  s.begin_input(now);
  s.join_seeds.assign(seeds.begin(),
                      seeds.begin() + static_cast<std::ptrdiff_t>(std::min(seeds.size(), kJoinSeedsMax)));
  s.join_wanted = !s.join_seeds.empty();
  s.join_backoff = seconds(1);
  if (s.join_wanted && s.join_outstanding == 0) {
    s.send_join(now);
  }
  s.finish(now);
}

std::size_t Membership::restore_members(Instant now, std::span<const Member> members) {
  State& s = *state_;
  s.begin_input(now);
  const std::size_t added = s.restore(now, members);
  s.finish(now);
  return added;
}

void Membership::leave(Instant now) {
  State& s = *state_;
  s.begin_input(now);
  if (s.leaving) {
    return;
  }
  s.leaving = true;
  s.leave_started = now;
  s.probe.reset();
  s.join_wanted = false;
  s.table.set_status(0, MemberStatus::kLeft, now);
  s.enqueue(s.self_id, Topic::kMembership, wire::Leave{s.self_id, s.self().incarnation});
  s.finish(now);
}

bool Membership::leave_done(Instant now) const {
  const State& s = *state_;
  if (!s.leaving) {
    return false;
  }
  if (now >= s.leave_started + s.config.leave_timeout) {
    return true;
  }
  const std::size_t peers = s.live_members();  // Self is "left" now, so these are others.
  const auto sent = s.broadcasts.transmits(s.self_id, Topic::kMembership);
  if (!sent) {
    return true;  // Retired: sent the full retransmit limit.
  }
  return static_cast<std::size_t>(*sent) >=
         std::min<std::size_t>(peers, static_cast<std::size_t>(s.config.gossip_nodes));
}

void Membership::set_health(Instant now, const Health& health) {
  State& s = *state_;
  s.begin_input(now);
  Health h = health;
  h.local_health = static_cast<std::uint32_t>(s.awareness.score());
  if (h.version.size() > wire::kVersionBytesMax) {
    h.version.resize(wire::kVersionBytesMax);
  }
  const Health old = s.table.health(s.self());
  if (old != h) {
    ++s.self().state_seq;
    s.table.set_health(s.self(), h);
    if (health_change_is_significant(old, h)) {
      s.broadcast_state(0);
    }
    // Otherwise it rides on our next pings and acks (and push-pulls) only,
    // so a load figure that wobbles every refresh costs no datagrams.
  }
  s.finish(now);
}

void Membership::set_catalog_version(Instant now, std::uint64_t version) {
  State& s = *state_;
  s.begin_input(now);
  if (s.self().catalog_version != version) {
    ++s.self().state_seq;
    s.self().catalog_version = version;
    s.broadcast_state(0);
  }
  s.finish(now);
}

std::optional<Datagram> Membership::poll_transmit() {
  if (state_->outbox.empty()) {
    return std::nullopt;
  }
  Datagram d = std::move(state_->outbox.front());
  state_->outbox.pop_front();
  return d;
}

std::optional<StreamRequest> Membership::poll_stream() {
  if (state_->streams.empty()) {
    return std::nullopt;
  }
  StreamRequest r = std::move(state_->streams.front());
  state_->streams.pop_front();
  return r;
}

std::optional<Event> Membership::poll_event() {
  if (state_->events.empty()) {
    return std::nullopt;
  }
  Event e = std::move(state_->events.front());
  state_->events.pop_front();
  return e;
}

std::optional<Instant> Membership::next_deadline() const { return state_->compute_deadline(); }

NodeId Membership::self_id() const { return state_->self_id; }

Member Membership::self() const { return state_->table.view(0); }

std::vector<Member> Membership::members() const {
  std::vector<Member> out;
  out.reserve(state_->table.size());
  for (std::uint32_t slot = 0; slot < state_->table.size(); ++slot) {
    out.push_back(state_->table.view(slot));
  }
  std::sort(out.begin(), out.end(), [](const Member& a, const Member& b) {
    return a.name != b.name ? a.name < b.name : a.id < b.id;
  });
  return out;
}

std::optional<Member> Membership::find(const NodeId& id) const {
  const std::uint32_t slot = state_->table.find(id);
  if (slot == MemberTable::kNone) {
    return std::nullopt;
  }
  return state_->table.view(slot);
}

std::size_t Membership::count(MemberStatus status) const { return state_->table.count(status); }

int Membership::local_health() const { return state_->awareness.score(); }

const Counters& Membership::counters() const { return state_->counters; }

}  // namespace shoal::gossip
