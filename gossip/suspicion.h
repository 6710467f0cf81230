#pragma once
// gossip/suspicion.h: one suspicion timer per suspected member (Lifeguard).
// Owns the set of independent accusers and the current deadline; the math is
// the pure suspicion_timeout() declared in membership.h. No I/O; no clock.
//
// Why log-scaled: each independent confirmation is strong evidence, so the
// first few should shrink the timeout the most, and a single accuser (who may
// be the one with a bad network) waits the longest.
//
// A stalled suspicion (the host's kernel still accepts TCP: the process is
// paused or overloaded) ignores confirmations and lasts stall_budget.

#include <vector>

#include "base/crypto.h"
#include "base/time.h"

namespace shoal::gossip {

class Suspicion {
 public:
  // k: confirmations expected; min/max: the timeout range.
  Suspicion(Instant start, const NodeId& accuser, int k, Duration min, Duration max);

  // Records an independent accuser. Returns true when it was new (the caller
  // then re-broadcasts the suspicion so others can count it too).
  bool confirm(const NodeId& accuser);
  // From now on the member is stalled: deadline = max(current, now + budget)
  // the first time; later calls change nothing. Returns true the first time.
  bool mark_stalled(Instant now, Duration stall_budget);
  // A paused process (ours) must not count the pause against others.
  void postpone(Duration gap) { start_ += gap; deadline_ += gap; }

  bool stalled() const { return stalled_; }
  Instant deadline() const { return deadline_; }
  int confirmations() const { return static_cast<int>(accusers_.size()) - 1; }

 private:
  void recompute();

  static constexpr std::size_t kAccusersMax = 16;
  Instant start_;
  Instant deadline_;
  int k_;
  Duration min_;
  Duration max_;
  bool stalled_ = false;
  std::vector<NodeId> accusers_;  // The first is the original accuser.
};

}  // namespace shoal::gossip
