#pragma once
// node/core/ranking.h: where a project should live. Pure functions: weighted
// rendezvous (highest random weight) scores of (project, node), one replica per
// data center up to the replication factor, the primary in the preferred DC.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/crypto.h"

namespace shoal::core {

// A node that may hold replicas: alive and healthy in the caller's view.
// weight is capacity times health (> 0); a node of weight 2 wins twice as
// many projects as one of weight 1.
struct Candidate {
  NodeId id;
  std::string dc;
  double weight = 1.0;
};

struct Target {
  NodeId primary;
  std::vector<NodeId> replicas;  // Best first; contains primary. Empty if no candidates.
};

// Weighted rendezvous score (Resch's logarithmic method): -weight / ln(u) with
// u in (0, 1) drawn from BLAKE2b(project, node). Deterministic on every node.
double rendezvous_score(std::string_view project, const NodeId& node, double weight);

// The target replica set: the best node of each data center, data centers
// ordered by their best node's score with the preferred one first, up to
// replication_factor; when there are fewer data centers than that, the
// remaining slots go to the next-best nodes overall (spread across nodes).
// The primary is the best replica in the preferred DC, else the best replica.
// A join or a failure changes the target only of projects that ranked that node.
Target rank_placement(std::string_view project, std::span<const Candidate> candidates,
                      std::string_view preferred_dc, std::size_t replication_factor);

// All candidates of one data center, best first: where a lost replica of that
// DC is re-made (the first one not already holding the project).
std::vector<NodeId> rank_in_dc(std::string_view project, std::span<const Candidate> candidates,
                               std::string_view dc);

}  // namespace shoal::core
