#include "gossip/suspicion.h"

#include <algorithm>
#include <cmath>

#include "base/assert.h"
#include "gossip/membership.h"

namespace shoal::gossip {

Duration suspicion_timeout(int confirmations, int k, Duration min, Duration max) {
  SHOAL_ASSERT(min.count() >= 0);
  SHOAL_ASSERT(min <= max);
  if (k < 1) {
    return min;
  }
  const double n = std::max(0, confirmations);
  const double fraction = std::log(n + 1.0) / std::log(static_cast<double>(k) + 1.0);
  const double raw = static_cast<double>(max.count()) - fraction * static_cast<double>((max - min).count());
  // Rounded to whole milliseconds, as memberlist does, so tables read cleanly.
  const auto rounded = static_cast<std::int64_t>(std::floor(raw / 1000.0)) * 1000;
  return std::max(min, Duration(rounded));
}

Duration suspicion_timeout_min(const Config& config, std::size_t members) {
  const double node_scale = std::max(1.0, std::log10(std::max<double>(1.0, static_cast<double>(members))));
  const auto scale_milli = static_cast<std::int64_t>(node_scale * 1000.0);
  return Duration(config.suspicion_mult * scale_milli * config.probe_interval.count() / 1000);
}

int retransmit_limit(int retransmit_mult, std::size_t members) {
  SHOAL_ASSERT(retransmit_mult >= 0);
  const double scale = std::ceil(std::log10(static_cast<double>(members) + 1.0));
  return retransmit_mult * static_cast<int>(scale);
}

Suspicion::Suspicion(Instant start, const NodeId& accuser, int k, Duration min, Duration max)
    : start_(start), deadline_(start + max), k_(k), min_(min), max_(max), accusers_{accuser} {
  SHOAL_ASSERT(min <= max);
  recompute();
}

bool Suspicion::confirm(const NodeId& accuser) {
  if (stalled_ || confirmations() >= k_ || accusers_.size() >= kAccusersMax) {
    return false;
  }
  if (std::find(accusers_.begin(), accusers_.end(), accuser) != accusers_.end()) {
    return false;
  }
  accusers_.push_back(accuser);
  recompute();
  return true;
}

bool Suspicion::mark_stalled(Instant now, Duration stall_budget) {
  if (stalled_) {
    return false;  // The budget runs from the first sign of the stall, not the latest.
  }
  stalled_ = true;
  deadline_ = std::max(deadline_, now + stall_budget);
  return true;
}

void Suspicion::recompute() {
  if (stalled_) {
    return;
  }
  deadline_ = start_ + suspicion_timeout(confirmations(), k_, min_, max_);
}

}  // namespace shoal::gossip
