// node/core/project_plan.cc: failover and replica replacement decisions.
#include "node/core/project_plan.h"

#include <algorithm>

namespace shoal::core {
namespace {

std::vector<Candidate> live_candidates(std::span<const MemberInfo> members) {
  std::vector<Candidate> out;
  for (const MemberInfo& m : members) {
    if (m.liveness == Liveness::kAlive) out.push_back({m.id, m.dc, m.weight});
  }
  return out;
}

}  // namespace

const MemberInfo* find_member(std::span<const MemberInfo> members, const NodeId& id) {
  for (const MemberInfo& m : members) {
    if (m.id == id) return &m;
  }
  return nullptr;
}

bool confirmed_dead(std::span<const MemberInfo> members, const NodeId& id) {
  const MemberInfo* m = find_member(members, id);
  return m != nullptr && m->liveness == Liveness::kDead;
}

namespace {

// Dead, or (when the caller's view is settled) absent from it.
bool gone(std::span<const MemberInfo> members, const NodeId& id, bool absent_is_gone) {
  const MemberInfo* m = find_member(members, id);
  return m == nullptr ? absent_is_gone : m->liveness == Liveness::kDead;
}

}  // namespace

std::optional<Placement> plan_failover(const Placement& current, std::span<const MemberInfo> members,
                                       const NodeId& self, bool self_holds_last_ack, bool grace_expired,
                                       bool absent_is_gone) {
  if (!gone(members, current.primary, absent_is_gone) || !current.is_replica(self) || !self_holds_last_ack) {
    return std::nullopt;
  }
  const MemberInfo* me = find_member(members, self);
  if (me == nullptr || me->liveness != Liveness::kAlive) return std::nullopt;
  if (!grace_expired) {
    // The live replicas, ranked as the ranking would: preferred DC first.
    std::vector<Candidate> replicas;
    for (const NodeId& id : current.replicas) {
      const MemberInfo* m = find_member(members, id);
      if (m != nullptr && m->liveness == Liveness::kAlive) replicas.push_back({m->id, m->dc, m->weight});
    }
    const Target best = rank_placement(current.project, replicas, current.preferred_dc, 1);
    if (best.replicas.empty() || best.primary != self) return std::nullopt;
  }
  Placement next = current;
  next.primary = self;
  next.epoch = current.epoch + 1;
  return next;
}

std::optional<Placement> plan_replace_dead(const Placement& current, std::span<const MemberInfo> members,
                                           const NodeId& self, bool absent_is_gone) {
  if (current.primary != self) return std::nullopt;
  const std::vector<Candidate> live = live_candidates(members);
  Placement next = current;
  bool changed = false;
  for (NodeId& replica : next.replicas) {
    if (replica == self || !gone(members, replica, absent_is_gone)) continue;
    const MemberInfo* dead = find_member(members, replica);
    std::optional<NodeId> pick;
    if (dead != nullptr) {
      for (const NodeId& id : rank_in_dc(current.project, live, dead->dc)) {
        if (!next.is_replica(id)) {
          pick = id;
          break;
        }
      }
    }
    if (!pick) {
      const Target anywhere = rank_placement(current.project, live, current.preferred_dc, live.size());
      for (const NodeId& id : anywhere.replicas) {
        if (!next.is_replica(id)) {
          pick = id;
          break;
        }
      }
    }
    if (pick) {
      replica = *pick;
      changed = true;
    }
  }
  if (!changed) return std::nullopt;
  return next;
}

std::optional<Placement> plan_rebalance(const Placement& fresh, std::span<const MemberInfo> settled,
                                        std::span<const MemberInfo> members, const NodeId& self) {
  if (fresh.primary != self) return std::nullopt;
  for (const NodeId& r : fresh.replicas) {
    if (confirmed_dead(members, r)) return std::nullopt;
  }
  // Current replicas that are alive compete too, settled or not: a replica
  // that just restarted keeps its slot unless a settled node outranks it.
  std::vector<Candidate> candidates = live_candidates(settled);
  for (const NodeId& r : fresh.replicas) {
    const MemberInfo* m = find_member(members, r);
    const bool listed = std::any_of(candidates.begin(), candidates.end(), [&](const Candidate& c) { return c.id == r; });
    if (m != nullptr && m->liveness == Liveness::kAlive && !listed) candidates.push_back({m->id, m->dc, m->weight});
  }
  for (const NodeId& r : fresh.replicas) {
    if (r == self) continue;
    const MemberInfo* m = find_member(members, r);
    if (m == nullptr) continue;  // No information: leave it.
    for (const NodeId& best : rank_in_dc(fresh.project, candidates, m->dc)) {
      if (best == r) break;                  // r is still the best of its DC.
      if (fresh.is_replica(best)) continue;  // Already holds another slot.
      Placement next = fresh;
      *std::find(next.replicas.begin(), next.replicas.end(), r) = best;
      return next;
    }
  }
  return std::nullopt;
}

PrimaryPlan plan_primary_step(const Placement& fresh, std::span<const MemberInfo> members, const NodeId& self,
                              bool self_holds_last_ack, bool workdir_exists,
                              const std::function<bool(const NodeId&)>& replica_has_last_ack,
                              bool absent_is_gone) {
  PrimaryPlan plan;
  if (fresh.primary != self) return plan;
  if (auto wanted = plan_replace_dead(fresh, members, self, absent_is_gone)) {
    plan.step = PrimaryStep::kReplaceDead;
    plan.wanted = std::move(wanted);
    return plan;
  }
  if (fresh.last_ack.seq == 0 || !self_holds_last_ack) return plan;
  if (!workdir_exists) {
    plan.step = PrimaryStep::kOpenWorkdir;
    return plan;
  }
  for (const NodeId& r : fresh.replicas) {
    if (r == self || gone(members, r, absent_is_gone)) continue;
    if (!replica_has_last_ack(r)) plan.copy_to.push_back(r);
  }
  if (!plan.copy_to.empty()) plan.step = PrimaryStep::kCopySnapshot;
  return plan;
}

}  // namespace shoal::core
