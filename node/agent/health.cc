#include "node/agent/health.h"

#include <sys/statvfs.h>

#include <cmath>
#include <cstdlib>

#include "node/version.h"

namespace shoal::agent {

gossip::Health sample_health(const std::string& data_dir, int local_health, std::uint32_t projects_hosted) {
  gossip::Health health;
  double load[1] = {0.0};
  if (getloadavg(load, 1) == 1 && load[0] >= 0.0 && load[0] < 1e6) {
    health.load_milli = static_cast<std::uint32_t>(std::lround(load[0] * 1000.0));
  }
  struct statvfs fs {};
  if (::statvfs(data_dir.c_str(), &fs) == 0) {
    health.free_disk_bytes = static_cast<std::uint64_t>(fs.f_bavail) * static_cast<std::uint64_t>(fs.f_frsize);
  }
  health.local_health = local_health < 0 ? 0u : static_cast<std::uint32_t>(local_health);
  health.projects_hosted = projects_hosted;
  health.version = kVersion;
  return health;
}

}  // namespace shoal::agent
