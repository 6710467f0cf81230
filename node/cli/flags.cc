#include "node/cli/flags.h"

#include <cstdlib>

namespace shoal::cli {

std::optional<std::string> ParsedFlags::get(const std::string& name) const {
  auto it = values.find(name);
  if (it == values.end() || it->second.empty()) {
    return std::nullopt;
  }
  return it->second.back();
}

std::vector<std::string> ParsedFlags::all(const std::string& name) const {
  auto it = values.find(name);
  return it == values.end() ? std::vector<std::string>{} : it->second;
}

Result<ParsedFlags> parse_flags(Args args, const FlagSpec& spec) {
  ParsedFlags out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    if (arg == "--") {
      for (++i; i < args.size(); ++i) {
        out.positionals.emplace_back(args[i]);
      }
      break;
    }
    if (!arg.starts_with("--") || arg.size() == 2) {
      if (arg == "-h") {
        out.switches.insert("help");
        continue;
      }
      out.positionals.emplace_back(arg);
      continue;
    }
    std::string name(arg.substr(2));
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name.resize(eq);
    }
    if (spec.switches.count(name) > 0 || name == "help") {
      if (inline_value) {
        return make_error(Code::kInvalidArgument, "flag --" + name + " takes no value");
      }
      out.switches.insert(name);
    } else if (spec.with_value.count(name) > 0) {
      if (!inline_value) {
        if (i + 1 >= args.size()) {
          return make_error(Code::kInvalidArgument, "flag --" + name + " needs a value");
        }
        inline_value = std::string(args[++i]);
      }
      out.values[name].push_back(*inline_value);
    } else {
      return make_error(Code::kInvalidArgument, "unknown flag --" + name + " (see --help)");
    }
  }
  return out;
}

std::string admin_address(const ParsedFlags& flags) {
  if (auto a = flags.get("admin")) {
    return *a;
  }
  if (const char* env = std::getenv("SHOAL_ADMIN"); env != nullptr && *env != '\0') {
    return env;
  }
  return kDefaultAdmin;
}

}  // namespace shoal::cli
