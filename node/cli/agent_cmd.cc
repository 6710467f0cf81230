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

#include "node/agent/agent.h"
#include "node/agent/options.h"
#include "node/cli/commands.h"
#include "node/cli/flags.h"

namespace shoal::cli {
namespace {

constexpr const char* kAgentUsage = R"(usage: shoal agent --name NAME --dc DC --data-dir DIR --cluster-key-file FILE
                   [--bind HOST:PORT] [--admin HOST:PORT] [--advertise HOST:PORT]
                   [--join HOST:PORT ...] [--profile lan|wan|local] [--config FILE]
                   [--save-interval DURATION] [--rebalance-after DURATION]
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
                            log_level, save_interval, rebalance_after,
                            enable_fault_injection); flags override it
  --save-interval DURATION  how often the primary saves each running project
                            (default 5m; 30s, 1h; 0 = only on demand)
  --rebalance-after DURATION  a member alive this long takes over replicas it
                            outranks, one move per 5 s per primary (default 10m; 0 = off)
  --enable-fault-injection  allow POST /v1/debug/drop (partition tests only)
  --log-level LEVEL         trace, debug, info (default), warn, error
)";

Result<spdlog::level::level_enum> log_level(const agent::Settings& s) {
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
                     "join", "profile", "config", "log-level", "save-interval", "rebalance-after"};
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

  agent::Settings settings;
  if (auto config = flags->get("config")) {
    if (auto loaded = agent::load_config_file(*config, settings); !loaded) {
      std::fprintf(stderr, "shoal agent: %s\n", loaded.error().message.c_str());
      return 2;
    }
  }
  for (const char* key : agent::kValueKeys) {
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

  auto options = agent::build_options(settings);
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
