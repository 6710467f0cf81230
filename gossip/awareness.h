#pragma once
// gossip/awareness.h: Lifeguard's local health multiplier. A node that misses
// acks or nacks is probably the slow one, so it raises its own score and
// stretches its probe interval and timeout instead of accusing others.
// Score is in [0, max - 1]; timeouts are scaled by score + 1. No I/O.

#include <algorithm>

#include "base/assert.h"
#include "base/time.h"

namespace shoal::gossip {

class Awareness {
 public:
  explicit Awareness(int max) : max_(max) { SHOAL_ASSERT(max >= 1); }

  void apply(int delta) { score_ = std::clamp(score_ + delta, 0, max_ - 1); }
  int score() const { return score_; }
  Duration scale(Duration timeout) const { return timeout * (score_ + 1); }

 private:
  int max_;
  int score_ = 0;
};

}  // namespace shoal::gossip
