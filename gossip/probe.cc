// gossip/probe.cc: failure detection. One member is probed per (scaled)
// probe interval in a shuffled round-robin order; no ack within the probe
// timeout brings in `indirect_checks` helpers (ping-req, answered with ack or
// nack) and, our addition, a TCP reachability check of the target.
//
// Design note: why a reachability check. SWIM cannot tell a crashed process
// from a slow one, so it waits out a suspicion timeout for both (serf: 7.7 s
// median detection at N=32). The target's kernel can tell them apart:
//   kRefused   the host is up and nothing listens: the process is gone. With
//              one helper's nack confirming that the target is silent, the
//              member is declared dead at once.
//   kConnected the kernel completed the handshake but the process does not
//              answer: it is paused or overloaded, "stalled". It is suspected
//              with stalled = true and only declared dead after stall_budget.
//   kTimeout   the host itself is silent: normal SWIM + Lifeguard timing.
//
// Lifeguard's local health: a probe that ends without the nacks we asked
// for raises our awareness score (we are probably the slow one) and every
// probe interval and timeout is scaled by it; a successful probe lowers it.

#include "gossip/state.h"

namespace shoal::gossip {
namespace {

bool probeable(const Entry& e) { return e.status == MemberStatus::kAlive || e.status == MemberStatus::kSuspect; }

}  // namespace

void Membership::State::tick_probe(Instant now) {
  if (probe && !probe->indirect_sent && now >= probe->timeout_at) {
    send_indirect(now);
    if (now - probe->timeout_at > config.probe_timeout / 2) {
      // We were woken late (a busy or briefly paused process): give the
      // helpers and the reachability check their full time rather than
      // failing the probe in this same tick.
      probe->deadline = std::max(probe->deadline, now + awareness.scale(config.probe_interval - config.probe_timeout));
    }
  }
  if (probe && now >= probe->deadline) {
    probe_failed(now);
  }
  if (!probe && !leaving && now >= next_probe) {
    start_probe(now);
  }
}

void Membership::State::start_probe(Instant now) {
  next_probe = now + awareness.scale(config.probe_interval);
  std::uint32_t slot = MemberTable::kNone;
  for (int pass = 0; pass < 2 && slot == MemberTable::kNone; ++pass) {
    while (probe_next < probe_order.size()) {
      const std::uint32_t candidate = probe_order[probe_next++];
      if (candidate != 0 && candidate < table.size() && probeable(table.at(candidate))) {
        slot = candidate;
        break;
      }
    }
    if (slot == MemberTable::kNone) {
      // Round finished: a fresh shuffle of everyone we could probe.
      probe_order.clear();
      probe_next = 0;
      probe_order.reserve(table.size());  // To size, not doubled: 4 bytes a member, not up to 8.
      for (std::uint32_t s = 1; s < table.size(); ++s) {
        if (probeable(table.at(s))) {
          probe_order.push_back(s);
        }
      }
      for (std::size_t i = probe_order.size(); i > 1; --i) {
        std::swap(probe_order[i - 1], probe_order[random.uniform(i)]);
      }
    }
  }
  if (slot == MemberTable::kNone) {
    return;  // Alone.
  }
  const Entry& e = table.at(slot);
  Probe p;
  p.target = e.id;
  p.addr = table.addr(e);
  p.seq = next_seq++;
  p.timeout_at = now + awareness.scale(config.probe_timeout);
  p.deadline = now + awareness.scale(config.probe_interval);
  std::vector<Bytes> parts;
  parts.push_back(wire::encode(wire::Ping{p.seq, e.id, self_digest()}));
  if (e.status == MemberStatus::kSuspect) {
    // Buddy system: tell the suspect directly so it can refute at once.
    parts.push_back(wire::encode(wire::Suspect{e.id, e.incarnation, self_id, e.stalled}));
  }
  send(now, p.addr, parts);
  ++counters.probes_sent;
  probe = std::move(p);
}

void Membership::State::send_indirect(Instant now) {
  SHOAL_ASSERT(probe.has_value());
  Probe& p = *probe;
  p.indirect_sent = true;
  const std::vector<std::uint32_t> helpers =
      sample(static_cast<std::size_t>(config.indirect_checks),
             [&p](const Entry& e) { return e.status == MemberStatus::kAlive && e.id != p.target; });
  for (std::uint32_t slot : helpers) {
    send_one(now, table.addr(table.at(slot)), wire::PingReq{p.seq, p.target, p.addr, true});
    ++counters.indirect_probes_sent;
  }
  p.nacks_expected = static_cast<int>(helpers.size());
  if (pending_streams.size() < kPendingStreamsMax) {
    const std::uint64_t id = next_stream_id++;
    streams.push_back(StreamRequest{id, StreamKind::kReachability, p.addr, {}});
    pending_streams.emplace(id, PendingStream{Purpose::kReachability, p.target, p.addr, p.seq});
  }
}

void Membership::State::probe_failed(Instant now) {
  SHOAL_ASSERT(probe.has_value());
  const Probe p = *probe;
  probe.reset();
  ++counters.probes_failed;
  // Lifeguard: with helpers, only the nacks we did not get count against us
  // (they show whether our own network works); alone, any failure does.
  adjust_awareness(p.nacks_expected > 0 ? p.nacks_expected - p.nacks : 1);
  const std::uint32_t slot = table.find(p.target);
  if (slot == MemberTable::kNone || !probeable(table.at(slot))) {
    return;
  }
  if (p.reachability == StreamOutcome::kRefused) {
    declare_dead(now, slot);
  } else {
    suspect_member(now, slot, p.reachability == StreamOutcome::kConnected);
  }
}

void Membership::State::check_fast_death(Instant now) {
  if (!probe || !probe->indirect_sent || probe->reachability != StreamOutcome::kRefused || probe->nacks < 1) {
    return;
  }
  // Nothing listens on the target's port and a helper could not reach it
  // either: the process is gone. No suspicion period.
  const Probe p = *probe;
  probe.reset();
  ++counters.probes_failed;
  const std::uint32_t slot = table.find(p.target);
  if (slot != MemberTable::kNone && probeable(table.at(slot))) {
    declare_dead(now, slot);
  }
}

void Membership::State::on_reachability(Instant now, const PendingStream& pending, StreamOutcome outcome) {
  if (probe && probe->seq == pending.probe_seq) {
    probe->reachability = outcome;
    check_fast_death(now);
    return;
  }
  // The round already ended without an ack and the member is suspect: the
  // late verdict still sharpens it.
  const std::uint32_t slot = table.find(pending.target);
  if (slot == MemberTable::kNone || table.at(slot).status != MemberStatus::kSuspect) {
    return;
  }
  if (outcome == StreamOutcome::kRefused) {
    declare_dead(now, slot);
  } else if (outcome == StreamOutcome::kConnected) {
    suspect_member(now, slot, true);
  }
}

void Membership::State::handle_ping(Instant now, const Address& from, const wire::Ping& p) {
  apply_digest(now, p.source);
  if (p.source.id != self_id && table.find(p.source.id) == MemberTable::kNone && now >= next_unknown_sync) {
    // A member we do not know probes us: our views have diverged (we just
    // restarted and were found through a helper's ping, say). A digest
    // cannot introduce a member, so exchange full state with it.
    next_unknown_sync = now + config.reconnect_interval;
    start_push_pull(now, Purpose::kPushPull, from, p.source.id);
  }
  if (p.target != self_id) {
    ++counters.stale_messages;  // Meant for a previous owner of this address.
    return;
  }
  send_one(now, from, wire::Ack{p.seq, self_digest()});
}

void Membership::State::handle_ping_req(Instant now, const Address& from, const wire::PingReq& p) {
  if (p.target == self_id) {
    send_one(now, from, wire::Ack{p.seq, self_digest()});
    return;
  }
  if (forwards.size() >= kForwardsMax) {
    ++counters.outputs_dropped;
    return;
  }
  const std::uint64_t seq = next_seq++;
  send_one(now, p.target_addr, wire::Ping{seq, p.target, self_digest()});
  // memberlist nacks after a full probe_timeout, which lands after the
  // requester's round has ended, so its nacks rarely count. Half of it is
  // still many round trips on a LAN, arrives in time, and lets a refused
  // reachability check be confirmed sooner.
  forwards.emplace(seq, Forward{from, p.seq, now + config.probe_timeout / 2, p.nack});
}

void Membership::State::handle_ack(Instant now, const wire::Ack& a) {
  if (a.source) {
    apply_digest(now, *a.source);
  }
  if (probe && a.seq == probe->seq) {
    probe.reset();
    adjust_awareness(-1);
    return;
  }
  if (auto it = forwards.find(a.seq); it != forwards.end()) {
    const Forward f = it->second;
    forwards.erase(it);
    send_one(now, f.requester, wire::Ack{f.requester_seq, a.source});
  }
}

void Membership::State::handle_nack(Instant now, const wire::Nack& n) {
  if (probe && n.seq == probe->seq) {
    ++probe->nacks;
    check_fast_death(now);
  }
}

void Membership::State::tick_forwards(Instant now) {
  for (auto it = forwards.begin(); it != forwards.end();) {
    if (it->second.nack_at > now) {
      ++it;
      continue;
    }
    if (it->second.nack) {
      send_one(now, it->second.requester, wire::Nack{it->second.requester_seq});
      ++counters.nacks_sent;
    }
    it = forwards.erase(it);
  }
}

}  // namespace shoal::gossip
