// node/cli/agent_cmd.cc: `shoal agent`, which runs this machine's node. Turns
// flags and an optional TOML config file (flags win) into AgentOptions, sets up
// logging, and hands over to node/agent. Usage errors exit 2 with one line
// naming the flag; failed start-up checks exit 1 with one line saying what to fix.

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <toml++/toml.h>

#include "node/agent/agent.h"
#include "node/cli/commands.h"
#include "node/cli/flags.h"

namespace shoal::cli {
namespace {

constexpr const char* kAgentUsage = R"(usage: shoal agent --name NAME --dc DC --data-dir DIR --cluster-key-file FILE
                   [--bind HOST:PORT] [--admin HOST:PORT] [--advertise HOST:PORT]
                   [--join HOST:PORT ...] [--profile lan|wan|local] [--config FILE]
                   [--enable-fault-injection] [--log-level LEVEL]

Runs this machine's shoal node until SIGTERM/SIGINT or `shoal leave`, then
leaves the mesh gracefully and exits 0.

  --name NAME               unique name of this node in the mesh
  --dc DC                   data center this node is in
  --data-dir DIR            durable state (identity, keyring, members); created mode 0700
  --cluster-key-file FILE   base64 cluster key from `shoal keygen`; must be mode 0600
  --bind HOST:PORT          UDP and TCP gossip address (default 127.0.0.1:7946; IPv6 as [::1]:7946)
  --advertise HOST:PORT     address peers use to reach this node (default: --bind;
                            required when --bind is 0.0.0.0 or [::])
  --admin HOST:PORT         admin HTTP API (default 127.0.0.1:7947)
  --join HOST:PORT          seed to join; repeatable. Without it a restarted agent
                            rejoins the members it saw last
  --profile lan|wan|local   gossip timing (default lan, memberlist's LAN defaults)
  --config FILE             TOML file with the same keys (name, dc, data_dir, bind,
                            admin, cluster_key_file, advertise, join = [...], profile,
                            log_level, enable_fault_injection); flags override it
  --enable-fault-injection  allow POST /v1/debug/drop (partition tests only)
  --log-level LEVEL         trace, debug, info (default), warn, error
)";

struct UsageError {
  std::string message;
};

// Settings as text, from the config file first and then the flags.
struct Settings {
  std::map<std::string, std::string> values;
  std::vector<std::string> join;
  bool fault_injection = false;
};

const char* const kValueKeys[] = {"name", "dc", "data_dir", "bind", "admin", "cluster_key_file", "advertise",
                                  "profile", "log_level"};

Result<void> load_config_file(const std::string& path, Settings& settings) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return make_error(Code::kInvalidArgument, "--config " + path + ": " + std::string(e.description()) + " (line " +
                                                  std::to_string(e.source().begin.line) + ")");
  }
  for (const auto& [key, node] : table) {
    const std::string k(key.str());
    bool known = false;
    for (const char* v : kValueKeys) {
      if (k == v) {
        known = true;
        auto text = node.value<std::string>();
        if (!text) {
          return make_error(Code::kInvalidArgument, "--config " + path + ": \"" + k + "\" must be a string");
        }
        settings.values[k] = *text;
      }
    }
    if (k == "join") {
      known = true;
      const toml::array* list = node.as_array();
      if (list == nullptr) {
        return make_error(Code::kInvalidArgument, "--config " + path + ": \"join\" must be an array of strings");
      }
      for (const auto& item : *list) {
        auto text = item.value<std::string>();
        if (!text) {
          return make_error(Code::kInvalidArgument, "--config " + path + ": \"join\" must hold strings");
        }
        settings.join.push_back(*text);
      }
    } else if (k == "enable_fault_injection") {
      known = true;
      auto flag = node.value<bool>();
      if (!flag) {
        return make_error(Code::kInvalidArgument, "--config " + path + ": \"enable_fault_injection\" must be a boolean");
      }
      settings.fault_injection = *flag;
    }
    if (!known) {
      return make_error(Code::kInvalidArgument, "--config " + path + ": unknown key \"" + k + "\"");
    }
  }
  return {};
}

Result<Address> address_setting(const Settings& s, const std::string& key, const std::string& flag) {
  auto addr = parse_address(s.values.at(key));
  if (!addr) {
    return make_error(Code::kInvalidArgument, "--" + flag + " " + s.values.at(key) + ": " + addr.error().message +
                                                  "; give HOST:PORT (IPv6 as [ADDR]:PORT)");
  }
  return *addr;
}

Result<agent::AgentOptions> build_options(const Settings& s) {
  agent::AgentOptions o;
  const struct {
    const char* key;
    const char* flag;
    std::string* out;
  } required[] = {{"name", "name", &o.name},
                  {"dc", "dc", &o.dc},
                  {"data_dir", "data-dir", &o.data_dir},
                  {"cluster_key_file", "cluster-key-file", &o.cluster_key_file}};
  for (const auto& r : required) {
    auto it = s.values.find(r.key);
    if (it == s.values.end() || it->second.empty()) {
      return make_error(Code::kInvalidArgument, std::string("--") + r.flag + " is required (see --help)");
    }
    *r.out = it->second;
  }
  if (s.values.count("bind")) {
    auto a = address_setting(s, "bind", "bind");
    if (!a) return std::unexpected(a.error());
    o.bind = *a;
  }
  if (s.values.count("admin")) {
    auto a = address_setting(s, "admin", "admin");
    if (!a) return std::unexpected(a.error());
    o.admin = *a;
  }
  if (s.values.count("advertise")) {
    auto a = address_setting(s, "advertise", "advertise");
    if (!a) return std::unexpected(a.error());
    o.advertise = *a;
  }
  for (const auto& j : s.join) {
    auto a = parse_address(j);
    if (!a) {
      return make_error(Code::kInvalidArgument, "--join " + j + ": " + a.error().message);
    }
    o.join.push_back(*a);
  }
  if (auto it = s.values.find("profile"); it != s.values.end()) {
    auto p = gossip::parse_profile(it->second);
    if (!p) {
      return make_error(Code::kInvalidArgument, "--profile " + it->second + ": use lan, wan or local");
    }
    o.profile = *p;
  }
  o.fault_injection = s.fault_injection;
  return o;
}

Result<spdlog::level::level_enum> log_level(const Settings& s) {
  auto it = s.values.find("log_level");
  const std::string name = it == s.values.end() ? "info" : it->second;
  const std::pair<const char*, spdlog::level::level_enum> levels[] = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug}, {"info", spdlog::level::info},
      {"warn", spdlog::level::warn},   {"warning", spdlog::level::warn}, {"error", spdlog::level::err},
      {"off", spdlog::level::off}};
  for (const auto& [text, level] : levels) {
    if (name == text) {
      return level;
    }
  }
  return make_error(Code::kInvalidArgument, "--log-level " + name + ": use trace, debug, info, warn or error");
}

}  // namespace

int cmd_agent(Args args) {
  FlagSpec spec;
  spec.with_value = {"name", "dc", "data-dir", "bind", "admin", "cluster-key-file", "advertise",
                     "join", "profile", "config", "log-level"};
  spec.switches = {"enable-fault-injection"};
  auto flags = parse_flags(args, spec);
  if (!flags) {
    std::fprintf(stderr, "shoal agent: %s\n", flags.error().message.c_str());
    return 2;
  }
  if (flags->has("help")) {
    std::fputs(kAgentUsage, stdout);
    return 0;
  }
  if (!flags->positionals.empty()) {
    std::fprintf(stderr, "shoal agent: unexpected argument '%s' (see --help)\n", flags->positionals[0].c_str());
    return 2;
  }

  Settings settings;
  if (auto config = flags->get("config")) {
    if (auto loaded = load_config_file(*config, settings); !loaded) {
      std::fprintf(stderr, "shoal agent: %s\n", loaded.error().message.c_str());
      return 2;
    }
  }
  for (const char* key : kValueKeys) {
    std::string flag(key);
    std::replace(flag.begin(), flag.end(), '_', '-');
    if (auto v = flags->get(flag)) {
      settings.values[key] = *v;
    }
  }
  if (auto joins = flags->all("join"); !joins.empty()) {
    settings.join = joins;
  }
  if (flags->has("enable-fault-injection")) {
    settings.fault_injection = true;
  }

  auto options = build_options(settings);
  if (!options) {
    std::fprintf(stderr, "shoal agent: %s\n", options.error().message.c_str());
    return 2;
  }
  auto level = log_level(settings);
  if (!level) {
    std::fprintf(stderr, "shoal agent: %s\n", level.error().message.c_str());
    return 2;
  }
  auto logger = spdlog::stderr_logger_st("shoal");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  logger->set_level(*level);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);

  auto agent = agent::Agent::start(*options);
  if (!agent) {
    std::fprintf(stderr, "shoal agent: %s\n", agent.error().message.c_str());
    return 1;
  }
  return (*agent)->run();
}

}  // namespace shoal::cli
