#pragma once
// sim/invariants.h: the membership invariants of ARCHITECTURE.md ("Detection",
// "Convergence") as Checker objects for sim::World. Each is incremental: it
// reacts to faults and view changes and asks the world to wake it at its
// deadlines, so checking "after every event" costs O(1) per event.
//
// - detection: a crashed node is dead (or unknown) to every live node that
//   was running throughout, within Bounds::detection.
// - false-positive: a node that is alive and reachable is never declared
//   dead. Declarations made under injected pause, loss, bandwidth limits or
//   a recent partition are counted as excused false positives, not violations.
// - convergence: after bootstrap, a join wave, a restart, a heal or a DC's
//   return, every live node agrees with the truth within Bounds::convergence
//   (unless another fault overlapped the window, which is reported instead).

#include <memory>
#include <vector>

#include "sim/world.h"

namespace shoal::sim {

std::vector<std::unique_ptr<Checker>> make_membership_checkers();

}  // namespace shoal::sim
