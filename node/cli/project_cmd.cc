// node/cli/project_cmd.cc: `shoal project create|list|status|save|snapshots|
// restore` and `shoal where`, the client side of docs/projects-api.md.
// Everything that needs consensus or disk work is an agent operation: the POST
// answers 202 {"operation": N} and the CLI polls GET /v1/operations/N every
// 50 ms until it is done or failed, drawing a one-line spinner on stderr when
// stderr is a terminal.
// Exit codes: 0 success; 1 the agent refused or the operation failed (a save
// that was not acknowledged); 2 usage error or agent unreachable; 3 (`where`
// only) no majority of the project's replicas answered ("unavailable").

#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "node/cli/admin_client.h"
#include "node/cli/commands.h"
#include "node/cli/flags.h"
#include "node/cli/output.h"
#include "node/cli/project_util.h"

namespace shoal::cli {
namespace {

using nlohmann::json;

constexpr const char* kAdminHelp =
    "  --admin HOST:PORT   the agent's admin API (default $SHOAL_ADMIN or 127.0.0.1:7947)\n";

constexpr const char* kProjectUsage =
    "usage: shoal project <verb> [options]\n"
    "\n"
    "Projects placed on the mesh: a primary and one replica per data center,\n"
    "agreed by consensus among the replicas (docs/projects-api.md).\n"
    "\n"
    "verbs:\n"
    "  create [--id ID] [--dc DC] [--quota SIZE] [--from DIR] [--json]   prints the new project id\n"
    "  list [--json]                        projects this agent holds placement state for\n"
    "  status ID [--json]                   committed placement + this node's newest snapshot\n"
    "  save ID [--json]                     save now (on the primary's agent); prints the snapshot id\n"
    "  snapshots ID [--json]                this node's snapshots of ID\n"
    "  restore ID [--snapshot S] --to DIR   restore from this node's store\n"
    "  open ID                              mark running: the primary opens the working\n"
    "                                       directory and saves it periodically\n"
    "  stop ID [--remove-workdir]           final save (on the primary), then stopped\n"
    "  delete ID                            tombstone; every replica drops its copy\n"
    "  move ID --to NODE                    make NODE the primary (run on the primary)\n"
    "\n"
    "Run `shoal project <verb> --help` for a verb's options; `shoal where ID` shows\n"
    "where a project lives.\n";

constexpr const char* kCreateUsage =
    "usage: shoal project create [--id ID] [--dc DC] [--quota SIZE] [--from DIR] [--json] [--admin HOST:PORT]\n"
    "  Creates a project; the mesh picks its primary and replicas. Prints the project id.\n"
    "  --id ID             the project id (default: a random one)\n"
    "  --dc DC             preferred data center of the primary (default: this agent's)\n"
    "  --quota SIZE        size limit, e.g. 500M, 10G, 1.5T (powers of 1024; 0 = none)\n"
    "  --from DIR          import DIR as the project's first snapshot\n"
    "  --json              print the new placement as JSON instead of the id\n";

constexpr const char* kListUsage =
    "usage: shoal project list [--json] [--admin HOST:PORT]\n"
    "  The projects this agent holds placement state for, as it last saw them\n"
    "  (its own view: use `shoal where ID` for the committed placement).\n"
    "  --json              print the agent's JSON ({\"projects\": [placement...]})\n";

constexpr const char* kStatusUsage =
    "usage: shoal project status ID [--json] [--admin HOST:PORT]\n"
    "  The committed placement of ID (read linearizably) and this node's newest\n"
    "  local snapshot of it.\n"
    "  --json              the placement object plus \"local_snapshot\" (null when none)\n";

constexpr const char* kSaveUsage =
    "usage: shoal project save ID [--json] [--admin HOST:PORT]\n"
    "  Saves the project's working directory now and waits until the save is\n"
    "  replicated and acknowledged. Run it against the primary's agent (see\n"
    "  `shoal where ID`). Prints the snapshot id; exits 1 if the save was not\n"
    "  acknowledged.\n"
    "  --json              print the agent's result (placement, snapshot, files, bytes)\n";

constexpr const char* kSnapshotsUsage =
    "usage: shoal project snapshots ID [--json] [--admin HOST:PORT]\n"
    "  The snapshots of ID held in this node's store, oldest first.\n"
    "  --json              print the agent's JSON\n";

constexpr const char* kRestoreUsage =
    "usage: shoal project restore ID [--snapshot S] --to DIR [--json] [--admin HOST:PORT]\n"
    "  Restores a snapshot of ID from this node's store into DIR.\n"
    "  --snapshot S        snapshot id, or 'latest-acked' (default: the last\n"
    "                      acknowledged snapshot in the committed placement)\n"
    "  --to DIR            where to write the tree\n"
    "  --json              print the agent's result\n";

constexpr const char* kWhereUsage =
    "usage: shoal where ID [--json] [--admin HOST:PORT]\n"
    "  The committed placement of ID, read linearizably through a majority of its\n"
    "  replicas: epoch, primary, replicas, last acknowledged snapshot.\n"
    "  Exits 3 with 'unavailable: <reason>' on stderr when no majority answers.\n"
    "  --json              print the placement object (project, epoch, primary, replicas, ...)\n";

constexpr const char* kOpenUsage =
    "usage: shoal project open ID [--json] [--admin HOST:PORT]\n"
    "  Marks ID running: its primary restores the last acknowledged snapshot into\n"
    "  DATA_DIR/projects/ID (if missing) and saves it every --save-interval.\n";

constexpr const char* kStopUsage =
    "usage: shoal project stop ID [--remove-workdir] [--json] [--admin HOST:PORT]\n"
    "  On the primary's agent: saves the working directory a last time, waits for\n"
    "  the save to be acknowledged, then marks the project stopped.\n"
    "  --remove-workdir    then delete the working directory (the data is in the save)\n";

constexpr const char* kDeleteUsage =
    "usage: shoal project delete ID [--json] [--admin HOST:PORT]\n"
    "  Writes a tombstone: the project stops being saved and every replica drops\n"
    "  its snapshots. A working directory is moved to DATA_DIR/projects-retired.\n";

constexpr const char* kMoveUsage =
    "usage: shoal project move ID --to NODE [--json] [--admin HOST:PORT]\n"
    "  On the primary's agent: copies the last acknowledged snapshot to NODE, then\n"
    "  makes NODE the primary at the next epoch (NODE takes the replica slot of\n"
    "  its data center).\n"
    "  --to NODE           member name or id prefix\n";

constexpr int kPollMs = 50;
constexpr int kExitUnavailable = 3;

int usage_error(const std::string& message, const char* usage) {
  std::fprintf(stderr, "shoal: %s\n%s", message.c_str(), usage);
  return 2;
}

void sleep_ms(int ms) {
  struct timespec ts{ms / 1000, static_cast<long>(ms % 1000) * 1'000'000};
  ::nanosleep(&ts, nullptr);
}

std::string abs_path(const std::string& p) {
  std::error_code ec;
  auto a = std::filesystem::absolute(p, ec);
  return ec ? p : a.lexically_normal().string();
}

// What an operation came to. kRefused: the POST itself was not accepted
// (http_status and the agent's body); kFailed / kDone: the operation's final
// state (body = the operation object).
struct Outcome {
  enum Kind { kDone, kFailed, kRefused } kind = kFailed;
  int http_status = 0;
  json body;
  std::string code;   // The error code name ("unavailable", "not_found", ...).
  std::string error;  // One line.
};

// One request; nullopt when the agent cannot be reached (exit_code set to 2).
std::optional<std::pair<int, json>> request(AdminClient& client, std::string_view method, const std::string& path,
                                            const std::string& body, int& exit_code, std::string* raw = nullptr) {
  auto response = client.request(method, path, body);
  if (!response) {
    exit_code = report_client_error(response.error());
    return std::nullopt;
  }
  if (raw != nullptr) *raw = response->body;
  return std::make_pair(response->status, json::parse(response->body, nullptr, /*allow_exceptions=*/false));
}

Outcome refused(int status, const json& body, const std::string& raw) {
  Outcome o;
  o.kind = Outcome::kRefused;
  o.http_status = status;
  o.body = body.is_discarded() ? json::object() : body;
  o.code = json_str(o.body, "code");
  o.error = json_str(o.body, "error");
  if (o.error.empty()) o.error = raw.empty() ? "HTTP " + std::to_string(status) : raw;
  if (o.code.empty()) {
    if (status == 404) o.code = "not_found";
    if (status == 409) o.code = "failed_precondition";
    if (status == 503) o.code = "unavailable";
    if (status == 400) o.code = "invalid_argument";
  }
  return o;
}

// Starts the operation with POST path and waits for its end.
std::optional<Outcome> run_operation(AdminClient& client, const std::string& path, const json& body, int& exit_code) {
  std::string raw;
  auto started = request(client, "POST", path, body.dump(), exit_code, &raw);
  if (!started) return std::nullopt;
  if (started->first < 200 || started->first >= 300) return refused(started->first, started->second, raw);
  if (!started->second.is_object() || !started->second.contains("operation") ||
      !started->second["operation"].is_number_unsigned()) {
    std::fprintf(stderr, "shoal: the agent's answer to POST %s has no operation id: %s\n", path.c_str(), raw.c_str());
    exit_code = 2;
    return std::nullopt;
  }
  const std::string op_path = "/v1/operations/" + std::to_string(json_u64(started->second, "operation"));
  const bool spinner = ::isatty(STDERR_FILENO) == 1;
  const auto t0 = std::chrono::steady_clock::now();
  int tick = 0;
  for (;;) {
    auto polled = request(client, "GET", op_path, "", exit_code, &raw);
    if (!polled) {
      if (spinner) std::fputs("\r\033[K", stderr);
      return std::nullopt;
    }
    if (polled->first < 200 || polled->first >= 300 || !polled->second.is_object()) {
      if (spinner) std::fputs("\r\033[K", stderr);
      // The agent restarted and forgot the operation, or answered garbage.
      Outcome o = refused(polled->first, polled->second, raw);
      o.error = "polling " + op_path + ": " + o.error;
      return o;
    }
    const json& op = polled->second;
    const std::string state = json_str(op, "state");
    if (state == "done" || state == "failed") {
      if (spinner) std::fputs("\r\033[K", stderr);
      Outcome o;
      o.kind = state == "done" ? Outcome::kDone : Outcome::kFailed;
      o.http_status = polled->first;
      o.body = op;
      o.code = json_str(op, "code");
      o.error = json_str(op, "error");
      if (o.kind == Outcome::kFailed && o.error.empty()) o.error = "the operation failed";
      return o;
    }
    if (spinner) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::fprintf(stderr, "\r%s\033[K", spinner_line(tick++, op, secs).c_str());
      std::fflush(stderr);
    }
    sleep_ms(kPollMs);
  }
}

json result_of(const Outcome& o) {
  return o.body.is_object() && o.body.contains("result") ? o.body["result"] : json::object();
}

// "shoal: save p1: <error> (code)" and exit 1.
int report_failure(const char* what, const std::string& project, const Outcome& o) {
  std::fprintf(stderr, "shoal: %s %s: %s%s%s%s\n", what, project.c_str(), o.error.c_str(), o.code.empty() ? "" : " (",
               o.code.c_str(), o.code.empty() ? "" : ")");
  return 1;
}

// Parses flags and handles --help; returns nullopt with exit_code set when the
// command should end here.
std::optional<ParsedFlags> parse(Args args, const FlagSpec& spec, const char* usage, std::size_t positionals,
                                 int& exit_code) {
  auto flags = parse_flags(args, spec);
  if (!flags) {
    exit_code = usage_error(flags.error().message, usage);
    return std::nullopt;
  }
  if (flags->has("help")) {
    std::printf("%s%s", usage, kAdminHelp);
    exit_code = 0;
    return std::nullopt;
  }
  if (flags->positionals.size() != positionals) {
    exit_code = usage_error(positionals == 0   ? "unexpected argument '" + flags->positionals[0] + "'"
                            : flags->positionals.empty() ? "give the project ID"
                                                         : "give exactly one project ID",
                            usage);
    return std::nullopt;
  }
  if (positionals == 1) {
    if (auto ok = check_project_id(flags->positionals[0]); !ok) {
      exit_code = usage_error(ok.error().message, usage);
      return std::nullopt;
    }
  }
  return std::move(*flags);
}

std::string project_path(const std::string& id, const char* tail = "") { return "/v1/projects/" + id + tail; }

int project_create(Args args) {
  int rc = 0;
  auto flags = parse(args, {{"admin", "id", "dc", "quota", "from"}, {"json"}}, kCreateUsage, 0, rc);
  if (!flags) return rc;
  json body = json::object();
  if (auto id = flags->get("id")) {
    if (auto ok = check_project_id(*id); !ok) return usage_error(ok.error().message, kCreateUsage);
    body["id"] = *id;
  }
  if (auto dc = flags->get("dc")) {
    if (dc->empty()) return usage_error("--dc is empty", kCreateUsage);
    body["dc"] = *dc;
  }
  if (auto quota = flags->get("quota")) {
    auto bytes = parse_size(*quota);
    if (!bytes) return usage_error("--quota: " + bytes.error().message, kCreateUsage);
    body["quota_bytes"] = *bytes;
  }
  if (auto from = flags->get("from")) {
    if (from->empty()) return usage_error("--from is empty", kCreateUsage);
    body["from"] = abs_path(*from);
  }
  AdminClient client(admin_address(*flags));
  auto o = run_operation(client, "/v1/projects", body, rc);
  if (!o) return rc;
  const std::string label = flags->get("id").value_or("(new)");
  if (o->kind != Outcome::kDone) return report_failure("create", label, *o);
  const json placement = result_of(*o);
  if (flags->has("json")) {
    std::printf("%s\n", placement.dump(2).c_str());
  } else {
    std::string id = json_str(placement, "project");
    if (id.empty()) id = json_str(o->body, "project");
    std::printf("%s\n", id.c_str());
  }
  return 0;
}

int project_list(Args args) {
  int rc = 0;
  auto flags = parse(args, {{"admin"}, {"json"}}, kListUsage, 0, rc);
  if (!flags) return rc;
  AdminClient client(admin_address(*flags));
  auto list = call_agent(client, "GET", "/v1/projects", "", rc);
  if (!list) return rc;
  if (flags->has("json")) {
    std::printf("%s\n", list->dump(2).c_str());
    return 0;
  }
  const json projects = list->is_object() && list->contains("projects") ? (*list)["projects"] : json::array();
  if (!projects.is_array() || projects.empty()) {
    std::printf("no projects on this node\n");
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {{"PROJECT", "EPOCH", "PRIMARY", "REPLICAS", "STATE", "LAST ACK"}};
  for (const auto& p : projects) {
    const std::string primary = json_str(p, "primary");
    rows.push_back({json_str(p, "project"), std::to_string(json_u64(p, "epoch")), primary.empty() ? "-" : primary,
                    replicas_text(p), json_str(p, "state"), last_ack_text(p)});
  }
  print_table(rows);
  return 0;
}

// The committed placement through a read operation. nullopt: rc is the exit code.
std::optional<json> read_placement(AdminClient& client, const std::string& id, const char* what, bool unavailable_is_3,
                                   int& rc, const char* route = "/read") {
  auto o = run_operation(client, project_path(id, route), json::object(), rc);
  if (!o) return std::nullopt;
  if (o->kind == Outcome::kDone) return result_of(*o);
  if (o->code == "unavailable" && unavailable_is_3) {
    std::fprintf(stderr, "unavailable: %s\n", o->error.c_str());
    rc = kExitUnavailable;
    return std::nullopt;
  }
  rc = report_failure(what, id, *o);
  return std::nullopt;
}

// This node's snapshots of id ({"project", "snapshots": [...]}), or nullopt when
// it holds none (404) or the agent refused (rc set for a real failure).
std::optional<json> local_snapshots(AdminClient& client, const std::string& id, int& rc, bool quiet_404) {
  std::string raw;
  auto r = request(client, "GET", project_path(id, "/snapshots"), "", rc, &raw);
  if (!r) return std::nullopt;
  if (r->first == 404 && quiet_404) return std::nullopt;
  if (r->first < 200 || r->first >= 300 || !r->second.is_object()) {
    rc = report_failure("snapshots", id, refused(r->first, r->second, raw));
    return std::nullopt;
  }
  return r->second;
}

// A snapshot's time: "time" as docs/projects-api.md names it, else "time_ns".
json snapshot_time(const json& s) {
  if (!s.is_object()) return nullptr;
  if (s.contains("time")) return s["time"];
  if (s.contains("time_ns")) return s["time_ns"];
  return nullptr;
}

// The newest entry of a snapshots answer (greatest time; the last on ties).
json newest_snapshot(const json& answer) {
  json best = nullptr;
  if (!answer.is_object() || !answer.contains("snapshots") || !answer["snapshots"].is_array()) return best;
  for (const auto& s : answer["snapshots"]) {
    const json t = snapshot_time(s);
    const json bt = snapshot_time(best);
    if (best.is_null() || !t.is_number() || !bt.is_number() || t.get<double>() >= bt.get<double>()) {
      best = s;
    }
  }
  return best;
}

std::string snapshot_summary(const json& s) {
  return json_str(s, "id").substr(0, 12) + " at " + time_text(snapshot_time(s)) + ", " +
         std::to_string(json_u64(s, "files")) + " files, " +
         human_bytes(static_cast<double>(json_u64(s, "logical_bytes"))) + ", epoch " +
         std::to_string(json_u64(s, "epoch"));
}

int project_status(Args args) {
  int rc = 0;
  auto flags = parse(args, {{"admin"}, {"json"}}, kStatusUsage, 1, rc);
  if (!flags) return rc;
  const std::string id = flags->positionals[0];
  AdminClient client(admin_address(*flags));
  // The status route adds what each replica holds (asked directly) to the
  // linearizable placement.
  auto placement = read_placement(client, id, "status", /*unavailable_is_3=*/false, rc, "/status");
  if (!placement) return rc;
  rc = 0;
  auto snaps = local_snapshots(client, id, rc, /*quiet_404=*/true);
  if (rc != 0) return rc;
  const json newest = snaps ? newest_snapshot(*snaps) : json(nullptr);
  if (flags->has("json")) {
    json out = placement->is_object() ? *placement : json::object();
    out["local_snapshot"] = newest;
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  const json& p = *placement;
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"project", json_str(p, "project")});
  rows.push_back({"state", json_str(p, "state").empty() ? "-" : json_str(p, "state")});
  rows.push_back({"epoch", std::to_string(json_u64(p, "epoch")) + " (version " + std::to_string(json_u64(p, "version")) +
                               ", generation " + std::to_string(json_u64(p, "generation")) + ")"});
  const std::string primary = json_str(p, "primary");
  rows.push_back({"primary", primary.empty() ? "-" : primary + " (" + json_str(p, "primary_id").substr(0, 12) + ")"});
  rows.push_back({"replicas", replicas_text(p)});
  rows.push_back({"last ack", last_ack_text(p)});
  if (!json_str(p, "preferred_dc").empty()) rows.push_back({"preferred dc", json_str(p, "preferred_dc")});
  const std::uint64_t quota = json_u64(p, "quota_bytes");
  rows.push_back({"quota", quota == 0 ? "none" : human_bytes(static_cast<double>(quota))});
  for (const char* extra : {"workdir", "working_dir", "progress"}) {  // Shown when the agent sends them.
    if (p.is_object() && p.contains(extra) && !p[extra].is_null()) {
      rows.push_back({extra, p[extra].is_string() ? p[extra].get<std::string>() : p[extra].dump()});
    }
  }
  rows.push_back({"this node", newest.is_null() ? "no local snapshot" : "newest snapshot " + snapshot_summary(newest)});
  if (p.contains("replica_status") && p["replica_status"].is_array()) {
    for (const json& r : p["replica_status"]) {
      std::string what;
      if (!r.value("answered", false)) {
        what = "did not answer (down or cut off)";
      } else if (r.value("holds_last_ack", false)) {
        what = "holds the last acknowledged snapshot (" + std::to_string(json_u64(r, "snapshots")) + " snapshots)";
      } else {
        what = "BEHIND: lacks the last acknowledged snapshot (" + std::to_string(json_u64(r, "snapshots")) +
               " snapshots; the primary copies it)";
      }
      rows.push_back({"replica " + json_str(r, "name") + (r.value("primary", false) ? " (primary)" : ""), what});
    }
  }
  print_table(rows);
  return 0;
}

int project_save(Args args) {
  int rc = 0;
  auto flags = parse(args, {{"admin"}, {"json"}}, kSaveUsage, 1, rc);
  if (!flags) return rc;
  const std::string id = flags->positionals[0];
  AdminClient client(admin_address(*flags));
  auto o = run_operation(client, project_path(id, "/save"), json::object(), rc);
  if (!o) return rc;
  if (o->kind == Outcome::kRefused && o->http_status == 409) {
    // Not the primary: name it so the user knows where to run the save.
    std::string primary = json_str(o->body, "primary");
    if (primary.empty() && o->body.contains("placement")) primary = json_str(o->body["placement"], "primary");
    if (!primary.empty()) {
      std::fprintf(stderr, "shoal: save %s: this agent is not the primary; the primary is %s (%s)\n", id.c_str(),
                   primary.c_str(), o->error.c_str());
      return 1;
    }
  }
  if (o->kind != Outcome::kDone) return report_failure("save", id, *o);
  const json r = result_of(*o);
  const std::string snap = json_str(r, "snapshot");
  const json placement = r.contains("placement") ? r["placement"] : json::object();
  const std::string acked = placement.contains("last_ack") ? json_str(placement["last_ack"], "snapshot") : "";
  if (flags->has("json")) {
    std::printf("%s\n", r.dump(2).c_str());
  } else {
    std::printf("%s\n", snap.c_str());
  }
  if (snap.empty() || acked != snap) {
    std::fprintf(stderr, "shoal: save %s: snapshot %s was not acknowledged (last acknowledged: %s)\n", id.c_str(),
                 snap.empty() ? "?" : snap.substr(0, 12).c_str(), acked.empty() ? "none" : acked.substr(0, 12).c_str());
    return 1;
  }
  if (::isatty(STDERR_FILENO) == 1 && !flags->has("json")) {
    std::fprintf(stderr, "saved %s: %llu files, %s, %s new; acknowledged at epoch %llu\n", id.c_str(),
                 static_cast<unsigned long long>(json_u64(r, "files")),
                 human_bytes(static_cast<double>(json_u64(r, "logical_bytes"))).c_str(),
                 human_bytes(static_cast<double>(json_u64(r, "new_bytes"))).c_str(),
                 static_cast<unsigned long long>(json_u64(placement, "epoch")));
  }
  return 0;
}

int project_snapshots(Args args) {
  int rc = 0;
  auto flags = parse(args, {{"admin"}, {"json"}}, kSnapshotsUsage, 1, rc);
  if (!flags) return rc;
  const std::string id = flags->positionals[0];
  AdminClient client(admin_address(*flags));
  auto answer = local_snapshots(client, id, rc, /*quiet_404=*/false);
  if (!answer) return rc;
  if (flags->has("json")) {
    std::printf("%s\n", answer->dump(2).c_str());
    return 0;
  }
  const json list = answer->contains("snapshots") ? (*answer)["snapshots"] : json::array();
  if (!list.is_array() || list.empty()) {
    std::printf("no snapshots of %s on this node\n", id.c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {{"SNAPSHOT", "TIME", "FILES", "SIZE", "EPOCH"}};
  for (const auto& s : list) {
    rows.push_back({json_str(s, "id").substr(0, 12), time_text(snapshot_time(s)),
                    std::to_string(json_u64(s, "files")), human_bytes(static_cast<double>(json_u64(s, "logical_bytes"))),
                    std::to_string(json_u64(s, "epoch"))});
  }
  print_table(rows);
  return 0;
}

int project_restore(Args args) {
  int rc = 0;
  auto flags = parse(args, {{"admin", "snapshot", "to"}, {"json"}}, kRestoreUsage, 1, rc);
  if (!flags) return rc;
  const std::string id = flags->positionals[0];
  auto to = flags->get("to");
  if (!to || to->empty()) return usage_error("restore needs --to DIR", kRestoreUsage);
  json body{{"to", abs_path(*to)}};
  if (auto s = flags->get("snapshot")) {
    if (s->empty()) return usage_error("--snapshot is empty", kRestoreUsage);
    body["snapshot"] = *s;
  }
  AdminClient client(admin_address(*flags));
  auto o = run_operation(client, project_path(id, "/restore"), body, rc);
  if (!o) return rc;
  if (o->kind != Outcome::kDone) return report_failure("restore", id, *o);
  const json r = result_of(*o);
  if (flags->has("json")) {
    std::printf("%s\n", r.dump(2).c_str());
    return 0;
  }
  std::string line = "restored " + id;
  if (!json_str(r, "snapshot").empty()) line += " snapshot " + json_str(r, "snapshot").substr(0, 12);
  line += " to " + body["to"].get<std::string>();
  if (r.contains("files")) line += ": " + std::to_string(json_u64(r, "files")) + " files";
  for (const char* key : {"bytes", "logical_bytes"}) {
    if (r.contains(key)) {
      line += ", " + human_bytes(static_cast<double>(json_u64(r, key)));
      break;
    }
  }
  std::printf("%s\n", line.c_str());
  return 0;
}

}  // namespace

// open, stop, delete and move: one operation, then the placement it left.
int project_lifecycle(Args args, const char* verb, const char* usage) {
  int rc = 0;
  const bool is_stop = std::string_view(verb) == "stop";
  const bool is_move = std::string_view(verb) == "move";
  FlagSpec spec{{"admin"}, {"json"}};
  if (is_stop) spec.switches.insert("remove-workdir");
  if (is_move) spec.with_value.insert("to");
  auto flags = parse(args, spec, usage, 1, rc);
  if (!flags) return rc;
  const std::string id = flags->positionals[0];
  json body = json::object();
  if (is_stop) body["remove_workdir"] = flags->has("remove-workdir");
  if (is_move) {
    auto to = flags->get("to");
    if (!to) return usage_error("move needs --to NODE", usage);
    body["to"] = *to;
  }
  AdminClient client(admin_address(*flags));
  auto o = run_operation(client, project_path(id, (std::string("/") + verb).c_str()), body, rc);
  if (!o) return rc;
  if (o->kind != Outcome::kDone) return report_failure(verb, id, *o);
  const json r = result_of(*o);
  if (flags->has("json")) {
    std::printf("%s\n", r.dump(2).c_str());
  } else {
    std::printf("%s: %s, epoch %llu, primary %s\n", id.c_str(), json_str(r, "state").c_str(),
                static_cast<unsigned long long>(json_u64(r, "epoch")), json_str(r, "primary").c_str());
  }
  return 0;
}

int cmd_project(Args args) {
  if (args.empty()) {
    std::fputs(kProjectUsage, stderr);
    return 2;
  }
  const std::string_view verb = args[0];
  const Args rest = args.subspan(1);
  if (verb == "--help" || verb == "-h" || verb == "help") {
    std::fputs(kProjectUsage, stdout);
    return 0;
  }
  if (verb == "create") return project_create(rest);
  if (verb == "list") return project_list(rest);
  if (verb == "status") return project_status(rest);
  if (verb == "save") return project_save(rest);
  if (verb == "snapshots") return project_snapshots(rest);
  if (verb == "restore") return project_restore(rest);
  if (verb == "open") return project_lifecycle(rest, "open", kOpenUsage);
  if (verb == "stop") return project_lifecycle(rest, "stop", kStopUsage);
  if (verb == "delete") return project_lifecycle(rest, "delete", kDeleteUsage);
  if (verb == "move") return project_lifecycle(rest, "move", kMoveUsage);
  std::fprintf(stderr, "shoal project: unknown verb '%.*s'\n%s", static_cast<int>(verb.size()), verb.data(),
               kProjectUsage);
  return 2;
}

int cmd_where(Args args) {
  int rc = 0;
  auto flags = parse(args, {{"admin"}, {"json"}}, kWhereUsage, 1, rc);
  if (!flags) return rc;
  const std::string id = flags->positionals[0];
  AdminClient client(admin_address(*flags));
  // A refusal of the POST with 503 is "unavailable" too.
  auto o = run_operation(client, project_path(id, "/read"), json::object(), rc);
  if (!o) return rc;
  if (o->kind != Outcome::kDone) {
    if (o->code == "unavailable") {
      std::fprintf(stderr, "unavailable: %s\n", o->error.c_str());
      return kExitUnavailable;
    }
    return report_failure("where", id, *o);
  }
  const json placement = result_of(*o);
  if (flags->has("json")) {
    std::printf("%s\n", placement.dump(2).c_str());
  } else {
    std::printf("%s\n", where_line(placement).c_str());
  }
  return 0;
}

}  // namespace shoal::cli
