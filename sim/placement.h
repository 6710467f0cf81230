#pragma once
// sim/placement.h: the placement layer of every virtual node, driven by
// sim::World, and the checkers of invariants 1-4 and 6 of ARCHITECTURE.md.
//
// Each node runs node/core unchanged: an acceptor table of AcceptorRecords
// keyed by (project, generation) that survives crashes (its "LMDB"), fed
// through core::acceptor_step; a core::Proposer per process life (volatile,
// its counter_floor raised at every start); and the agent's repair loop
// (node/agent/project_service.cc) re-expressed over core::plan_failover,
// core::plan_primary_step and core::plan_replace_dead, with the member view
// taken from the node's own gossip core. Snapshot storage and transfer are
// modelled by size and bandwidth: a store is a set of (project, snapshot,
// epoch, bytes); a push takes bytes / bandwidth on the sender's egress plus
// the network latency, and the receiver refuses snapshots stamped with an
// epoch older than the one it accepted (fencing).
//
// Checked after every event (incrementally):
//   one-writer        no two different committed values with one version,
//                     epochs never shrink along versions, one primary per
//                     epoch, one saving node per (project, epoch);
//   no-lost-snapshot  an acknowledged save is held by a majority of the
//                     replica set (in two DCs when it spans two) when it is
//                     committed; a new primary holds last_ack;
//   no-deletion-on-doubt  a node never deletes the last copy, a copy newer
//                     than every listed replica's, or (listed itself) the
//                     acknowledged snapshot;
//   placement-convergence  every project reaches its replica count with
//                     last_ack on every live replica within the bound after
//                     the last fault;
//   linearizable      a completed register operation never returns a value
//                     older than one committed before it started, nor one
//                     that was not committed.
// Design and deviations from the agent: docs/simulation.md, "Placement".

#include <memory>

#include "sim/world.h"

namespace shoal::sim {

// The layer for `scenario` (which must have a [placement] table).
std::unique_ptr<Layer> make_placement_layer(const Scenario& scenario, std::uint64_t seed);

}  // namespace shoal::sim
