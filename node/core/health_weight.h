#pragma once
// node/core/health_weight.h: how strongly a member draws replicas, from what it
// gossips about itself. Pure. A degraded member (disk nearly full, Lifeguard
// health poor, or stalled) keeps a tiny ranking weight: it is the last choice
// for new replicas, and rate-limited rebalancing moves its slots elsewhere.

#include <cstdint>

namespace shoal::core {

struct HealthSignals {
  bool reported = false;             // Has gossiped a health record at all.
  std::uint64_t free_disk_bytes = 0;
  std::uint32_t local_health = 0;    // Lifeguard awareness score; 0 is healthy.
  bool stalled = false;              // Suspect, but its host still accepts TCP.
};

// Below this much free space in the data directory a node stops drawing
// replicas: one more project could fill it, and a full disk fails saves.
inline constexpr std::uint64_t kLowFreeDiskBytes = std::uint64_t{1} << 30;
// Half of Lifeguard's cap (8): the node's own probes keep failing, so its
// view, its links or its scheduler are in trouble.
inline constexpr std::uint32_t kDegradedLocalHealth = 4;
// Not zero: with every member degraded, ranking still works.
inline constexpr double kDegradedWeight = 0.01;

bool is_degraded(const HealthSignals& health);
// 1 for a healthy member (or one that has not reported), kDegradedWeight otherwise.
double health_weight(const HealthSignals& health);

}  // namespace shoal::core
