#pragma once
// node/agent/health.h: samples this machine's health record for gossip
// (load average, free disk of the data directory, software version). Reads
// the OS; call at a bounded rate (kHealthInterval) from the loop thread.

#include <string>

#include "gossip/types.h"

namespace shoal::agent {

// Fields the OS cannot provide are left at zero rather than failing.
gossip::Health sample_health(const std::string& data_dir, int local_health, std::uint32_t projects_hosted);

}  // namespace shoal::agent
