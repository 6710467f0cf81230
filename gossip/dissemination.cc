// gossip/dissemination.cc: how news spreads. Broadcasts ride piggyback on
// every datagram we send (pings, acks, ...) and on gossip rounds to
// gossip_nodes random members, each retired after retransmit_mult *
// ceil(log10(N + 1)) sends. Full state is exchanged over TCP (push-pull) on
// join, every push_pull_interval (scaled up past 32 members) with one random
// member, and every reconnect_interval with one random dead member.
//
// Design note: eager push. memberlist waits for the next gossip tick (200 ms)
// to pass news on, so each hop costs up to a tick. Here a broadcast that has
// been sent fewer than two rounds' worth of times makes the next round due
// eager_gossip_interval (20 ms) after the previous one, so fresh news crosses
// the mesh in a few network round trips; once it has had two rounds, the
// normal cadence repeats it until its retransmit limit. The total number of
// sends per broadcast is unchanged; only their timing. An idle mesh sends no
// gossip at all (nothing queued), only probes and acks.
//
// Design note: reconnecting to the dead. After a partition longer than the
// suspicion timeout each side holds the other as dead and memberlist never
// talks to it again. Contacting one random dead (not left) member's address
// per reconnect_interval with a push-pull lets the two sides find each other;
// each node that learns it was declared dead refutes with a higher
// incarnation, and the refutations spread through both sides.

#include <algorithm>
#include <cmath>

#include "gossip/state.h"

namespace shoal::gossip {

void Membership::State::enqueue(const NodeId& about, Topic topic, const wire::Message& message) {
  const bool final_verdict = std::holds_alternative<wire::Dead>(message) || std::holds_alternative<wire::Leave>(message);
  broadcasts.push(about, topic, wire::encode(message), final_verdict);
}

void Membership::State::broadcast_alive(std::uint32_t slot) {
  wire::MemberRecord r = record(slot);
  r.status = MemberStatus::kAlive;
  r.stalled = false;
  enqueue(r.id, Topic::kMembership, wire::Alive{std::move(r)});
}

void Membership::State::broadcast_state(std::uint32_t slot) {
  const Entry& e = table.at(slot);
  enqueue(e.id, Topic::kState, wire::State{e.id, e.state_seq, e.catalog_version, table.health(e)});
}

Duration Membership::State::push_pull_period() const {
  // memberlist's pushPullScale: past 32 members, slow down with log2(N).
  const std::size_t n = live_members();
  const double scale = n <= 32 ? 1.0 : std::ceil(std::log2(static_cast<double>(n)) - 5.0) + 1.0;
  return Duration(static_cast<std::int64_t>(static_cast<double>(config.push_pull_interval.count()) * scale));
}

int Membership::State::retransmits() const {
  return std::max(1, retransmit_limit(config.retransmit_mult, live_members()));
}

bool Membership::State::send(Instant now, const Address& to, std::span<const Bytes> primary) {
  (void)now;
  std::size_t used = wire::compound_overhead_bytes(wire::kCompoundPartsMax);
  for (const Bytes& b : primary) {
    used += b.size();
  }
  SHOAL_ASSERT(used <= config.datagram_bytes_max);  // Our own messages are small by construction.
  std::vector<Bytes> piggyback;
  broadcasts.take(config.datagram_bytes_max - used, 0, wire::kCompoundPartsMax - primary.size(), retransmits(),
                  piggyback);
  if (primary.empty() && piggyback.empty()) {
    return false;
  }
  std::vector<ByteView> parts;
  parts.reserve(primary.size() + piggyback.size());
  for (const Bytes& b : primary) {
    parts.emplace_back(b);
  }
  for (const Bytes& b : piggyback) {
    parts.emplace_back(b);
  }
  if (outbox.size() >= kOutboxMax) {
    outbox.pop_front();
    ++counters.outputs_dropped;
  }
  Datagram d{to, wire::compound(parts)};
  SHOAL_ASSERT(d.payload.size() <= config.datagram_bytes_max);
  counters.messages_out += parts.size();
  counters.bytes_out += d.payload.size();
  outbox.push_back(std::move(d));
  return true;
}

bool Membership::State::send_one(Instant now, const Address& to, const wire::Message& message) {
  const Bytes bytes = wire::encode(message);
  return send(now, to, std::span<const Bytes>(&bytes, 1));
}

Instant Membership::State::gossip_due() const {
  Instant due = next_gossip;
  const auto fewest = broadcasts.transmits_min();
  // live_members() counts us too, unless we left.
  if (fewest && *fewest < 2 * config.gossip_nodes && live_members() > (leaving ? 0u : 1u)) {
    due = std::min(due, last_gossip + config.eager_gossip_interval);
  }
  return due;
}

void Membership::State::tick_gossip(Instant now) {
  if (now < gossip_due()) {
    return;
  }
  if (!broadcasts.empty()) {
    gossip_round(now);
  }
  if (now >= next_gossip) {
    next_gossip = now + config.gossip_interval;
  }
}

void Membership::State::gossip_round(Instant now) {
  last_gossip = now;
  const Duration to_dead = config.gossip_to_dead;
  // Recently dead members are included so a falsely accused one hears of it.
  const std::vector<std::uint32_t> targets =
      sample(static_cast<std::size_t>(config.gossip_nodes), [&](const Entry& e) {
        return e.status == MemberStatus::kAlive || e.status == MemberStatus::kSuspect ||
               (e.status == MemberStatus::kDead && e.status_since() + to_dead > now);
      });
  for (std::uint32_t slot : targets) {
    if (!send(now, table.addr(table.at(slot)), {})) {
      break;  // Queue empty.
    }
  }
}

wire::PushPull Membership::State::full_state(bool join) const {
  wire::PushPull pp;
  pp.join = join;
  pp.members.reserve(table.size());
  for (std::uint32_t slot = 0; slot < table.size() && pp.members.size() < config.members_max; ++slot) {
    pp.members.push_back(record(slot));
  }
  return pp;
}

void Membership::State::start_push_pull(Instant now, Purpose purpose, const Address& to, const NodeId& target) {
  (void)now;
  if (pending_streams.size() >= kPendingStreamsMax) {
    ++counters.outputs_dropped;
    return;
  }
  const std::uint64_t id = next_stream_id++;
  // A reconnect usually dials a crashed node: send only our own record
  // rather than the whole table. If the other side is alive (a healed
  // partition) its full-state reply is what we need, and it learns of us.
  wire::PushPull request;
  if (purpose == Purpose::kReconnect) {
    request.members.push_back(record(0));
  } else {
    request = full_state(purpose == Purpose::kJoin);
  }
  Bytes payload = wire::encode(request);
  ++counters.push_pulls;
  ++counters.messages_out;
  counters.bytes_out += payload.size();
  streams.push_back(StreamRequest{id, StreamKind::kPushPull, to, std::move(payload)});
  pending_streams.emplace(id, PendingStream{purpose, target, to, 0});
}

void Membership::State::merge(Instant now, const wire::PushPull& remote, const Address& peer, bool initiator) {
  // Everything learned here is re-announced (memberlist does the same):
  // when many nodes join at once, the members a joiner learned from its
  // seed's reply are news to those who joined earlier, and without the
  // re-announcement the gossip about them dies out among nodes that know
  // but stay silent. A fresh node learning a large mesh is the exception:
  // one joiner of ten thousand re-announcing everyone would flood it, so it
  // relies on the early follow-up push-pull (see handle_stream_result).
  const bool fresh = table.size() == 1 && remote.members.size() > kFreshRebroadcastMax;
  const std::uint64_t incarnation_before = self().incarnation;
  for (const wire::MemberRecord& r : remote.members) {
    const std::uint32_t slot = table.find(r.id);
    switch (r.status) {
      case MemberStatus::kAlive:
        apply_alive(now, r, !fresh);
        break;
      case MemberStatus::kSuspect:
      case MemberStatus::kDead:
        // memberlist's rule: a remote verdict is only a suspicion here, so a
        // member the other side wrongly buried gets to refute it.
        if (slot == MemberTable::kNone) {
          if (r.status == MemberStatus::kSuspect) {
            wire::MemberRecord as_alive = r;
            as_alive.status = MemberStatus::kAlive;
            apply_alive(now, as_alive, !fresh);
            apply_suspect(now, wire::Suspect{r.id, r.incarnation, self_id, r.stalled});
          }
          break;
        }
        if (slot != 0 && table.at(slot).public_key == r.public_key) {
          apply_state_fields(now, slot, r.state_seq, r.catalog_version, r.health);
        }
        apply_suspect(now,
                      wire::Suspect{r.id, r.incarnation, self_id, r.status == MemberStatus::kSuspect && r.stalled});
        break;
      case MemberStatus::kLeft:
        if (slot != MemberTable::kNone) {
          apply_leave(now, wire::Leave{r.id, r.incarnation});
        }
        break;
    }
  }
  if (initiator && self().incarnation != incarnation_before) {
    // We learned we were buried; the peer only has our old record, so tell
    // it now: the refutation is the newest, least-sent broadcast, so it
    // leads the piggyback of this datagram.
    send(now, peer, {});
  }
}

void Membership::State::send_join(Instant now) {
  for (const Address& seed : join_seeds) {
    start_push_pull(now, Purpose::kJoin, seed, NodeId{});
    ++join_outstanding;
  }
}

void Membership::State::tick_streams(Instant now) {
  if (join_wanted && join_outstanding == 0 && now >= join_retry_at) {
    send_join(now);
  }
  if (leaving) {
    return;
  }
  if (now >= next_push_pull) {
    next_push_pull = now + push_pull_period();
    const auto peers = sample(1, [](const Entry& e) { return e.status == MemberStatus::kAlive; });
    if (!peers.empty()) {
      const Entry& e = table.at(peers[0]);
      start_push_pull(now, Purpose::kPushPull, table.addr(e), e.id);
    }
  }
  if (now >= next_reconnect) {
    next_reconnect = now + config.reconnect_interval;
    if (table.count(MemberStatus::kDead) > 0) {
      const auto dead = sample(1, [](const Entry& e) { return e.status == MemberStatus::kDead; });
      if (!dead.empty()) {
        const Entry& e = table.at(dead[0]);
        start_push_pull(now, Purpose::kReconnect, table.addr(e), e.id);
      }
    }
  }
}

void Membership::State::handle_stream_result(Instant now, std::uint64_t id, StreamOutcome outcome, ByteView reply) {
  auto it = pending_streams.find(id);
  if (it == pending_streams.end()) {
    return;  // Unknown or discarded after a pause.
  }
  const PendingStream pending = it->second;
  pending_streams.erase(it);
  if (pending.purpose == Purpose::kReachability) {
    on_reachability(now, pending, outcome);
    return;
  }
  bool merged = false;
  bool target_answered = false;
  if (outcome == StreamOutcome::kReplied) {
    counters.bytes_in += reply.size();
    auto remote = wire::decode_push_pull(reply, config.members_max);
    if (!remote) {
      ++counters.decode_errors;
    } else {
      ++counters.messages_in;
      target_answered = std::any_of(remote->members.begin(), remote->members.end(), [&](const wire::MemberRecord& r) {
        return r.id == pending.target && r.status == MemberStatus::kAlive;
      });
      merge(now, *remote, pending.addr, /*initiator=*/true);
      merged = true;
    }
  }
  if (pending.purpose == Purpose::kReconnect && target_answered) {
    // The "dead" member answered for itself: it is alive on the far side of
    // a healed partition, or restarted. Now the full exchange, both ways.
    // (Another node now using that address only gets the small exchange.)
    start_push_pull(now, Purpose::kPushPull, pending.addr, pending.target);
  }
  if (pending.purpose == Purpose::kJoin) {
    SHOAL_ASSERT(join_outstanding > 0);
    --join_outstanding;
    if (merged) {
      join_wanted = false;  // One seed answered: we are in.
      // A second exchange with a random member soon after closes any gap
      // left by nodes that joined at the same moment as us.
      next_push_pull = std::min(next_push_pull, now + config.gossip_interval +
                                                    random_offset(random, config.gossip_interval));
    } else if (join_wanted && join_outstanding == 0) {
      join_retry_at = now + join_backoff;
      join_backoff = std::min(join_backoff * 2, config.join_retry_max);
    }
  }
}

}  // namespace shoal::gossip
