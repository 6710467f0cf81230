#pragma once
// node/agent/options.h: how `shoal agent` settings become AgentOptions. Owns
// the TOML config file format (same keys as the flags, with underscores) and
// the validation of every setting, each failure naming the flag to fix. Flags
// are applied over the file by the caller. No I/O beyond reading the file.

#include <map>
#include <string>
#include <vector>

#include "base/result.h"
#include "node/agent/agent.h"

namespace shoal::agent {

// Settings as text, from the config file first and then the flags.
struct Settings {
  std::map<std::string, std::string> values;
  std::vector<std::string> join;
  bool fault_injection = false;
};

// Keys holding one string, in the file and (with '-' for '_') as flags.
inline constexpr const char* kValueKeys[] = {"name",      "dc",        "data_dir", "bind",     "admin",
                                             "cluster_key_file", "advertise", "profile",  "log_level",
                                             "save_interval", "rebalance_after"};

// Reads a TOML config file into settings. InvalidArgument naming the file and
// the line for syntax errors, unknown keys and wrongly typed values.
Status load_config_file(const std::string& path, Settings& settings);

// Validates settings: name, dc, data_dir and cluster_key_file are required;
// addresses need a port; profile is lan, wan or local.
Result<AgentOptions> build_options(const Settings& settings);

}  // namespace shoal::agent
