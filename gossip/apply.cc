// gossip/apply.cc: what a node does with news about a member. Every handler
// follows memberlist's template: look up -> drop stale incarnation -> refute
// if it is about us -> apply -> enqueue a rebroadcast -> emit an event.
//
// Ordering rules (SWIM): an incarnation number is only ever raised by the
// member itself (to refute). alive(i) overrides suspect(j) and dead(j) when
// i > j; suspect(i) overrides alive(j) when i >= j; dead(i) and leave(i)
// override alive/suspect(j) when i >= j. Health and catalog versions travel
// separately, ordered by a per-member state_seq, and never bump incarnation.

#include "gossip/state.h"

namespace shoal::gossip {

void Membership::State::handle_packet(Instant now, const Address& from, wire::Packet& packet) {
  // Piggybacked broadcasts first, the datagram's purpose last: a buddy
  // suspicion on a ping is refuted before the ack is built, so the ack
  // carries the refutation straight back.
  for (std::size_t i = packet.messages.size(); i-- > 0;) {
    wire::Message& m = packet.messages[i];
    if (auto* p = std::get_if<wire::Ping>(&m)) {
      handle_ping(now, from, *p);
    } else if (auto* q = std::get_if<wire::PingReq>(&m)) {
      handle_ping_req(now, from, *q);
    } else if (auto* a = std::get_if<wire::Ack>(&m)) {
      handle_ack(now, *a);
    } else if (auto* n = std::get_if<wire::Nack>(&m)) {
      handle_nack(now, *n);
    } else if (auto* al = std::get_if<wire::Alive>(&m)) {
      apply_alive(now, al->member, true);
    } else if (auto* s = std::get_if<wire::Suspect>(&m)) {
      apply_suspect(now, *s);
    } else if (auto* d = std::get_if<wire::Dead>(&m)) {
      apply_dead(now, *d);
    } else if (auto* l = std::get_if<wire::Leave>(&m)) {
      apply_leave(now, *l);
    } else if (auto* st = std::get_if<wire::State>(&m)) {
      apply_state(now, *st);
    }
  }
}

void Membership::State::add_to_probe_order(std::uint32_t slot) {
  // At a random place still ahead of us in this round (memberlist does the same).
  probe_order.push_back(slot);
  const std::size_t ahead = probe_order.size() - std::min(probe_next, probe_order.size());
  const std::size_t j = probe_order.size() - 1 - random.uniform(ahead);
  std::swap(probe_order[j], probe_order.back());
}

std::size_t Membership::State::restore(Instant now, std::span<const Member> members) {
  std::size_t name_bytes = 0;
  for (const Member& m : members) {
    name_bytes += m.name.size();
  }
  table.reserve(std::min(members.size(), config.members_max - std::min(config.members_max, table.size())),
                name_bytes);
  std::size_t added = 0;
  for (const Member& m : members) {
    if (table.size() >= config.members_max) {
      break;
    }
    if (m.id == self_id || table.find(m.id) != MemberTable::kNone) {
      continue;
    }
    if (m.name.empty() || m.name.size() > wire::kNameBytesMax || m.dc.size() > wire::kDcBytesMax ||
        m.addr.host.empty() || m.addr.host.size() > wire::kHostBytesMax || m.addr.port == 0 ||
        m.health.version.size() > wire::kVersionBytesMax) {
      ++counters.decode_errors;
      continue;
    }
    if (node_id_from_public_key(m.public_key) != m.id) {
      ++counters.identity_rejected;
      continue;
    }
    Entry e;
    e.id = m.id;
    e.public_key = m.public_key;
    e.incarnation = m.incarnation;
    e.state_seq = 0;
    e.catalog_version = m.catalog_version;
    e.status = m.status == MemberStatus::kSuspect ? MemberStatus::kAlive : m.status;
    e.set_status_since(now);
    table.set_addr(e, m.addr);
    table.set_dc(e, m.dc);
    table.set_health(e, m.health);
    table.insert(e, m.name);
    ++added;
  }
  if (added > 0) {
    probe_order.clear();  // The next probe starts a shuffled round over everyone.
    probe_next = 0;
    next_push_pull = now + random_offset(random, push_pull_period());
  }
  return added;
}

void Membership::State::apply_alive(Instant now, const wire::MemberRecord& r, bool broadcast_new) {
  if (r.id == self_id) {
    // Someone holds a newer view of us (a previous life of this node):
    // climb above it so our current record wins.
    if (r.incarnation >= self().incarnation && !leaving && r.public_key == self().public_key &&
        (r.incarnation > self().incarnation || r.addr != table.addr(self()))) {
      refute(now, r.incarnation);
    }
    return;
  }
  std::uint32_t slot = table.find(r.id);
  if (slot == MemberTable::kNone) {
    if (node_id_from_public_key(r.public_key) != r.id) {
      ++counters.identity_rejected;
      return;
    }
    if (table.size() >= config.members_max) {
      ++counters.outputs_dropped;
      return;
    }
    Entry e;
    e.id = r.id;
    e.public_key = r.public_key;
    e.incarnation = r.incarnation;
    e.state_seq = r.state_seq;
    e.catalog_version = r.catalog_version;
    e.status = MemberStatus::kAlive;
    e.set_status_since(now);
    table.set_addr(e, r.addr);
    table.set_dc(e, r.dc);
    table.set_health(e, r.health);
    slot = table.insert(e, r.name);
    add_to_probe_order(slot);
    if (broadcast_new) {
      broadcast_alive(slot);
    }
    emit(now, EventKind::kJoined, slot);
    return;
  }
  Entry& e = table.at(slot);
  if (e.public_key != r.public_key) {
    ++counters.identity_rejected;  // Same id, another key: never let it take over.
    return;
  }
  const bool state_changed = apply_state_fields(now, slot, r.state_seq, r.catalog_version, r.health);
  if (r.incarnation <= e.incarnation) {
    if (!state_changed) {
      ++counters.stale_messages;
    }
    return;
  }
  const MemberStatus old = e.status;
  const Address addr = table.addr(e);
  const bool identity_changed = table.name(e) != r.name || table.dc(e) != r.dc || addr != r.addr;
  table.set_name(slot, r.name);
  table.set_dc(e, r.dc);
  if (addr != r.addr) {
    table.set_addr(e, r.addr);
  }
  e.incarnation = r.incarnation;
  e.stalled = false;
  table.set_status(slot, MemberStatus::kAlive, now);
  suspicions.erase(r.id);
  broadcast_alive(slot);
  if (old == MemberStatus::kSuspect) {
    emit(now, EventKind::kAlive, slot);
  } else if (old == MemberStatus::kDead || old == MemberStatus::kLeft) {
    add_to_probe_order(slot);
    emit(now, EventKind::kJoined, slot);
  } else if (identity_changed) {
    emit(now, EventKind::kUpdated, slot);
  }
}

void Membership::State::apply_suspect(Instant now, const wire::Suspect& s) {
  const std::uint32_t slot = table.find(s.id);
  if (slot == MemberTable::kNone) {
    return;  // Cannot suspect who we do not know; the alive will come first.
  }
  Entry& e = table.at(slot);
  if (s.incarnation < e.incarnation) {
    ++counters.stale_messages;
    return;
  }
  if (e.status == MemberStatus::kDead || e.status == MemberStatus::kLeft) {
    return;
  }
  if (slot == 0) {
    if (!leaving) {
      refute(now, s.incarnation);
    }
    return;
  }
  if (e.status == MemberStatus::kSuspect) {
    auto it = suspicions.find(s.id);
    if (it == suspicions.end()) {
      start_suspicion(now, slot, s.from, s.stalled);
      return;
    }
    bool changed = false;
    if (s.stalled && it->second.mark_stalled(now, config.stall_budget)) {
      e.stalled = true;
      emit(now, EventKind::kStalled, slot);
      changed = true;
    }
    if (s.from != self_id && it->second.confirm(s.from)) {
      changed = true;
    }
    if (s.incarnation > e.incarnation) {
      e.incarnation = s.incarnation;
      changed = true;
    }
    if (changed) {
      enqueue(s.id, Topic::kMembership, wire::Suspect{s.id, e.incarnation, s.from, e.stalled});
    }
    return;
  }
  e.incarnation = s.incarnation;
  e.stalled = s.stalled;
  table.set_status(slot, MemberStatus::kSuspect, now);
  start_suspicion(now, slot, s.from, s.stalled);
  enqueue(s.id, Topic::kMembership, wire::Suspect{s.id, e.incarnation, s.from, s.stalled});
  emit(now, EventKind::kSuspect, slot);
  if (s.stalled) {
    emit(now, EventKind::kStalled, slot);
  }
}

void Membership::State::apply_dead(Instant now, const wire::Dead& d) {
  const std::uint32_t slot = table.find(d.id);
  if (slot == MemberTable::kNone) {
    return;
  }
  Entry& e = table.at(slot);
  if (d.incarnation < e.incarnation) {
    ++counters.stale_messages;
    return;
  }
  if (e.status == MemberStatus::kDead || e.status == MemberStatus::kLeft) {
    return;
  }
  if (slot == 0) {
    if (!leaving) {
      refute(now, d.incarnation);
    }
    return;
  }
  e.incarnation = d.incarnation;
  e.stalled = false;
  table.set_status(slot, MemberStatus::kDead, now);
  suspicions.erase(d.id);
  enqueue(d.id, Topic::kMembership, d);
  emit(now, EventKind::kDead, slot);
}

void Membership::State::apply_leave(Instant now, const wire::Leave& l) {
  const std::uint32_t slot = table.find(l.id);
  if (slot == MemberTable::kNone) {
    return;
  }
  Entry& e = table.at(slot);
  if (l.incarnation < e.incarnation) {
    ++counters.stale_messages;
    return;
  }
  if (e.status == MemberStatus::kLeft) {
    return;
  }
  if (slot == 0) {
    if (!leaving) {
      refute(now, l.incarnation);  // A leave from a previous life of ours.
    }
    return;
  }
  e.incarnation = l.incarnation;
  e.stalled = false;
  table.set_status(slot, MemberStatus::kLeft, now);
  suspicions.erase(l.id);
  enqueue(l.id, Topic::kMembership, l);
  emit(now, EventKind::kLeft, slot);
}

void Membership::State::apply_state(Instant now, const wire::State& s) {
  const std::uint32_t slot = table.find(s.id);
  if (slot == MemberTable::kNone) {
    return;
  }
  if (slot == 0) {
    if (s.state_seq > self().state_seq) {
      // A previous life's update (our own echo has an equal seq): reassert
      // ours above it.
      self().state_seq = s.state_seq + 1;
      broadcast_state(0);
    }
    return;
  }
  if (apply_state_fields(now, slot, s.state_seq, s.catalog_version, s.health)) {
    enqueue(s.id, Topic::kState, s);
  } else {
    ++counters.stale_messages;
  }
}

void Membership::State::apply_digest(Instant now, const wire::Digest& d) {
  const std::uint32_t slot = table.find(d.id);
  if (slot == MemberTable::kNone || slot == 0) {
    return;
  }
  apply_state_fields(now, slot, d.state_seq, d.catalog_version, d.health);
  Entry& e = table.at(slot);
  if (d.incarnation > e.incarnation && e.status != MemberStatus::kLeft) {
    // The member speaks for itself with a newer incarnation: as good as its alive.
    wire::MemberRecord r = record(slot);
    r.incarnation = d.incarnation;
    apply_alive(now, r, true);
  }
}

bool Membership::State::apply_state_fields(Instant now, std::uint32_t slot, std::uint64_t seq, std::uint64_t catalog,
                                           const Health& health) {
  Entry& e = table.at(slot);
  if (seq <= e.state_seq) {
    return false;
  }
  const bool health_changed = table.health(e) != health;
  const bool catalog_changed = e.catalog_version != catalog;
  e.state_seq = seq;
  table.set_health(e, health);
  e.catalog_version = catalog;
  if (health_changed) {
    emit(now, EventKind::kHealthChanged, slot);
  }
  if (catalog_changed) {
    emit(now, EventKind::kCatalogChanged, slot);
  }
  return true;
}

void Membership::State::refute(Instant now, std::uint64_t accused_incarnation) {
  SHOAL_ASSERT(!leaving);
  Entry& me = self();
  me.incarnation = std::max(me.incarnation, accused_incarnation) + 1;
  ++counters.refutations;
  // Lifeguard: being suspected hints that we are the slow one.
  adjust_awareness(+1);
  broadcast_alive(0);
  emit(now, EventKind::kUpdated, 0);  // The driver persists self().incarnation.
}

void Membership::State::start_suspicion(Instant now, std::uint32_t slot, const NodeId& accuser, bool stalled) {
  const std::size_t n = live_members();
  const int k = std::min<int>(config.indirect_checks, std::max<int>(0, static_cast<int>(n) - 2));
  const Duration min = suspicion_timeout_min(config, n);
  const Duration max = min * config.suspicion_max_timeout_mult;
  const NodeId id = table.at(slot).id;
  auto [it, inserted] = suspicions.insert_or_assign(id, Suspicion(now, accuser, k, min, max));
  if (stalled) {
    it->second.mark_stalled(now, config.stall_budget);
  }
}

void Membership::State::suspect_member(Instant now, std::uint32_t slot, bool stalled) {
  Entry& e = table.at(slot);
  if (e.status == MemberStatus::kAlive) {
    ++counters.suspicions;
    if (stalled) {
      ++counters.stalls;
    }
    apply_suspect(now, wire::Suspect{e.id, e.incarnation, self_id, stalled});
    return;
  }
  if (e.status != MemberStatus::kSuspect) {
    return;
  }
  auto it = suspicions.find(e.id);
  if (it == suspicions.end()) {
    start_suspicion(now, slot, self_id, stalled);
    it = suspicions.find(e.id);
  }
  bool changed = it->second.confirm(self_id);
  if (stalled && it->second.mark_stalled(now, config.stall_budget)) {
    ++counters.stalls;
    e.stalled = true;
    emit(now, EventKind::kStalled, slot);
    changed = true;
  }
  if (changed) {
    enqueue(e.id, Topic::kMembership, wire::Suspect{e.id, e.incarnation, self_id, e.stalled});
  }
}

void Membership::State::declare_dead(Instant now, std::uint32_t slot) {
  const Entry& e = table.at(slot);
  if (e.status != MemberStatus::kAlive && e.status != MemberStatus::kSuspect) {
    return;
  }
  ++counters.deaths_declared;
  apply_dead(now, wire::Dead{e.id, e.incarnation, self_id});
}

}  // namespace shoal::gossip
