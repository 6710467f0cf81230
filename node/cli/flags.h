#pragma once
// node/cli/flags.h: a small strict flag parser for subcommands. Accepts
// --name VALUE and --name=VALUE, boolean switches, repeated flags and
// positionals; unknown flags are errors naming the flag.

#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "node/cli/commands.h"

namespace shoal::cli {

struct FlagSpec {
  std::set<std::string> with_value;  // e.g. {"admin", "status"}
  std::set<std::string> switches;    // e.g. {"json", "help"}
};

struct ParsedFlags {
  std::map<std::string, std::vector<std::string>> values;
  std::set<std::string> switches;
  std::vector<std::string> positionals;

  bool has(const std::string& name) const { return switches.count(name) > 0; }
  std::optional<std::string> get(const std::string& name) const;
  std::vector<std::string> all(const std::string& name) const;
};

Result<ParsedFlags> parse_flags(Args args, const FlagSpec& spec);

// The admin address: --admin, else $SHOAL_ADMIN, else 127.0.0.1:7947.
std::string admin_address(const ParsedFlags& flags);
inline constexpr const char* kDefaultAdmin = "127.0.0.1:7947";

}  // namespace shoal::cli
