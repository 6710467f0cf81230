// node/core/ranking.cc: weighted rendezvous hashing and replica selection.
#include "node/core/ranking.h"

#include <sodium.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "base/assert.h"

namespace shoal::core {
namespace {

std::uint64_t pair_hash(std::string_view project, const NodeId& node) {
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, 8);
  // Length-prefix the project so ("ab", node) and ("a", "b" + node) differ.
  const std::uint64_t length = project.size();
  crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(&length), sizeof length);
  crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(project.data()),
                            project.size());
  crypto_generichash_update(&state, node.bytes.data(), node.bytes.size());
  unsigned char out[8];
  crypto_generichash_final(&state, out, sizeof out);
  std::uint64_t value = 0;
  for (unsigned char byte : out) value = (value << 8) | byte;
  return value;
}

struct Scored {
  const Candidate* candidate;
  double score;
};

std::vector<Scored> score_all(std::string_view project, std::span<const Candidate> candidates) {
  std::vector<Scored> scored;
  scored.reserve(candidates.size());
  for (const Candidate& c : candidates) {
    scored.push_back({&c, rendezvous_score(project, c.id, c.weight)});
  }
  // Ties (equal scores) are broken by node id so every node agrees.
  std::sort(scored.begin(), scored.end(), [](const Scored& a, const Scored& b) {
    if (a.score != b.score) return a.score > b.score;
    return a.candidate->id < b.candidate->id;
  });
  return scored;
}

}  // namespace

double rendezvous_score(std::string_view project, const NodeId& node, double weight) {
  SHOAL_ASSERT(weight > 0);
  // 53 random bits mapped into the open interval (0, 1).
  const double u = (static_cast<double>(pair_hash(project, node) >> 11) + 0.5) * 0x1.0p-53;
  return -weight / std::log(u);
}

Target rank_placement(std::string_view project, std::span<const Candidate> candidates,
                      std::string_view preferred_dc, std::size_t replication_factor) {
  Target target;
  if (candidates.empty() || replication_factor == 0) return target;
  const std::vector<Scored> scored = score_all(project, candidates);

  // Best node per DC, in score order (scored is sorted, so first seen = best).
  std::vector<const Scored*> dc_best;
  std::map<std::string_view, bool> seen_dc;
  for (const Scored& s : scored) {
    if (seen_dc.emplace(s.candidate->dc, true).second) dc_best.push_back(&s);
  }
  // The preferred DC goes first when it has a candidate.
  std::stable_partition(dc_best.begin(), dc_best.end(),
                        [&](const Scored* s) { return s->candidate->dc == preferred_dc; });

  std::vector<const Candidate*> chosen;
  for (const Scored* s : dc_best) {
    if (chosen.size() == replication_factor) break;
    chosen.push_back(s->candidate);
  }
  // Fewer DCs than the factor: fill with the next-best nodes overall.
  for (const Scored& s : scored) {
    if (chosen.size() == replication_factor) break;
    if (std::find(chosen.begin(), chosen.end(), s.candidate) == chosen.end()) {
      chosen.push_back(s.candidate);
    }
  }
  for (const Candidate* c : chosen) target.replicas.push_back(c->id);
  target.primary = chosen.front()->id;  // The preferred DC's best when it has one.
  return target;
}

std::vector<NodeId> rank_in_dc(std::string_view project, std::span<const Candidate> candidates,
                               std::string_view dc) {
  std::vector<NodeId> out;
  for (const Scored& s : score_all(project, candidates)) {
    if (s.candidate->dc == dc) out.push_back(s.candidate->id);
  }
  return out;
}

}  // namespace shoal::core
