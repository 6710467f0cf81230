// node/cli/client_cmd.cc: commands that talk to a running agent over its
// admin API: members, join, leave, watch, keys. Exit codes: 0 success,
// 1 the agent refused the request, 2 usage error or agent unreachable.

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "node/cli/admin_client.h"
#include "node/cli/commands.h"
#include "node/cli/flags.h"

namespace shoal::cli {
namespace {

using nlohmann::json;

constexpr const char* kAdminHelp =
    "  --admin HOST:PORT   the agent's admin API (default $SHOAL_ADMIN or 127.0.0.1:7947)\n";

int usage_error(const Error& e, const char* usage) {
  std::fprintf(stderr, "shoal: %s\n%s", e.message.c_str(), usage);
  return 2;
}

// Runs one request; on success returns the parsed JSON body, else prints the
// reason and sets exit_code.
std::optional<json> call(AdminClient& client, std::string_view method, std::string_view path, const json& body,
                         int& exit_code) {
  auto response = client.request(method, path, body.is_null() ? std::string() : body.dump());
  if (!response) {
    exit_code = report_client_error(response.error());
    return std::nullopt;
  }
  json parsed = json::parse(response->body, nullptr, /*allow_exceptions=*/false);
  if (response->status < 200 || response->status >= 300) {
    std::string reason = parsed.is_object() && parsed.contains("error") && parsed["error"].is_string()
                             ? parsed["error"].get<std::string>()
                             : response->body;
    std::fprintf(stderr, "shoal: the agent refused: %s (HTTP %d)\n", reason.c_str(), response->status);
    exit_code = 1;
    return std::nullopt;
  }
  if (parsed.is_discarded()) {
    std::fprintf(stderr, "shoal: the agent sent a reply that is not JSON\n");
    exit_code = 2;
    return std::nullopt;
  }
  return parsed;
}

std::string str_field(const json& j, const char* key) {
  if (j.is_object() && j.contains(key) && j[key].is_string()) return j[key].get<std::string>();
  return "";
}

template <class T>
T num_field(const json& j, const char* key) {
  if (j.is_object() && j.contains(key) && j[key].is_number()) return j[key].get<T>();
  return T{};
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (bytes >= 1024 && u < 5) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

std::string member_status(const json& m) {
  std::string s = str_field(m, "status");
  if (m.is_object() && m.contains("stalled") && m["stalled"].is_boolean() && m["stalled"].get<bool>()) {
    s += " (stalled)";
  }
  return s;
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  }
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
    std::snprintf(load, sizeof load, "%.2f", num_field<double>(health, "load"));
    rows.push_back({str_field(m, "name"), str_field(m, "addr"), str_field(m, "dc"), member_status(m),
                    std::to_string(num_field<std::uint64_t>(m, "incarnation")), str_field(m, "id").substr(0, 8), load,
                    human_bytes(num_field<double>(health, "free_disk_bytes")), str_field(health, "version")});
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
  std::printf("join: contacting %d member(s)\n", num_field<int>(*reply, "contacted"));
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

int cmd_watch(Args args) {
  static const char* usage =
      "usage: shoal watch [--json] [--admin HOST:PORT]\n"
      "  Streams membership events (joined, suspect, stalled, alive, dead, left, health, catalog)\n"
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
      const json m = e.contains("member") ? e["member"] : json::object();
      std::printf("%s  %-8s %s (%s, %s) %s incarnation %llu\n", str_field(e, "time").c_str(),
                  str_field(e, "event").c_str(), str_field(m, "name").c_str(), str_field(m, "dc").c_str(),
                  str_field(m, "addr").c_str(), member_status(m).c_str(),
                  static_cast<unsigned long long>(num_field<std::uint64_t>(m, "incarnation")));
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
        const bool primary = k.contains("primary") && k["primary"].is_boolean() && k["primary"].get<bool>();
        rows.push_back({str_field(k, "key"), str_field(k, "fingerprint"), primary ? "yes" : ""});
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
