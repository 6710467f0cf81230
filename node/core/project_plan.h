#pragma once
// node/core/project_plan.h: what a node should ask the register to become
// when members die: a new primary (failover) or a replacement replica. Pure
// functions over a placement and a member view; the agent and the simulator
// run them and submit the result as a compare-and-set change.

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "node/core/placement.h"
#include "node/core/ranking.h"

namespace shoal::core {

enum class Liveness : std::uint8_t {
  kAlive,    // Alive or suspected: not a reason to move anything.
  kDead,     // Confirmed dead, or left.
};

struct MemberInfo {
  NodeId id;
  std::string dc;
  Liveness liveness = Liveness::kAlive;
  double weight = 1.0;
};

// Missing information never moves anything: a node absent from the view is
// neither dead nor a candidate.
const MemberInfo* find_member(std::span<const MemberInfo> members, const NodeId& id);
bool confirmed_dead(std::span<const MemberInfo> members, const NodeId& id);

// The failover `self` should propose, or nullopt. Only when the primary is
// confirmed dead, self is a live replica that holds the last acknowledged
// snapshot, and either self is the best-ranked such replica (preferred DC
// first) or `grace_expired` (the better-ranked ones did not act in time).
// The result has primary = self and epoch + 1; replicas are unchanged.
// absent_is_gone: as for plan_replace_dead (a primary that died before this
// node rejoined is absent from its view, never dead).
std::optional<Placement> plan_failover(const Placement& current, std::span<const MemberInfo> members,
                                       const NodeId& self, bool self_holds_last_ack, bool grace_expired,
                                       bool absent_is_gone = false);

// For the primary: replace every confirmed-dead replica by the best-ranked
// live node of the same DC not yet a replica (else the best-ranked live node
// anywhere). nullopt when nothing is dead or no replacement exists.
//
// absent_is_gone: the caller's view is settled (it has been complete for a
// full push-pull round, so a live member would be in it). A listed replica
// absent from it then died or left before this node learned the mesh (gossip
// ignores dead records of members it never knew, so a node that restarts
// after a replica died never hears of it): it is replaced like a dead one,
// by the best-ranked live node anywhere (its DC is unknown). Default: a
// missing member moves nothing.
std::optional<Placement> plan_replace_dead(const Placement& current, std::span<const MemberInfo> members,
                                           const NodeId& self, bool absent_is_gone = false);

// For the primary: when a better-ranked node of some replica's data center
// has joined (and settled: the caller passes only members alive long enough),
// move that replica there, one replica per call. Never the primary's own
// slot, never while any replica is dead (replacement comes first), and
// never to a node that is already a replica.
std::optional<Placement> plan_rebalance(const Placement& fresh, std::span<const MemberInfo> settled,
                                        std::span<const MemberInfo> members, const NodeId& self);

// What a primary does next for one project, given a fresh read of its
// register: one step per call, in this order of priority.
enum class PrimaryStep : std::uint8_t {
  kNothing,
  kReplaceDead,   // Submit `wanted` (plan_replace_dead) as a compare-and-set.
  kOpenWorkdir,   // Restore last_ack into the working directory.
  kCopySnapshot,  // Push last_ack to `copy_to`.
};
struct PrimaryPlan {
  PrimaryStep step = PrimaryStep::kNothing;
  std::optional<Placement> wanted;
  std::vector<NodeId> copy_to;
};
// replica_has_last_ack(r): whether r is known to hold last_ack (unknown =
// false; copying is idempotent and cheap when it does).
// absent_is_gone: as for plan_replace_dead.
PrimaryPlan plan_primary_step(const Placement& fresh, std::span<const MemberInfo> members, const NodeId& self,
                              bool self_holds_last_ack, bool workdir_exists,
                              const std::function<bool(const NodeId&)>& replica_has_last_ack,
                              bool absent_is_gone = false);

}  // namespace shoal::core
