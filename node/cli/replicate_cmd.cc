// node/cli/replicate_cmd.cc: `shoal replicate` (copy a snapshot to another
// node through the agents) and `shoal transfers` (active and recent copies).
// Exit codes: 0 success, 1 the copy failed or the agent refused it, 2 usage
// error or agent unreachable.

#include <time.h>

#include <algorithm>
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

constexpr const char* kReplicateUsage =
    "usage: shoal replicate --project ID --snapshot S (--to NODE | --from NODE) [--detach] [--admin HOST:PORT]\n"
    "  --project ID        the project\n"
    "  --snapshot S        snapshot id, unique hex prefix, or 'latest' (a pull needs the full id)\n"
    "  --to NODE           push to this node (name or id prefix, as `shoal members` shows)\n"
    "  --from NODE         pull from this node\n"
    "  --detach            return at once with the transfer id instead of waiting\n"
    "  --admin HOST:PORT   the agent's admin API (default $SHOAL_ADMIN or 127.0.0.1:7947)\n";

constexpr const char* kTransfersUsage =
    "usage: shoal transfers [--json] [--admin HOST:PORT]\n"
    "  --json              print the agent's JSON\n"
    "  --admin HOST:PORT   the agent's admin API (default $SHOAL_ADMIN or 127.0.0.1:7947)\n";

// The wait polls the agent after 2 ms, then doubles up to 100 ms, so a copy that
// ends at once (the peer holds the snapshot) is reported in milliseconds.
constexpr int kPollFirstMs = 2;
constexpr int kPollIntervalMs = 100;

std::optional<json> call(AdminClient& client, std::string_view method, std::string_view path, const std::string& body,
                         int& exit_code) {
  return call_agent(client, method, path, body, exit_code);
}

std::string summary(const json& t) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%llu chunks, %s", static_cast<unsigned long long>(json_u64(t, "chunks")),
                human_bytes(static_cast<double>(json_u64(t, "bytes"))).c_str());
  return buf;
}

void sleep_ms(int ms) {
  struct timespec ts{ms / 1000, static_cast<long>(ms % 1000) * 1'000'000};
  ::nanosleep(&ts, nullptr);
}

}  // namespace

// One line for `shoal watch`: "transfer_progress 3 send p1 1a2b3c4d5e6f to node-b: 120 chunks, 40 MiB, 38 MiB/s".
std::string transfer_event_summary(const json& event) {
  const json t = event.contains("transfer") ? event["transfer"] : json::object();
  std::string line = json_str(event, "event") + " " + std::to_string(json_u64(t, "id")) + " " +
                     json_str(t, "direction") + " " + json_str(t, "project") + " " +
                     json_str(t, "snapshot").substr(0, 12) + (json_str(t, "direction") == "send" ? " to " : " from ") +
                     json_str(t, "peer") + ": " + summary(t);
  if (json_f64(t, "bytes_per_second") > 0) {
    line += ", " + human_bytes(json_f64(t, "bytes_per_second")) + "/s";
  }
  if (t.contains("eta_seconds")) {
    char eta[32];
    std::snprintf(eta, sizeof eta, ", ETA %.0f s", json_f64(t, "eta_seconds"));
    line += eta;
  }
  if (json_u64(t, "attempts") > 1) {
    line += ", attempt " + std::to_string(json_u64(t, "attempts"));
  }
  if (t.contains("error")) {
    line += " (" + json_str(t, "error") + ")";
  }
  return line;
}

int cmd_replicate(Args args) {
  auto flags = parse_flags(args, FlagSpec{{"admin", "project", "snapshot", "to", "from"}, {"detach", "help"}});
  if (!flags) {
    std::fprintf(stderr, "shoal: %s\n%s", flags.error().message.c_str(), kReplicateUsage);
    return 2;
  }
  if (flags->has("help")) {
    std::fputs(kReplicateUsage, stdout);
    return 0;
  }
  const auto project = flags->get("project");
  const auto snapshot = flags->get("snapshot");
  const auto to = flags->get("to");
  const auto from = flags->get("from");
  if (!project || !snapshot || to.has_value() == from.has_value()) {
    std::fprintf(stderr, "shoal: give --project, --snapshot and exactly one of --to and --from\n%s", kReplicateUsage);
    return 2;
  }
  json body{{"project", *project}, {"snapshot", *snapshot}, {"detach", flags->has("detach")}};
  if (to) {
    body["to"] = *to;
  } else {
    body["from"] = *from;
  }
  AdminClient client(admin_address(*flags));
  int exit_code = 0;
  auto started = call(client, "POST", "/v1/replicate", body.dump(), exit_code);
  if (!started) {
    return exit_code;
  }
  const std::uint64_t id = json_u64(*started, "id");
  const std::string snap = json_str(*started, "snapshot").substr(0, 12);
  if (flags->has("detach")) {
    std::printf("transfer %llu started: snapshot %s of %s to %s (see `shoal transfers`)\n",
                static_cast<unsigned long long>(id), snap.c_str(), project->c_str(), json_str(*started, "peer").c_str());
    return 0;
  }
  // Wait for the end. The agent keeps finished transfers for a while, so a
  // fast copy is still found.
  const std::string path = "/v1/transfers/" + std::to_string(id);
  int poll_ms = kPollFirstMs;
  for (;;) {
    auto t = call(client, "GET", path, "", exit_code);
    if (!t) {
      return exit_code;
    }
    const std::string state = json_str(*t, "state");
    if (state == "done") {
      std::printf("replicated snapshot %s of %s %s %s: %s%s in %.2f s\n", snap.c_str(), project->c_str(),
                  to ? "to" : "from", json_str(*t, "peer").c_str(), summary(*t).c_str(),
                  t->value("already_held", false) ? " (the peer held it already)" : "", json_f64(*t, "seconds"));
      return 0;
    }
    if (state == "failed") {
      std::fprintf(stderr, "shoal: replication of snapshot %s of %s %s %s failed: %s (%s)\n", snap.c_str(),
                   project->c_str(), to ? "to" : "from", json_str(*t, "peer").c_str(), json_str(*t, "error").c_str(), json_str(*t, "code").c_str());
      return 1;
    }
    sleep_ms(poll_ms);
    poll_ms = std::min(poll_ms * 2, kPollIntervalMs);
  }
}

int cmd_transfers(Args args) {
  auto flags = parse_flags(args, FlagSpec{{"admin"}, {"json", "help"}});
  if (!flags) {
    std::fprintf(stderr, "shoal: %s\n%s", flags.error().message.c_str(), kTransfersUsage);
    return 2;
  }
  if (flags->has("help")) {
    std::fputs(kTransfersUsage, stdout);
    return 0;
  }
  AdminClient client(admin_address(*flags));
  int exit_code = 0;
  auto list = call(client, "GET", "/v1/transfers", "", exit_code);
  if (!list) {
    return exit_code;
  }
  if (flags->has("json")) {
    std::printf("%s\n", list->dump(2).c_str());
    return 0;
  }
  const json& transfers = (*list)["transfers"];
  if (!transfers.is_array() || transfers.empty()) {
    std::printf("no active or recent transfers\n");
    return 0;
  }
  std::printf("%-5s %-8s %-10s %-16s %-13s %-9s %-28s %s\n", "ID", "DIR", "STATE", "PEER", "SNAPSHOT", "PROJECT",
              "PROGRESS", "RATE / ERROR");
  for (const auto& t : transfers) {
    std::string tail;
    if (json_str(t, "state") == "failed" || json_str(t, "state") == "retrying") {
      tail = json_str(t, "error");
    } else if (json_f64(t, "bytes_per_second") > 0) {
      tail = human_bytes(json_f64(t, "bytes_per_second")) + "/s";
      if (t.contains("eta_seconds")) {
        char eta[32];
        std::snprintf(eta, sizeof eta, ", ETA %.0f s", json_f64(t, "eta_seconds"));
        tail += eta;
      }
    }
    std::string state = json_str(t, "state");
    if (json_u64(t, "attempts") > 1) {
      state += "#" + std::to_string(json_u64(t, "attempts"));  // done#2: done on the second attempt.
    }
    std::printf("%-5llu %-8s %-10s %-16s %-13s %-9s %-28s %s\n", static_cast<unsigned long long>(json_u64(t, "id")),
                json_str(t, "direction").c_str(), state.c_str(), json_str(t, "peer").c_str(),
                json_str(t, "snapshot").substr(0, 12).c_str(), json_str(t, "project").c_str(), summary(t).c_str(), tail.c_str());
  }
  return 0;
}

}  // namespace shoal::cli
