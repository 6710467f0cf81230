// node/cli/client_cmd.cc: commands that talk to a running agent over its
// admin API: members, join, leave, watch, keys. Exit codes: 0 success,
// 1 the agent refused the request, 2 usage error or agent unreachable.

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "node/cli/admin_client.h"
#include "node/cli/commands.h"
#include "node/cli/flags.h"
#include "node/cli/output.h"

namespace shoal::cli {
namespace {

using nlohmann::json;

constexpr const char* kAdminHelp =
    "  --admin HOST:PORT   the agent's admin API (default $SHOAL_ADMIN or 127.0.0.1:7947)\n";

int usage_error(const Error& e, const char* usage) {
  std::fprintf(stderr, "shoal: %s\n%s", e.message.c_str(), usage);
  return 2;
}

std::optional<json> call(AdminClient& client, std::string_view method, std::string_view path, const json& body,
                         int& exit_code) {
  return call_agent(client, method, path, body.is_null() ? std::string() : body.dump(), exit_code);
}

std::string member_status(const json& m) {
  std::string s = json_str(m, "status");
  if (json_bool(m, "stalled")) {
    s += " (stalled)";
  }
  return s;
}

}  // namespace

int cmd_members(Args args) {
  static const char* usage =
      "usage: shoal members [--json] [--status alive|suspect|dead|left] [--admin HOST:PORT]\n"
      "  Lists the members this agent knows, with their status and health.\n"
      "  --json              print a JSON array (name, id, dc, addr, status, stalled, incarnation, health, ...)\n"
      "  --status S          only members with this status\n";
  auto flags = parse_flags(args, {{"admin", "status"}, {"json"}});
  if (!flags) return usage_error(flags.error(), usage);
  if (flags->has("help")) return std::printf("%s%s", usage, kAdminHelp), 0;
  if (!flags->positionals.empty()) return usage_error({Code::kInvalidArgument, "unexpected argument"}, usage);
  std::string path = "/v1/members";
  if (auto status = flags->get("status")) {
    if (*status != "alive" && *status != "suspect" && *status != "dead" && *status != "left") {
      return usage_error({Code::kInvalidArgument, "--status must be alive, suspect, dead or left"}, usage);
    }
    path += "?status=" + *status;
  }
  AdminClient client(admin_address(*flags));
  int rc = 0;
  auto members = call(client, "GET", path, nullptr, rc);
  if (!members) return rc;
  if (!members->is_array()) {
    std::fprintf(stderr, "shoal: the agent's member list is not a JSON array\n");
    return 2;
  }
  if (flags->has("json")) {
    std::printf("%s\n", members->dump(2).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "ADDRESS", "DC", "STATUS", "INCARNATION", "ID", "LOAD", "DISK FREE", "VERSION"}};
  for (const auto& m : *members) {
    const json health = m.is_object() && m.contains("health") ? m["health"] : json::object();
    char load[32];
    std::snprintf(load, sizeof load, "%.2f", json_f64(health, "load"));
    rows.push_back({json_str(m, "name"), json_str(m, "addr"), json_str(m, "dc"), member_status(m),
                    std::to_string(json_u64(m, "incarnation")), json_str(m, "id").substr(0, 8), load,
                    human_bytes(json_f64(health, "free_disk_bytes")), json_str(health, "version")});
  }
  print_table(rows);
  return 0;
}

int cmd_join(Args args) {
  static const char* usage =
      "usage: shoal join HOST:PORT... [--admin HOST:PORT]\n"
      "  Asks the local agent to join the mesh through the given members.\n";
  auto flags = parse_flags(args, {{"admin"}, {}});
  if (!flags) return usage_error(flags.error(), usage);
  if (flags->has("help")) return std::printf("%s%s", usage, kAdminHelp), 0;
  if (flags->positionals.empty()) return usage_error({Code::kInvalidArgument, "give at least one HOST:PORT"}, usage);
  for (const auto& a : flags->positionals) {
    if (auto parsed = parse_address(a); !parsed) return usage_error(parsed.error(), usage);
  }
  AdminClient client(admin_address(*flags));
  int rc = 0;
  auto reply = call(client, "POST", "/v1/join", json{{"addrs", flags->positionals}}, rc);
  if (!reply) return rc;
  std::printf("join: contacting %d member(s)\n", static_cast<int>(json_u64(*reply, "contacted")));
  return 0;
}

int cmd_leave(Args args) {
  static const char* usage =
      "usage: shoal leave [--admin HOST:PORT]\n"
      "  Makes the local agent leave the mesh gracefully and exit.\n";
  auto flags = parse_flags(args, {{"admin"}, {}});
  if (!flags) return usage_error(flags.error(), usage);
  if (flags->has("help")) return std::printf("%s%s", usage, kAdminHelp), 0;
  AdminClient client(admin_address(*flags));
  int rc = 0;
  if (!call(client, "POST", "/v1/leave", json::object(), rc)) return rc;
  std::printf("leave: the agent is leaving the mesh\n");
  return 0;
}

std::string transfer_event_summary(const json& event);  // replicate_cmd.cc

int cmd_watch(Args args) {
  static const char* usage =
      "usage: shoal watch [--json] [--admin HOST:PORT]\n"
      "  Streams membership events (joined, suspect, stalled, alive, dead, left, health, catalog)\n"
      "  transfer events (transfer_started, _progress, _retrying, _completed, _failed)\n"
      "  and project events (placement: created, saved, failover, replica-replaced, moved, ...;\n"
      "  copy-collected)\n"
      "  until interrupted. --json prints one JSON object per line.\n";
  auto flags = parse_flags(args, {{"admin"}, {"json"}});
  if (!flags) return usage_error(flags.error(), usage);
  if (flags->has("help")) return std::printf("%s%s", usage, kAdminHelp), 0;
  const bool as_json = flags->has("json");
  AdminClient client(admin_address(*flags));
  auto status = client.stream_lines("/v1/events", [&](std::string_view line) {
    if (as_json) {
      std::printf("%.*s\n", static_cast<int>(line.size()), line.data());
    } else {
      json e = json::parse(line, nullptr, false);
      if (e.is_discarded()) return true;
      if (e.contains("transfer")) {  // Transfer events: docs/admin-api.md.
        std::printf("%s  %s\n", json_str(e, "time").c_str(), transfer_event_summary(e).c_str());
        std::fflush(stdout);
        return true;
      }
      if (e.contains("placement")) {  // Project placement changes: docs/projects-api.md.
        const json& p = e["placement"];
        std::string replicas;
        if (p.contains("replicas") && p["replicas"].is_array()) {
          for (const auto& r : p["replicas"]) replicas += (replicas.empty() ? "" : ",") + r.get<std::string>();
        }
        std::printf("%s  %-8s %s %s: epoch %llu, primary %s, replicas %s, state %s, acked #%llu\n",
                    json_str(e, "time").c_str(), "project", json_str(p, "project").c_str(), json_str(e, "why").c_str(),
                    static_cast<unsigned long long>(json_u64(p, "epoch")), json_str(p, "primary").c_str(),
                    replicas.c_str(), json_str(p, "state").c_str(),
                    static_cast<unsigned long long>(p.contains("last_ack") ? json_u64(p["last_ack"], "seq") : 0));
        std::fflush(stdout);
        return true;
      }
      if (json_str(e, "event") == "copy-collected") {
        std::printf("%s  %-8s %s: this node's obsolete copy collected (%llu snapshots)\n", json_str(e, "time").c_str(),
                    "project", json_str(e, "project").c_str(), static_cast<unsigned long long>(json_u64(e, "snapshots")));
        std::fflush(stdout);
        return true;
      }
      const json m = e.contains("member") ? e["member"] : json::object();
      std::printf("%s  %-8s %s (%s, %s) %s incarnation %llu\n", json_str(e, "time").c_str(),
                  json_str(e, "event").c_str(), json_str(m, "name").c_str(), json_str(m, "dc").c_str(),
                  json_str(m, "addr").c_str(), member_status(m).c_str(),
                  static_cast<unsigned long long>(json_u64(m, "incarnation")));
    }
    std::fflush(stdout);
    return true;
  });
  if (!status) return report_client_error(status.error());
  return 0;
}

int cmd_keys(Args args) {
  static const char* usage =
      "usage: shoal keys list [--json] | install KEY | use KEY | remove KEY [--admin HOST:PORT]\n"
      "  Manages the agent's cluster keyring, for rotation without downtime:\n"
      "  install the new key on every agent, `use` it on every agent, then remove the old one.\n";
  auto flags = parse_flags(args, {{"admin"}, {"json"}});
  if (!flags) return usage_error(flags.error(), usage);
  if (flags->has("help")) return std::printf("%s%s", usage, kAdminHelp), 0;
  if (flags->positionals.empty()) return usage_error({Code::kInvalidArgument, "missing verb"}, usage);
  const std::string verb = flags->positionals[0];
  AdminClient client(admin_address(*flags));
  int rc = 0;
  if (verb == "list") {
    auto reply = call(client, "GET", "/v1/keys", nullptr, rc);
    if (!reply) return rc;
    if (flags->has("json")) {
      std::printf("%s\n", reply->dump(2).c_str());
      return 0;
    }
    std::vector<std::vector<std::string>> rows = {{"KEY", "FINGERPRINT", "PRIMARY"}};
    if (reply->contains("keys") && (*reply)["keys"].is_array()) {
      for (const auto& k : (*reply)["keys"]) {
        const bool primary = json_bool(k, "primary");
        rows.push_back({json_str(k, "key"), json_str(k, "fingerprint"), primary ? "yes" : ""});
      }
    }
    print_table(rows);
    return 0;
  }
  if (verb == "install" || verb == "use" || verb == "remove") {
    if (flags->positionals.size() != 2) return usage_error({Code::kInvalidArgument, verb + " needs one KEY"}, usage);
    if (!call(client, "POST", "/v1/keys/" + verb, json{{"key", flags->positionals[1]}}, rc)) return rc;
    std::printf("keys: %s done\n", verb.c_str());
    return 0;
  }
  return usage_error({Code::kInvalidArgument, "unknown verb '" + verb + "'"}, usage);
}

}  // namespace shoal::cli
