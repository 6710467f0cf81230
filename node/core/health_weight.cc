#include "node/core/health_weight.h"

namespace shoal::core {

bool is_degraded(const HealthSignals& health) {
  if (health.stalled) return true;
  if (!health.reported) return false;  // No information moves nothing.
  return health.free_disk_bytes < kLowFreeDiskBytes || health.local_health >= kDegradedLocalHealth;
}

double health_weight(const HealthSignals& health) { return is_degraded(health) ? kDegradedWeight : 1.0; }

}  // namespace shoal::core
