// node/agent/project_service.cc: project routes, operations and the repair loop.
#include "node/agent/project_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "base/bytes.h"
#include "node/agent/render.h"
#include "node/agent/subprocess.h"
#include "node/agent/uv_util.h"
#include "node/core/health_weight.h"
#include "node/core/ranking.h"

namespace shoal::agent {
namespace {

using nlohmann::json;

std::string hex_of(const Hash256& h) { return to_hex(ByteView(h.data(), h.size())); }

std::optional<Hash256> parse_hash(std::string_view text) {
  auto bytes = from_hex(text);
  if (!bytes || bytes->size() != kHashBytes) return std::nullopt;
  Hash256 h{};
  std::copy(bytes->begin(), bytes->end(), h.begin());
  return h;
}

// "/v1/projects/ID/verb" -> (ID, verb); verb empty for "/v1/projects/ID".
bool split_project_path(std::string_view path, std::string& project, std::string& verb) {
  constexpr std::string_view prefix = "/v1/projects/";
  if (!path.starts_with(prefix)) return false;
  std::string_view rest = path.substr(prefix.size());
  const auto slash = rest.find('/');
  project = std::string(rest.substr(0, slash));
  verb = slash == std::string_view::npos ? "" : std::string(rest.substr(slash + 1));
  return !project.empty();
}

// The routes that act on the primary, forwarded there from any other agent.
bool forwarded_verb(std::string_view verb) {
  return verb == "save" || verb == "open" || verb == "stop" || verb == "delete" || verb == "move";
}

// The inverse of code_name, for an error that crossed the wire by name.
Code code_from_name(std::string_view name) {
  for (int c = static_cast<int>(Code::kOk); c <= static_cast<int>(Code::kInternal); ++c) {
    if (code_name(static_cast<Code>(c)) == name) return static_cast<Code>(c);
  }
  return Code::kInternal;
}

// The error code of a refused request, as the CLI reads HTTP statuses.
Code code_of_status(std::uint64_t status) {
  if (status == 400) return Code::kInvalidArgument;
  if (status == 404) return Code::kNotFound;
  if (status == 503) return Code::kUnavailable;
  return Code::kFailedPrecondition;
}

AdminReply reply_json(const json& body, int status = 200) { return AdminReply{json_response(body, status), false, {}}; }
AdminReply reply_error(int status, std::string_view message) { return AdminReply{error_response(status, message), false, {}}; }

}  // namespace

ProjectService::ProjectService(Deps deps) : deps_(std::move(deps)), started_(monotonic_now()) {
  deps_.placement->set_holdings([this](const core::Inquire& q) {
    core::Inquired answer{q.project, 0, false, 0, {}};
    auto snaps = deps_.transfers->store().list(q.project);
    if (!snaps) return answer;
    answer.snapshots = snaps->size();
    std::int64_t newest_time = 0;
    for (const auto& s : *snaps) {
      if (s.id == q.snapshot) answer.holds = true;
      if (answer.newest == Hash256{} || s.commit.time_ns > newest_time) {
        answer.newest = s.id;
        newest_time = s.commit.time_ns;
      }
    }
    return answer;
  });
  deps_.placement->set_forward_handler(
      [this](const NodeId& from, const core::Forward& request) { return serve_forward(from, request); });
}

std::string ProjectService::working_dir(const std::string& project) const {
  return deps_.data_dir + "/projects/" + project;
}

Status ProjectService::check_incoming(const std::string& project, const Hash256& snapshot, std::uint64_t epoch) {
  if (collecting_.erase(project) > 0) {
    // A primary wants this node to hold the project: abandon the collection.
    ++collections_abandoned_;
    spdlog::info("project {}: a snapshot arrived; no longer collecting this node's copy", project);
  }
  auto value = deps_.placement->local_value(project);
  if (!value) return std::unexpected(value.error());
  if (!*value) return {};  // Nothing known here yet (e.g. the first snapshot of a new project).
  const core::Placement& p = (*value)->placement;
  if (epoch >= p.epoch || (p.last_ack.seq > 0 && p.last_ack.id == snapshot)) {
    // About to store it: let the other replicas know (they may lack it too).
    if (deps_.holdings_changed) deps_.holdings_changed();
    return {};
  }
  ++fenced_;
  return make_error(Code::kFailedPrecondition, "snapshot of " + project + " stamped with epoch " +
                                                   std::to_string(epoch) + " refused: this replica has accepted epoch " +
                                                   std::to_string(p.epoch) + " (primary " + name_of(p.primary) + ")");
}

std::string ProjectService::render_metrics() const {
  std::string out;
  auto counter = [&](const char* name, const char* help, std::uint64_t value) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n";
    out += std::string(name) + " " + std::to_string(value) + "\n";
  };
  const PlacementService::Counters& c = deps_.placement->counters();
  const core::Proposer::Stats& p = deps_.placement->proposer_stats();
  counter("shoal_placement_messages_in_total", "Placement datagrams received.", c.messages_in);
  counter("shoal_placement_messages_out_total", "Placement datagrams sent to other nodes.", c.messages_out);
  counter("shoal_placement_messages_malformed_total", "Placement datagrams dropped as malformed.", c.malformed);
  counter("shoal_placement_acceptor_writes_total", "Acceptor promises and accepts made durable.", c.durable_writes);
  counter("shoal_placement_changes_total", "Register changes (reads included) this node committed.", c.changes_ok);
  counter("shoal_placement_changes_failed_total", "Register changes that failed or were refused.", c.changes_failed);
  counter("shoal_placement_fast_path_total", "Changes that skipped phase 1 (one round trip).", p.fast_path);
  counter("shoal_placement_conflicts_total", "Rounds restarted after another proposer's ballot.", p.conflicts);
  counter("shoal_placement_failovers_total", "Failovers this node committed as the new primary.", failovers_);
  counter("shoal_placement_replicas_replaced_total", "Dead replicas this node replaced as primary.", replicas_replaced_);
  counter("shoal_placement_rebalanced_total", "Replicas this node moved to a better-ranked joined node.", rebalanced_);
  counter("shoal_project_saves_total", "Acknowledged saves on this node.", saves_ok_);
  counter("shoal_project_saves_failed_total", "Saves that were not acknowledged.", saves_failed_);
  counter("shoal_project_snapshots_fenced_total", "Received snapshots refused for an older epoch.", fenced_);
  counter("shoal_project_snapshots_pulled_total", "Acknowledged snapshots a replica pulled because it lacked them.",
          pulls_);
  counter("shoal_project_collections_abandoned_total",
          "Obsolete-copy collections abandoned because a snapshot of the project arrived.", collections_abandoned_);
  counter("shoal_project_copies_collected_total", "Obsolete project copies this node dropped.", copies_collected_);
  counter("shoal_project_forwards_sent_total", "Admin requests forwarded to a project's primary.", c.forwards_sent);
  counter("shoal_project_forwards_served_total", "Forwarded admin requests this node ran.", c.forwards_served);
  counter("shoal_project_forwards_repeated_total", "Retried forwards answered from the kept reply, not run again.",
          c.forwards_repeated);
  return out;
}

// --- members -------------------------------------------------------------------

double ProjectService::weight_of(const gossip::Member& m) {
  core::HealthSignals signals;
  signals.reported = !m.health.version.empty();  // Every agent sends its version with its health.
  signals.free_disk_bytes = m.health.free_disk_bytes;
  signals.local_health = m.health.local_health;
  signals.stalled = m.stalled;
  return core::health_weight(signals);
}

std::vector<core::MemberInfo> ProjectService::member_infos() const {
  std::vector<core::MemberInfo> out;
  for (const gossip::Member& m : deps_.members()) {
    const bool gone = m.status == gossip::MemberStatus::kDead || m.status == gossip::MemberStatus::kLeft;
    out.push_back({m.id, m.dc, gone ? core::Liveness::kDead : core::Liveness::kAlive, weight_of(m)});
  }
  return out;
}

std::vector<core::Candidate> ProjectService::candidates() const {
  std::vector<core::Candidate> out;
  for (const gossip::Member& m : deps_.members()) {
    if (m.status == gossip::MemberStatus::kAlive) out.push_back({m.id, m.dc, weight_of(m)});
  }
  return out;
}

std::vector<NodeId> ProjectService::live_ids() const {
  std::vector<NodeId> out;
  for (const gossip::Member& m : deps_.members()) {
    if (m.status == gossip::MemberStatus::kAlive || m.status == gossip::MemberStatus::kSuspect) out.push_back(m.id);
  }
  return out;
}

std::string ProjectService::name_of(const NodeId& id) const {
  for (const gossip::Member& m : deps_.members()) {
    if (m.id == id) return m.name;
  }
  return id.short_hex();
}

json ProjectService::placement_json(const core::RegisterValue& value) const {
  const core::Placement& p = value.placement;
  json replicas = json::array();
  json replica_ids = json::array();
  for (const NodeId& r : p.replicas) {
    replicas.push_back(name_of(r));
    replica_ids.push_back(r.to_hex());
  }
  return json{{"project", p.project},
              {"generation", value.closed ? value.generation + 1 : value.generation},
              {"version", p.version},
              {"epoch", p.epoch},
              {"primary", name_of(p.primary)},
              {"primary_id", p.primary.to_hex()},
              {"replicas", replicas},
              {"replica_ids", replica_ids},
              {"state", std::string(core::project_state_name(p.state))},
              {"last_ack", {{"snapshot", p.last_ack.seq == 0 ? "" : hex_of(p.last_ack.id)}, {"seq", p.last_ack.seq}}},
              {"preferred_dc", p.preferred_dc},
              {"quota_bytes", p.quota_bytes}};
}

void ProjectService::publish_placement(const core::RegisterValue& value, std::string_view why) {
  if (!deps_.publish) return;
  json line{{"time", rfc3339_utc_ms(std::chrono::system_clock::now())},
            {"event", "placement"},
            {"why", why},
            {"placement", placement_json(value)}};
  deps_.publish(line.dump() + "\n");
}

// --- operations ------------------------------------------------------------------

ProjectService::Operation& ProjectService::new_operation(std::string kind, std::string project) {
  while (operations_.size() >= kOperationsKept) {
    // Drop the oldest finished one; running ones are kept.
    auto it = std::find_if(operations_.begin(), operations_.end(),
                           [](const auto& entry) { return entry.second.state != "running"; });
    if (it == operations_.end()) break;
    operations_.erase(it);
  }
  Operation& op = operations_[next_op_];
  op.id = next_op_++;
  op.kind = std::move(kind);
  op.project = std::move(project);
  return op;
}

void ProjectService::succeed(std::uint64_t id, json result) {
  auto it = operations_.find(id);
  if (it == operations_.end()) return;
  it->second.state = "done";
  it->second.result = std::move(result);
}

void ProjectService::fail(std::uint64_t id, const Error& error) {
  auto it = operations_.find(id);
  if (it == operations_.end()) return;
  it->second.state = "failed";
  it->second.error = error.message;
  it->second.code = std::string(code_name(error.code));
  spdlog::info("project {}: {} failed: {}", it->second.project, it->second.kind, error.message);
}

AdminReply ProjectService::started(const Operation& op) const {
  return reply_json(json{{"operation", op.id}, {"project", op.project}, {"kind", op.kind}}, 202);
}

std::optional<AdminReply> ProjectService::handle(const HttpRequest& request) { return handle_request(request, false); }

std::optional<AdminReply> ProjectService::handle_request(const HttpRequest& request, bool forwarded) {
  const std::string& path = request.path;
  const bool get = request.method == "GET";
  const bool post = request.method == "POST";

  if (path.starts_with("/v1/operations/")) {
    if (!get) return reply_error(405, "use GET");
    std::uint64_t id = 0;
    try {
      id = std::stoull(path.substr(std::string_view("/v1/operations/").size()));
    } catch (const std::exception&) {
      return reply_error(400, "operation ids are numbers");
    }
    auto it = operations_.find(id);
    if (it == operations_.end()) return reply_error(404, "no operation " + std::to_string(id) + " on this agent");
    const Operation& op = it->second;
    json body{{"id", op.id}, {"kind", op.kind}, {"project", op.project}, {"state", op.state}};
    if (op.state == "failed") {
      body["error"] = op.error;
      body["code"] = op.code;
    }
    if (op.state == "done") body["result"] = op.result;
    if (!op.forwarded_to.empty()) {
      body["forwarded"] = json{{"to", op.forwarded_to}, {"operation", op.remote_operation}};
    }
    return reply_json(body);
  }

  if (path == "/v1/projects") {
    if (get) {
      auto values = deps_.placement->local_values();
      if (!values) return reply_error(500, values.error().message);
      json list = json::array();
      for (const auto& v : *values) list.push_back(placement_json(v));
      return reply_json(json{{"projects", list}});
    }
    if (!post) return reply_error(405, "use GET or POST");
    auto body = parse_json_body(request);
    if (!body) return reply_error(400, body.error().message);
    std::string id;
    std::string dc = deps_.self_dc;
    std::uint64_t quota = 0;
    std::optional<std::string> from;
    try {
      if (body->contains("id") && !(*body)["id"].is_null()) id = (*body)["id"].get<std::string>();
      if (body->contains("dc") && !(*body)["dc"].is_null()) dc = (*body)["dc"].get<std::string>();
      if (body->contains("quota_bytes")) quota = (*body)["quota_bytes"].get<std::uint64_t>();
      if (body->contains("from") && !(*body)["from"].is_null()) from = (*body)["from"].get<std::string>();
    } catch (const json::exception&) {
      return reply_error(400, "id, dc and from are strings; quota_bytes is a number");
    }
    if (id.empty()) {
      std::array<std::uint8_t, 5> random{};
      deps_.random->fill(random);
      id = "p-" + to_hex(ByteView(random.data(), random.size()));
    }
    if (auto valid = core::validate_project_id(id); !valid) return reply_error(400, valid.error().message);
    if (from) {
      std::error_code ec;
      if (!from->starts_with("/") || !std::filesystem::is_directory(*from, ec)) {
        return reply_error(400, "from: " + *from + " is not an absolute path to a directory this agent can read");
      }
    }
    Operation& op = new_operation("create", id);
    const std::uint64_t op_id = op.id;
    AdminReply reply = started(op);
    start_create(op_id, id, dc, quota, from);
    return reply;
  }

  std::string project;
  std::string verb;
  if (!split_project_path(path, project, verb)) return std::nullopt;
  if (auto valid = core::validate_project_id(project); !valid) return reply_error(400, valid.error().message);

  if (verb == "snapshots") {
    if (!get) return reply_error(405, "use GET");
    auto list = deps_.transfers->store().list(project);
    if (!list) return reply_error(500, list.error().message);
    json out = json::array();
    for (const auto& s : *list) {
      out.push_back(json{{"id", hex_of(s.id)},
                         {"time_ns", s.commit.time_ns},
                         {"files", s.commit.files},
                         {"logical_bytes", s.commit.logical_bytes},
                         {"epoch", s.commit.epoch}});
    }
    return reply_json(json{{"project", project}, {"snapshots", out}});
  }
  if (!post) return reply_error(405, "use POST");
  if (verb == "status") {
    Operation& op = new_operation("status", project);
    AdminReply reply = started(op);
    start_status(op.id, project);
    return reply;
  }
  if (verb == "read") {
    Operation& op = new_operation("read", project);
    AdminReply reply = started(op);
    start_read(op.id, project);
    return reply;
  }
  if (verb == "save") {
    Operation& op = new_operation("save", project);
    AdminReply reply = started(op);
    const std::uint64_t id = op.id;
    run_on_primary(id, request, forwarded, [this, id, project] { start_save(id, project); });
    return reply;
  }
  if (verb == "open" || verb == "delete") {
    Operation& op = new_operation(verb, project);
    AdminReply reply = started(op);
    const std::uint64_t id = op.id;
    const core::ProjectState state = verb == "open" ? core::ProjectState::kRunning : core::ProjectState::kDeleted;
    run_on_primary(id, request, forwarded, [this, id, project, state] { start_set_state(id, project, state); });
    return reply;
  }
  if (verb == "stop" || verb == "move") {
    auto body = parse_json_body(request);
    if (!body) return reply_error(400, body.error().message);
    // Read the body before an operation exists, so a bad one leaves none behind.
    bool remove_workdir = false;
    std::string to;
    try {
      remove_workdir = body->value("remove_workdir", false);
      to = body->value("to", std::string());
    } catch (const json::exception&) {
      return reply_error(400, "remove_workdir is a boolean; to is a node name or id prefix");
    }
    if (verb == "move" && to.empty()) return reply_error(400, "move needs {\"to\": NODE}");
    Operation& op = new_operation(verb, project);
    AdminReply reply = started(op);
    const std::uint64_t id = op.id;
    run_on_primary(id, request, forwarded, [this, id, project, remove_workdir, to, stop = verb == "stop"] {
      if (stop) return start_stop(id, project, remove_workdir);
      start_move(id, project, to);
    });
    return reply;
  }
  if (verb == "restore") {
    auto body = parse_json_body(request);
    if (!body) return reply_error(400, body.error().message);
    std::string to;
    std::string snapshot = "latest-acked";
    try {
      to = body->value("to", std::string());
      snapshot = body->value("snapshot", snapshot);
    } catch (const json::exception&) {
      return reply_error(400, "to and snapshot are strings");
    }
    if (!to.starts_with("/")) return reply_error(400, "to: an absolute path of a new or empty directory is required");
    Operation& op = new_operation("restore", project);
    AdminReply reply = started(op);
    start_restore(op.id, project, to, snapshot);
    return reply;
  }
  return reply_error(404, "unknown project route " + path);
}

// --- forwarding to the primary ----------------------------------------------------
//
// save, open, stop, delete and move act on a project's primary (it holds the
// working directory). The admin API listens on loopback only, so an agent
// that is not the primary forwards such a request over the placement
// datagrams, then mirrors the operation it started there by polling it.

void ProjectService::run_on_primary(std::uint64_t op, const HttpRequest& request, bool forwarded,
                                    std::function<void()> local) {
  // A forwarded request runs here whatever this node now believes: sending
  // it on again could bounce it between two nodes with different views.
  if (forwarded) return local();
  const std::string project = operations_.at(op).project;
  read_register(project, [this, op, project, request, local](Result<core::RegisterValue> read) {
    if (!read) return fail(op, read.error());
    const NodeId primary = read->placement.primary;
    if (primary == deps_.self || read->placement.state == core::ProjectState::kDeleted) return local();
    forward_operation(op, primary, request);
  });
}

void ProjectService::forward_operation(std::uint64_t op, const NodeId& primary, const HttpRequest& request) {
  auto it = operations_.find(op);
  if (it == operations_.end()) return;
  const std::string project = it->second.project;
  const std::string name = name_of(primary);
  it->second.forwarded_to = name;
  spdlog::info("project {}: {} forwarded to the primary {}", project, it->second.kind, name);
  deps_.placement->forward(
      primary, project, request.method, request.path, request.body, monotonic_now(),
      [this, op, primary](Result<PlacementService::ForwardAnswer> answer) { on_forward_started(op, primary, answer); });
}

void ProjectService::on_forward_started(std::uint64_t op, const NodeId& primary,
                                        const Result<PlacementService::ForwardAnswer>& answer) {
  auto it = operations_.find(op);
  if (it == operations_.end()) return;
  const std::string name = it->second.forwarded_to;
  if (!answer) return fail(op, unreachable(name, answer.error()));
  auto remote = remote_operation_id(*answer);
  if (!remote) return fail(op, Error{remote.error().code, "the primary " + name + ": " + remote.error().message});
  it->second.remote_operation = *remote;
  remote_polls_[op] = RemotePoll{primary, *remote, monotonic_now() + kRemotePollInterval, false};
}

Result<std::uint64_t> ProjectService::remote_operation_id(const PlacementService::ForwardAnswer& answer) {
  json body = json::parse(answer.body, nullptr, false);
  if (answer.status != 202) return make_error(code_of_status(answer.status), remote_error_message(answer.status, body));
  if (!body.is_object() || !body.contains("operation") || !body["operation"].is_number_unsigned()) {
    return make_error(Code::kInternal, "answered 202 without an operation id");
  }
  return body["operation"].get<std::uint64_t>();
}

std::string ProjectService::remote_error_message(std::uint64_t status, const json& body) {
  if (body.is_object() && body.contains("error") && body["error"].is_string()) return body["error"].get<std::string>();
  return "answered HTTP " + std::to_string(status);
}

Error ProjectService::unreachable(const std::string& primary_name, const Error& why) {
  return Error{Code::kUnavailable, "the primary " + primary_name + " is unavailable (" + why.message +
                                       "); the operation there may still complete: see `shoal where`"};
}

void ProjectService::poll_forwarded(Instant now) {
  // Collected first: a reply may end a poll (and erase it) in-line.
  std::vector<std::uint64_t> due;
  for (const auto& [op, poll] : remote_polls_) {
    if (!poll.in_flight && now >= poll.next) due.push_back(op);
  }
  for (std::uint64_t op : due) {
    auto it = operations_.find(op);
    if (it == operations_.end()) {
      remote_polls_.erase(op);  // Dropped from the kept operations.
      continue;
    }
    RemotePoll& poll = remote_polls_.at(op);
    poll.in_flight = true;
    const std::string path = "/v1/operations/" + std::to_string(poll.remote_operation);
    deps_.placement->forward(
        poll.primary, it->second.project, "GET", path, "", now,
        [this, op](Result<PlacementService::ForwardAnswer> answer) { on_remote_state(op, answer); });
  }
}

void ProjectService::on_remote_state(std::uint64_t op, const Result<PlacementService::ForwardAnswer>& answer) {
  auto poll = remote_polls_.find(op);
  auto it = operations_.find(op);
  if (poll == remote_polls_.end() || it == operations_.end()) {
    if (poll != remote_polls_.end()) remote_polls_.erase(poll);
    return;
  }
  const std::string name = it->second.forwarded_to;
  auto finish = [&] { remote_polls_.erase(poll); };
  if (!answer) {
    finish();
    return fail(op, unreachable(name, answer.error()));
  }
  const json body = json::parse(answer->body, nullptr, false);
  if (answer->status != 200 || !body.is_object() || !body.contains("state") || !body["state"].is_string()) {
    finish();
    return fail(op, Error{Code::kUnavailable, "the primary " + name + " lost the operation: " +
                                                  remote_error_message(answer->status, body)});
  }
  const std::string state = body["state"].get<std::string>();
  if (state == "running") {
    poll->second.in_flight = false;
    poll->second.next = monotonic_now() + kRemotePollInterval;
    return;
  }
  finish();
  if (state == "done") return succeed(op, body.value("result", json()));
  // Keep the remote code (e.g. kFailedPrecondition), so the CLI's exit code matches a local run.
  fail(op, Error{code_from_name(body.value("code", std::string())), body.value("error", std::string("failed"))});
}

PlacementService::ForwardAnswer ProjectService::serve_forward(const NodeId& from, const core::Forward& request) {
  // Only what a forwarding agent sends: the five primary operations and
  // polls of the operations they started. Anything else is refused.
  std::string project;
  std::string verb;
  const bool operation_poll = request.method == "GET" && request.path.starts_with("/v1/operations/");
  const bool primary_op = request.method == "POST" && split_project_path(request.path, project, verb) &&
                          project == request.project && forwarded_verb(verb);
  if (!operation_poll && !primary_op) {
    return {403, json{{"error", request.method + " " + request.path + " is not forwarded between agents"}}.dump()};
  }
  if (primary_op) spdlog::info("project {}: running a {} forwarded by {}", project, verb, name_of(from));
  HttpRequest http{request.method, request.path, {}, {}, request.body};
  std::optional<AdminReply> reply = handle_request(http, true);
  if (!reply) return {404, json{{"error", "unknown route " + request.path}}.dump()};
  return {static_cast<std::uint64_t>(reply->response.status), reply->response.body};
}

// --- building blocks -------------------------------------------------------------

void ProjectService::snapshot_dir(const std::string& project, const std::string& dir, std::uint64_t epoch,
                                  std::function<void(Result<json>)> done) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::vector<std::string> argv = {self_executable(), "snapshot", "create", "--store",
                                         deps_.data_dir + "/store", "--project", project,
                                         "--epoch", std::to_string(epoch), "--json", dir};
  auto started = run_process(deps_.loop, argv, [done, project](ProcessResult r) {
    if (r.exit_code != 0) {
      done(make_error(Code::kIOError, "snapshot of " + project + " failed: " +
                                          (r.err.empty() ? "exit " + std::to_string(r.exit_code) : r.err.substr(0, 400))));
      return;
    }
    try {
      done(json::parse(r.out));
    } catch (const json::exception& e) {
      done(make_error(Code::kInternal, std::string("snapshot output unreadable: ") + e.what()));
    }
  });
  if (!started) done(std::unexpected(started.error()));
}

void ProjectService::restore_snapshot(const std::string& project, const std::string& snapshot_hex,
                                      const std::string& to, bool force, std::function<void(Status)> done) {
  // Like `mkdir -p` for the parent: the target itself must be new or empty.
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(to).parent_path(), ec);
  std::vector<std::string> argv = {self_executable(), "snapshot", "restore", "--store", deps_.data_dir + "/store",
                                   "--project", project, "--snapshot", snapshot_hex, "--to", to};
  if (force) argv.push_back("--force");
  auto started = run_process(deps_.loop, argv, [done, project](ProcessResult r) {
    if (r.exit_code != 0) {
      done(make_error(Code::kIOError, "restore of " + project + " failed: " +
                                          (r.err.empty() ? "exit " + std::to_string(r.exit_code) : r.err.substr(0, 400))));
      return;
    }
    done(ok_status());
  });
  if (!started) done(started);
}

void ProjectService::push_to(const std::string& project, const std::string& snapshot_hex,
                             const std::vector<NodeId>& to, std::function<void(std::vector<NodeId>)> done) {
  TransferWait wait;
  wait.done = std::move(done);
  for (const NodeId& node : to) {
    ReplicateRequest request;
    request.project = project;
    request.snapshot = snapshot_hex;
    request.to = node.to_hex();
    auto id = deps_.transfers->replicate(request);
    if (!id) {
      spdlog::warn("project {}: cannot copy {} to {}: {}", project, snapshot_hex.substr(0, 12), name_of(node),
                   id.error().message);
      continue;
    }
    wait.ids.push_back(*id);
    wait.nodes.push_back(node);
  }
  if (wait.ids.empty()) {
    wait.done({});
    return;
  }
  transfer_waits_.push_back(std::move(wait));
}

bool ProjectService::enough_holders(const std::vector<NodeId>& replicas, const std::vector<NodeId>& holders) const {
  std::size_t listed = 0;
  std::set<std::string> replica_dcs;
  std::set<std::string> holder_dcs;
  const auto members = deps_.members();
  auto dc_of = [&](const NodeId& id) -> std::string {
    for (const gossip::Member& m : members) {
      if (m.id == id) return m.dc;
    }
    return "";
  };
  for (const NodeId& r : replicas) replica_dcs.insert(dc_of(r));
  for (const NodeId& h : holders) {
    if (std::find(replicas.begin(), replicas.end(), h) == replicas.end()) continue;
    ++listed;
    holder_dcs.insert(dc_of(h));
  }
  return listed >= core::majority_of(replicas.size()) && holder_dcs.size() >= std::min<std::size_t>(2, replica_dcs.size());
}

bool ProjectService::holds(const std::string& project, const core::SnapshotRef& ref) {
  if (ref.seq == 0) return true;  // Nothing acknowledged yet: nothing to hold.
  auto found = deps_.transfers->store().find(hex_of(ref.id), project);
  return found.has_value();
}

void ProjectService::read_register(const std::string& project,
                                   std::function<void(Result<core::RegisterValue>)> done) {
  // A change that returns the value unchanged: the committed placement, read
  // through a majority (linearizable), or an error.
  submit_change(project, [](const std::optional<core::Placement>& current) -> Result<core::Placement> {
    if (!current) return make_error(Code::kNotFound, "no such project");
    return *current;
  }, std::move(done));
}

void ProjectService::submit_change(const std::string& project, core::ChangeFn change,
                                   std::function<void(Result<core::RegisterValue>)> done) {
  deps_.placement->change(project, std::nullopt, live_ids(), std::move(change), monotonic_now(), std::move(done));
}

// --- operations --------------------------------------------------------------------

void ProjectService::start_read(std::uint64_t op, const std::string& project) {
  read_register(project, [this, op](Result<core::RegisterValue> r) {
    if (!r) return fail(op, r.error());
    succeed(op, placement_json(*r));
  });
}

void ProjectService::start_status(std::uint64_t op, const std::string& project) {
  read_register(project, [this, op, project](Result<core::RegisterValue> read) {
    if (!read) return fail(op, read.error());
    const core::RegisterValue value = *read;
    deps_.placement->inquire(project, value.placement.last_ack.id, value.placement.replicas, monotonic_now(),
                             [this, op, value](PlacementService::Answers answers) {
      const core::Placement& p = value.placement;
      json result = placement_json(value);
      json replicas = json::array();
      for (const NodeId& r : p.replicas) {
        json entry{{"name", name_of(r)}, {"id", r.to_hex()}, {"primary", r == p.primary}};
        auto it = answers.find(r);
        if (it == answers.end()) {
          entry["answered"] = false;  // Down, cut off, or slow: unknown, not "behind".
        } else {
          entry["answered"] = true;
          entry["snapshots"] = it->second.snapshots;
          entry["newest"] = it->second.snapshots == 0 ? "" : hex_of(it->second.newest);
          entry["holds_last_ack"] = p.last_ack.seq == 0 || it->second.holds;
        }
        replicas.push_back(entry);
      }
      result["replica_status"] = replicas;
      if (p.primary == deps_.self) result["workdir"] = working_dir(p.project);
      result["saving"] = saving_.contains(p.project);
      succeed(op, result);
    });
  });
}

void ProjectService::start_create(std::uint64_t op, std::string project, std::string dc, std::uint64_t quota,
                                  std::optional<std::string> from) {
  core::Target target = core::rank_placement(project, candidates(), dc, kReplicationFactor);
  if (target.replicas.empty()) return fail(op, Error{Code::kUnavailable, "no healthy member to place the project on"});
  if (dc == deps_.self_dc) {
    // Created here, with the data here: this node is the primary.
    auto self_at = std::find(target.replicas.begin(), target.replicas.end(), deps_.self);
    if (self_at == target.replicas.end()) {
      target.replicas.front() = deps_.self;
    } else {
      std::rotate(target.replicas.begin(), self_at, self_at + 1);
    }
    target.primary = deps_.self;
  }
  auto with_snapshot = [this, op, project, dc, quota, target](std::optional<json> snapshot) {
    core::SnapshotRef first;
    if (snapshot) {
      first.id = *parse_hash((*snapshot)["id"].get<std::string>());
      first.seq = 1;
      first.epoch = 1;
    }
    auto commit = [this, op, project, dc, quota, target, first, snapshot](std::size_t holders) {
      const std::size_t needed = core::majority_of(target.replicas.size());
      if (first.seq > 0 && holders < needed) {
        return fail(op, Error{Code::kUnavailable, "the first snapshot reached only " + std::to_string(holders) +
                                                      " of " + std::to_string(target.replicas.size()) +
                                                      " replicas; the project was not created"});
      }
      core::Hint hint{0, target.replicas};
      deps_.placement->change(project, hint, {}, [=](const std::optional<core::Placement>& current) -> Result<core::Placement> {
        if (current) return make_error(Code::kAlreadyExists, "project " + project + " already exists");
        core::Placement p;
        p.project = project;
        p.epoch = 1;
        p.primary = target.primary;
        p.replicas = target.replicas;
        p.state = core::ProjectState::kRunning;  // Open on its primary from the start.
        p.last_ack = first;
        p.preferred_dc = dc;
        p.quota_bytes = quota;
        return p;
      }, monotonic_now(), [this, op, snapshot](Result<core::RegisterValue> r) {
        if (!r) return fail(op, r.error());
        publish_placement(*r, "created");
        json result = placement_json(*r);
        if (snapshot) result["snapshot"] = *snapshot;
        succeed(op, result);
        next_repair_ = Instant{};  // Materialise the working directory soon.
      });
    };
    if (!snapshot) return commit(0);
    std::vector<NodeId> others;
    std::size_t holders = 0;
    for (const NodeId& r : target.replicas) {
      if (r == deps_.self) {
        ++holders;
      } else {
        others.push_back(r);
      }
    }
    push_to(project, (*snapshot)["id"].get<std::string>(), others,
            [commit, holders](std::vector<NodeId> copied) { commit(holders + copied.size()); });
  };
  // Refuse ids some reachable node already knows.
  deps_.placement->locate(project, live_ids(), monotonic_now(),
                          [this, op, project, from, with_snapshot](std::optional<core::Hint> known) {
    if (known) return fail(op, Error{Code::kAlreadyExists, "project " + project + " already exists"});
    if (!from) return with_snapshot(std::nullopt);
    snapshot_dir(project, *from, 1, [this, op, with_snapshot](Result<json> s) {
      if (!s) return fail(op, s.error());
      with_snapshot(*s);
    });
  });
}

void ProjectService::start_save(std::uint64_t op, const std::string& project) {
  save(project, [this, op](Result<json> r) {
    if (!r) return fail(op, r.error());
    succeed(op, *r);
  });
}

void ProjectService::save(const std::string& project, std::function<void(Result<json>)> done) {
  if (saving_.contains(project)) {
    return done(make_error(Code::kFailedPrecondition, "a save of " + project + " is already running on this node"));
  }
  saving_.insert(project);
  auto finish = [this, project, done](Result<json> r) {
    saving_.erase(project);
    if (r) {
      last_save_[project] = monotonic_now();
      ++saves_ok_;
    } else {
      ++saves_failed_;
    }
    done(std::move(r));
  };
  read_register(project, [this, project, finish](Result<core::RegisterValue> read) {
    if (!read) return finish(std::unexpected(read.error()));
    const core::Placement placement = read->placement;
    if (placement.state == core::ProjectState::kDeleted) {
      return finish(make_error(Code::kNotFound, "project " + project + " was deleted"));
    }
    if (placement.primary != deps_.self) {
      return finish(make_error(Code::kFailedPrecondition, "this node is not the primary of " + project +
                                                              "; the primary is " + name_of(placement.primary) +
                                                              " (run `shoal project save` against that node's agent)"));
    }
    const std::uint64_t epoch = placement.epoch;
    // The project's quota (a live-size limit) is enforced by the store the
    // snapshot goes into: the save child refuses to exceed it, naming it.
    if (auto set = deps_.transfers->store().set_quota(project, storage::Quota{placement.quota_bytes, 0}); !set) {
      return finish(std::unexpected(set.error()));
    }
    snapshot_dir(project, working_dir(project), epoch, [this, project, placement, epoch, finish](Result<json> s) {
      if (!s) return finish(std::unexpected(s.error()));
      const std::string snapshot_hex = (*s)["id"].get<std::string>();
      std::vector<NodeId> others;
      for (const NodeId& r : placement.replicas) {
        if (r != deps_.self) others.push_back(r);
      }
      const json snapshot = *s;
      push_to(project, snapshot_hex, others, [this, project, placement, epoch, snapshot, snapshot_hex, finish](std::vector<NodeId> holders) {
        holders.push_back(deps_.self);
        if (!enough_holders(placement.replicas, holders)) {
          return finish(make_error(Code::kUnavailable, "snapshot " + snapshot_hex.substr(0, 12) + " reached only " +
                                                           std::to_string(holders.size()) + " of " +
                                                           std::to_string(placement.replicas.size()) +
                                                           " replicas (a majority in two data centers is needed);"
                                                           " the save is not acknowledged"));
        }
        const Hash256 id = *parse_hash(snapshot_hex);
        const NodeId self = deps_.self;
        const std::vector<NodeId> replicas = placement.replicas;
        submit_change(project, [self, epoch, id, replicas](const std::optional<core::Placement>& current) -> Result<core::Placement> {
          if (!current) return make_error(Code::kNotFound, "no such project");
          if (current->primary != self || current->epoch != epoch) {
            return make_error(Code::kFailedPrecondition, "this node lost the epoch " + std::to_string(epoch) +
                                                             " while saving; the save is not acknowledged");
          }
          if (!core::same_node_set(current->replicas, replicas)) {
            // The holders were counted against the old set.
            return make_error(Code::kAborted, "the replica set changed during the save; save again");
          }
          core::Placement next = *current;
          if (next.last_ack.id != id) {
            next.last_ack = core::SnapshotRef{id, current->last_ack.seq + 1, epoch};
          }
          return next;
        }, [this, snapshot, finish](Result<core::RegisterValue> r) {
          if (!r) return finish(std::unexpected(r.error()));
          publish_placement(*r, "saved");
          if (deps_.holdings_changed) deps_.holdings_changed();
          json result{{"placement", placement_json(*r)}, {"snapshot", snapshot["id"]}};
          for (const char* key : {"files", "logical_bytes", "new_bytes"}) {
            if (snapshot.contains(key)) result[key] = snapshot[key];
          }
          finish(result);
        });
      });
    });
  });
}

void ProjectService::start_set_state(std::uint64_t op, const std::string& project, core::ProjectState state) {
  submit_change(project, [state](const std::optional<core::Placement>& current) -> Result<core::Placement> {
    if (!current) return make_error(Code::kNotFound, "no such project");
    if (current->state == core::ProjectState::kDeleted) return make_error(Code::kNotFound, "the project was deleted");
    core::Placement next = *current;
    next.state = state;
    return next;
  }, [this, op, state](Result<core::RegisterValue> r) {
    if (!r) return fail(op, r.error());
    publish_placement(*r, core::project_state_name(state));
    primary_checked_.erase(r->placement.project);
    next_repair_ = Instant{};
    succeed(op, placement_json(*r));
  });
}

void ProjectService::start_stop(std::uint64_t op, const std::string& project, bool remove_workdir) {
  save(project, [this, op, project, remove_workdir](Result<json> saved) {
    if (!saved) return fail(op, saved.error());
    const std::uint64_t epoch = (*saved)["placement"]["epoch"].get<std::uint64_t>();
    const NodeId self = deps_.self;
    submit_change(project, [self, epoch](const std::optional<core::Placement>& current) -> Result<core::Placement> {
      if (!current) return make_error(Code::kNotFound, "no such project");
      if (current->primary != self || current->epoch != epoch) {
        return make_error(Code::kFailedPrecondition, "this node lost the epoch while stopping");
      }
      core::Placement next = *current;
      next.state = core::ProjectState::kStopped;
      return next;
    }, [this, op, project, remove_workdir, saved](Result<core::RegisterValue> r) {
      if (!r) return fail(op, r.error());
      if (remove_workdir) {
        // Safe: the final save above is acknowledged by a majority.
        std::error_code ec;
        std::filesystem::remove_all(working_dir(project), ec);
      }
      publish_placement(*r, "stopped");
      json result = placement_json(*r);
      result["snapshot"] = (*saved)["snapshot"];
      succeed(op, result);
    });
  });
}

std::optional<gossip::Member> ProjectService::find_member(const std::string& spec) const {
  std::optional<gossip::Member> found;
  for (const gossip::Member& m : deps_.members()) {
    if (m.name == spec) return m;
    if (spec.size() >= 4 && m.id.to_hex().starts_with(spec)) {
      if (found) return std::nullopt;  // Ambiguous prefix.
      found = m;
    }
  }
  return found;
}

void ProjectService::start_move(std::uint64_t op, const std::string& project, std::string to) {
  const auto target = find_member(to);
  if (!target || target->status != gossip::MemberStatus::kAlive) {
    return fail(op, Error{Code::kInvalidArgument, "move: " + to + " is not an alive member (see shoal members)"});
  }
  read_register(project, [this, op, project, target](Result<core::RegisterValue> read) {
    if (!read) return fail(op, read.error());
    const core::Placement placement = read->placement;
    if (placement.primary != deps_.self) {
      return fail(op, Error{Code::kFailedPrecondition, "run the move on the primary of " + project + ", " +
                                                           name_of(placement.primary) + ": it holds the data to copy"});
    }
    if (placement.primary == target->id) return succeed(op, placement_json(*read));
    auto commit = [this, op, project, placement, target](std::vector<NodeId> copied) {
      if (placement.last_ack.seq > 0 && copied.size() != 1) {
        return fail(op, Error{Code::kUnavailable, "could not copy the acknowledged snapshot to " + target->name});
      }
      const NodeId to_id = target->id;
      const std::string to_dc = target->dc;
      const std::vector<core::MemberInfo> members = member_infos();
      const std::uint64_t epoch = placement.epoch;
      const core::SnapshotRef ack = placement.last_ack;
      const NodeId self = deps_.self;
      submit_change(project, [=](const std::optional<core::Placement>& current) -> Result<core::Placement> {
        if (!current) return make_error(Code::kNotFound, "no such project");
        if (current->primary != self || current->epoch != epoch || !(current->last_ack == ack)) {
          return make_error(Code::kAborted, "the project changed during the move; run it again");
        }
        core::Placement next = *current;
        if (!next.is_replica(to_id)) {
          // Take the slot of the replica in the target's DC, else of the
          // old primary (it stays a replica only if it had a DC slot).
          auto slot = std::find_if(next.replicas.begin(), next.replicas.end(), [&](const NodeId& r) {
            const core::MemberInfo* m = core::find_member(members, r);
            return r != self && m != nullptr && m->dc == to_dc;
          });
          if (slot == next.replicas.end()) slot = std::find(next.replicas.begin(), next.replicas.end(), self);
          *slot = to_id;
        }
        next.primary = to_id;
        next.epoch = current->epoch + 1;
        return next;
      }, [this, op](Result<core::RegisterValue> r) {
        if (!r) return fail(op, r.error());
        publish_placement(*r, "moved");
        succeed(op, placement_json(*r));
      });
    };
    if (placement.last_ack.seq == 0) return commit({});
    push_to(project, hex_of(placement.last_ack.id), {target->id}, commit);
  });
}

bool ProjectService::maybe_rebalance(const core::Placement& placement, const std::vector<core::MemberInfo>& members) {
  const Instant now = monotonic_now();
  if (deps_.rebalance_after.count() == 0 || now < next_rebalance_ || placement.last_ack.seq == 0) return false;
  // Only members alive for a while draw replicas: a node that flaps, or just
  // came back, does not pull data around.
  std::vector<core::MemberInfo> settled;
  bool self_degraded = false;
  for (const gossip::Member& m : deps_.members()) {
    if (m.id == deps_.self) self_degraded = weight_of(m) < 1.0;
    if (m.status == gossip::MemberStatus::kAlive && now - m.status_since >= deps_.rebalance_after) {
      settled.push_back({m.id, m.dc, core::Liveness::kAlive, weight_of(m)});
    }
  }
  if (self_degraded && maybe_hand_off_primary(placement, settled)) {
    next_rebalance_ = now + kRebalanceInterval;
    return true;
  }
  auto wanted = core::plan_rebalance(placement, settled, members, deps_.self);
  if (!wanted) return false;
  NodeId incoming;
  for (const NodeId& r : wanted->replicas) {
    if (!placement.is_replica(r)) incoming = r;
  }
  next_rebalance_ = now + kRebalanceInterval;
  const std::string project = placement.project;
  busy_.insert(project);
  spdlog::info("project {}: rebalancing a replica to {}", project, name_of(incoming));
  // Copy first, then switch: the new replica holds the acknowledged snapshot
  // before the register lists it, and the old one keeps its copy until the
  // obsolete-copy rule lets it go.
  push_to(project, hex_of(placement.last_ack.id), {incoming},
          [this, project, placement, wanted = *wanted](std::vector<NodeId> copied) {
    if (copied.empty()) {
      busy_.erase(project);
      return;
    }
    const NodeId self = deps_.self;
    submit_change(project, [placement, wanted, self](const std::optional<core::Placement>& current) -> Result<core::Placement> {
      if (!current) return make_error(Code::kNotFound, "no such project");
      if (current->primary != self || current->epoch != placement.epoch ||
          !core::same_node_set(current->replicas, placement.replicas) || !(current->last_ack == placement.last_ack)) {
        return make_error(Code::kAborted, "the project changed during the rebalance");
      }
      core::Placement next = *current;
      next.replicas = wanted.replicas;
      return next;
    }, [this, project](Result<core::RegisterValue> r) {
      busy_.erase(project);
      if (!r) {
        spdlog::info("project {}: rebalance not done: {}", project, r.error().message);
        return;
      }
      ++rebalanced_;
      publish_placement(*r, "rebalanced");
      primary_checked_.erase(project);
    });
  });
  return true;
}

// This node's disk is nearly full or its health is poor: hand the primary
// role to the best healthy settled node of its DC, as `shoal project move`
// would (copy the acknowledged snapshot, then epoch + 1 in its slot).
bool ProjectService::maybe_hand_off_primary(const core::Placement& placement,
                                            const std::vector<core::MemberInfo>& settled) {
  std::vector<core::Candidate> healthy;
  for (const core::MemberInfo& m : settled) {
    if (m.weight >= 1.0 && m.dc == deps_.self_dc) healthy.push_back({m.id, m.dc, m.weight});
  }
  const std::vector<NodeId> ranked = core::rank_in_dc(placement.project, healthy, deps_.self_dc);
  if (ranked.empty() || ranked.front() == deps_.self) return false;
  Operation& op = new_operation("move", placement.project);
  spdlog::warn("project {}: this node is degraded (disk nearly full or poor health): moving the primary to {} "
               "(operation {})", placement.project, name_of(ranked.front()), op.id);
  start_move(op.id, placement.project, ranked.front().to_hex());
  return true;
}

void ProjectService::periodic_saves(Instant now) {
  if (deps_.save_interval.count() == 0) return;
  auto values = deps_.placement->local_values();
  if (!values) return;
  for (const core::RegisterValue& value : *values) {
    const core::Placement& p = value.placement;
    if (p.primary != deps_.self || p.state != core::ProjectState::kRunning || saving_.contains(p.project)) continue;
    auto last = last_save_.try_emplace(p.project, now).first;  // First sight: a full interval from now.
    if (now - last->second < deps_.save_interval) continue;
    last->second = now;  // Also on failure: retry after another interval, not in a loop.
    save(p.project, [project = p.project](Result<json> r) {
      if (!r) {
        spdlog::warn("project {}: periodic save failed: {}", project, r.error().message);
      } else {
        spdlog::info("project {}: periodic save {} acknowledged", project,
                     (*r)["snapshot"].get<std::string>().substr(0, 12));
      }
    });
  }
}

void ProjectService::start_restore(std::uint64_t op, const std::string& project, std::string to, std::string snapshot) {
  auto run = [this, op, project, to](std::string snapshot_hex) {
    if (!deps_.transfers->store().find(snapshot_hex, project)) {
      return fail(op, Error{Code::kNotFound, "this node does not hold snapshot " + snapshot_hex.substr(0, 12) + " of " +
                                                 project + "; restore on one of its replicas (shoal where " + project + ")"});
    }
    restore_snapshot(project, snapshot_hex, to, false, [this, op, snapshot_hex, to](Status s) {
      if (!s) return fail(op, s.error());
      succeed(op, json{{"snapshot", snapshot_hex}, {"to", to}});
    });
  };
  if (snapshot != "latest-acked") return run(snapshot);
  read_register(project, [this, op, project, run](Result<core::RegisterValue> r) {
    if (!r) return fail(op, r.error());
    if (r->placement.last_ack.seq == 0) {
      return fail(op, Error{Code::kNotFound, "project " + project + " has no acknowledged snapshot yet"});
    }
    run(hex_of(r->placement.last_ack.id));
  });
}

// --- repair loop ----------------------------------------------------------------------

void ProjectService::on_catalog_changed(const NodeId& member) {
  if (member == deps_.self) return;
  auto values = deps_.placement->local_values();
  if (!values) return;
  for (const core::RegisterValue& value : *values) {
    const core::Placement& p = value.placement;
    if (p.is_replica(member) && p.is_replica(deps_.self) && p.primary != deps_.self) {
      auto it = pull_checked_.find(p.project);
      if (it != pull_checked_.end()) it->second = Instant{};  // Due now (not "first": no fresh read).
    }
  }
  next_repair_ = Instant{};
}

// This node's record may be old (it missed the accepts while it was down),
// so the first check after start reads the register afresh; later ones
// trust the record, which the accepts keep current while the node is up.
void ProjectService::maybe_pull(const core::Placement& placement, Instant now) {
  const std::string project = placement.project;
  if (collecting_.contains(project)) return;
  // Every kPrimaryCheckInterval per project (sooner after a catalog change):
  // holds() reads the store.
  auto checked = pull_checked_.find(project);
  const bool first = checked == pull_checked_.end();
  if (!first && now - checked->second < kPrimaryCheckInterval) return;
  pull_checked_[project] = now;
  if (!first) return pull_if_lacking(placement, now);
  busy_.insert(project);
  read_register(project, [this, project](Result<core::RegisterValue> r) {
    busy_.erase(project);
    if (!r || !r->placement.is_replica(deps_.self) || r->placement.primary == deps_.self) return;
    pull_if_lacking(r->placement, monotonic_now());
  });
}

void ProjectService::pull_if_lacking(const core::Placement& placement, Instant now) {
  const std::string project = placement.project;
  if (placement.last_ack.seq == 0 || busy_.contains(project) || holds(project, placement.last_ack)) return;
  std::vector<NodeId> others;
  for (const NodeId& r : placement.replicas) {
    if (r != deps_.self) others.push_back(r);
  }
  busy_.insert(project);
  const std::string snapshot_hex = hex_of(placement.last_ack.id);
  const NodeId primary = placement.primary;
  deps_.placement->inquire(project, placement.last_ack.id, others, now,
                           [this, project, snapshot_hex, primary](PlacementService::Answers answers) {
    // The primary first, it has the data and the freshest view.
    std::optional<NodeId> source;
    for (const auto& [node, answer] : answers) {
      if (answer.holds && (!source || node == primary)) source = node;
    }
    if (!source) {
      busy_.erase(project);
      return;
    }
    ReplicateRequest request;
    request.project = project;
    request.snapshot = snapshot_hex;
    request.from = source->to_hex();
    auto id = deps_.transfers->replicate(request);
    if (!id) {
      busy_.erase(project);
      spdlog::info("project {}: cannot pull {} from {}: {}", project, snapshot_hex.substr(0, 12), name_of(*source),
                   id.error().message);
      return;
    }
    spdlog::info("project {}: pulling the acknowledged snapshot {} from {}", project, snapshot_hex.substr(0, 12),
                 name_of(*source));
    TransferWait wait;
    wait.ids.push_back(*id);
    wait.nodes.push_back(*source);
    wait.done = [this, project](std::vector<NodeId> done) {
      busy_.erase(project);
      if (done.empty()) return;
      ++pulls_;
      if (deps_.holdings_changed) deps_.holdings_changed();
    };
    transfer_waits_.push_back(std::move(wait));
  });
}

void ProjectService::tick(Instant now) {
  // Finished transfer waits.
  for (std::size_t i = 0; i < transfer_waits_.size();) {
    TransferWait& wait = transfer_waits_[i];
    std::size_t finished = 0;
    std::vector<NodeId> holders;
    for (std::size_t k = 0; k < wait.ids.size(); ++k) {
      auto info = deps_.transfers->transfer(wait.ids[k]);
      if (!info) {
        ++finished;  // Forgotten: count as failed.
        continue;
      }
      if (info->state == TransferState::kDone) {
        ++finished;
        holders.push_back(wait.nodes[k]);
      } else if (info->state == TransferState::kFailed) {
        ++finished;
      }
    }
    if (finished == wait.ids.size()) {
      auto done = std::move(wait.done);
      transfer_waits_.erase(transfer_waits_.begin() + static_cast<std::ptrdiff_t>(i));
      done(std::move(holders));
      continue;
    }
    ++i;
  }
  poll_forwarded(now);
  if (now >= next_repair_) {
    next_repair_ = now + kRepairInterval;
    repair(now);
  }
  if (now >= next_periodic_) {
    next_periodic_ = now + kRepairInterval;
    periodic_saves(now);
  }
  if (now >= next_obsolete_scan_) {
    next_obsolete_scan_ = now + kObsoleteCheckInterval / 2;  // Lists the whole store: not every second.
    collect_obsolete(now);
  }
}

void ProjectService::repair(Instant now) {
  auto values = deps_.placement->local_values();
  if (!values) {
    spdlog::warn("repair: cannot read the placement table: {}", values.error().message);
    return;
  }
  for (const core::RegisterValue& value : *values) {
    if (!value.placement.is_replica(deps_.self) || busy_.contains(value.placement.project)) continue;
    if (value.placement.state == core::ProjectState::kDeleted) continue;
    repair_one(value.placement, now);
  }
}

void ProjectService::repair_one(const core::Placement& placement, Instant now) {
  const std::string project = placement.project;
  const std::vector<core::MemberInfo> members = member_infos();
  const NodeId self = deps_.self;
  auto release = [this, project] { busy_.erase(project); };

  if (placement.primary != self) {
    // A primary that died while this node was away is absent, never dead, in
    // its view; once the view has settled that counts as gone.
    const bool absent_is_gone = now - started_ >= kViewSettledAfter;
    const bool primary_gone = core::confirmed_dead(members, placement.primary) ||
                              (absent_is_gone && core::find_member(members, placement.primary) == nullptr);
    if (!primary_gone) {
      primary_dead_since_.erase(project);
      maybe_pull(placement, now);
      return;
    }
    auto [since, fresh] = primary_dead_since_.try_emplace(project, now);
    const bool grace = now - since->second >= kFailoverGrace;
    const bool have = holds(project, placement.last_ack);
    if (!core::plan_failover(placement, members, self, have, grace, absent_is_gone)) return;
    busy_.insert(project);
    const NodeId dead = placement.primary;
    const std::uint64_t epoch = placement.epoch;
    const core::SnapshotRef ack = placement.last_ack;  // Checked above: this node holds it.
    spdlog::info("project {}: primary {} is dead; taking over at epoch {}", project, name_of(dead), epoch + 1);
    submit_change(project, [members, self, dead, epoch, ack, absent_is_gone](const std::optional<core::Placement>& current) -> Result<core::Placement> {
      if (!current) return make_error(Code::kNotFound, "no such project");
      // A save acknowledged after our record keeps primary and epoch but
      // moves last_ack: then we may lack it, and must not take over.
      if (current->primary != dead || current->epoch != epoch || !(current->last_ack == ack)) {
        return make_error(Code::kAborted, "the placement changed meanwhile");
      }
      auto next = core::plan_failover(*current, members, self, true, true, absent_is_gone);
      if (!next) return make_error(Code::kAborted, "failover no longer applies");
      return *next;
    }, [this, project, release](Result<core::RegisterValue> r) {
      release();
      if (!r) {
        spdlog::info("project {}: failover not done: {}", project, r.error().message);
        return;
      }
      primary_dead_since_.erase(project);
      ++failovers_;
      spdlog::info("project {}: this node is primary at epoch {}", project, r->placement.epoch);
      publish_placement(*r, "failover");
      primary_checked_.erase(project);
      next_repair_ = Instant{};
    });
    return;
  }

  // This node is primary as far as its own records say; they may be stale
  // (it was down while the project moved), so act only on a fresh read.
  auto checked = primary_checked_.find(project);
  if (checked != primary_checked_.end() && now - checked->second < kPrimaryCheckInterval) return;
  primary_checked_[project] = now;
  busy_.insert(project);
  read_register(project, [this, project, release](Result<core::RegisterValue> r) {
    release();
    if (!r) return;
    if (r->placement.primary != deps_.self) return;
    act_as_primary(r->placement);
  });
}

void ProjectService::act_as_primary(const core::Placement& placement) {
  const std::string project = placement.project;
  const std::vector<core::MemberInfo> members = member_infos();
  const NodeId self = deps_.self;
  auto release = [this, project] { busy_.erase(project); };
  if (busy_.contains(project)) return;
  // Forget copies made to nodes that left the set: if one is added back
  // later (after dropping its copy), it must be copied to again.
  const std::string prefix = project + "/";
  for (auto it = pushed_seq_.lower_bound(prefix); it != pushed_seq_.end() && it->first.starts_with(prefix);) {
    const bool listed = std::any_of(placement.replicas.begin(), placement.replicas.end(),
                                    [&](const NodeId& r) { return it->first == prefix + r.to_hex(); });
    it = listed ? std::next(it) : pushed_seq_.erase(it);
  }
  std::error_code ec;
  // After a settling time our member view is complete: a listed replica
  // missing from it died while this node was away (gossip does not relay the
  // death of members it never knew), and is replaced like a dead one.
  const bool absent_is_gone = monotonic_now() - started_ >= kViewSettledAfter;
  const core::PrimaryPlan plan = core::plan_primary_step(
      placement, members, self, holds(project, placement.last_ack),
      // Only a running project has its working directory opened.
      std::filesystem::exists(working_dir(project), ec) || placement.state != core::ProjectState::kRunning,
      [&](const NodeId& r) {
        auto it = pushed_seq_.find(project + "/" + r.to_hex());
        return it != pushed_seq_.end() && it->second >= placement.last_ack.seq;
      },
      absent_is_gone);
  const std::string snapshot_hex = hex_of(placement.last_ack.id);
  switch (plan.step) {
    case core::PrimaryStep::kNothing:
      maybe_rebalance(placement, members);
      return;
    case core::PrimaryStep::kReplaceDead: {
      busy_.insert(project);
      const std::uint64_t epoch = placement.epoch;
      submit_change(project, [members, self, epoch, absent_is_gone](const std::optional<core::Placement>& current) -> Result<core::Placement> {
        if (!current) return make_error(Code::kNotFound, "no such project");
        if (current->primary != self || current->epoch != epoch) return make_error(Code::kAborted, "no longer primary");
        auto next = core::plan_replace_dead(*current, members, self, absent_is_gone);
        if (!next) return make_error(Code::kAborted, "nothing to replace any more");
        return *next;
      }, [this, project, release](Result<core::RegisterValue> r) {
        release();
        if (!r) {
          spdlog::info("project {}: replica replacement not done: {}", project, r.error().message);
          return;
        }
        ++replicas_replaced_;
        spdlog::info("project {}: replica set is now generation {}", project, r->generation);
        publish_placement(*r, "replica-replaced");
        primary_checked_.erase(project);
        next_repair_ = Instant{};
      });
      return;
    }
    case core::PrimaryStep::kOpenWorkdir:
      busy_.insert(project);
      std::filesystem::create_directories(deps_.data_dir + "/projects", ec);
      restore_snapshot(project, snapshot_hex, working_dir(project), false, [this, project, release](Status s) {
        release();
        primary_checked_.erase(project);  // Continue with the copies at once.
        if (!s) spdlog::warn("project {}: cannot open the working directory: {}", project, s.error().message);
      });
      return;
    case core::PrimaryStep::kCopySnapshot: {
      busy_.insert(project);
      const std::uint64_t seq = placement.last_ack.seq;
      const std::vector<NodeId> lacking = plan.copy_to;
      push_to(project, snapshot_hex, lacking, [this, project, release, lacking, seq](std::vector<NodeId> copied) {
        release();
        for (const NodeId& r : copied) pushed_seq_[project + "/" + r.to_hex()] = seq;
        if (copied.size() != lacking.size()) primary_checked_.erase(project);  // Try the rest again next round.
      });
      return;
    }
  }
}

void ProjectService::collect_obsolete(Instant now) {
  auto snapshots = deps_.transfers->store().list();
  if (!snapshots) return;
  std::set<std::string> held;
  for (const auto& snap : *snapshots) held.insert(snap.commit.project);
  for (const std::string& project : held) {
    if (busy_.contains(project)) continue;
    auto checked = obsolete_checked_.find(project);
    if (checked != obsolete_checked_.end() && now - checked->second < kObsoleteCheckInterval) continue;
    obsolete_checked_[project] = now;
    busy_.insert(project);
    read_register(project, [this, project](Result<core::RegisterValue> r) {
      busy_.erase(project);
      // No answer, or no such project: missing information never deletes.
      if (!r || !obsolete_here(r->placement)) return;
      const std::uint64_t token = ++collection_token_;
      collecting_[project] = token;
      collect_one(r->placement, token);
    });
  }
}

bool ProjectService::obsolete_here(const core::Placement& fresh) const {
  return fresh.state == core::ProjectState::kDeleted || !fresh.is_replica(deps_.self);
}

bool ProjectService::still_collecting(const std::string& project, std::uint64_t token) const {
  const auto it = collecting_.find(project);
  return it != collecting_.end() && it->second == token;
}

void ProjectService::end_collection(const std::string& project, std::uint64_t token) {
  if (still_collecting(project, token)) collecting_.erase(project);
}

// Runs with collecting_[project] = token and ends the collection on every
// way out; a snapshot arriving meanwhile abandons it (check_incoming).
void ProjectService::collect_one(const core::Placement& fresh, std::uint64_t token) {
  const std::string project = fresh.project;
  auto snaps = deps_.transfers->store().list(project);
  if (!snaps || snaps->empty()) {
    end_collection(project, token);
    return;
  }
  // Newest in the project's history order (docs/placement.md): epoch first,
  // then time; a deposed primary's later save is behind the next epoch's.
  const auto newest = std::max_element(snaps->begin(), snaps->end(), [](const auto& a, const auto& b) {
    return std::pair(a.commit.epoch, a.commit.time_ns) < std::pair(b.commit.epoch, b.commit.time_ns);
  });
  const std::string newest_hex = hex_of(newest->id);
  // The operator deleted the project (every replica drops its copy), or
  // invariant 3 holds already, because a majority of the listed replicas
  // holds an acknowledged save at least as far along the project's history:
  // our newest is a save this node saw acknowledged (its own, older record
  // says so) and the committed placement has acknowledged that one or a
  // later one; or ours was saved at an older epoch than the acknowledged one
  // (a deposed primary's unacknowledged save, which no listed replica would
  // take: its edits stay in the working directory set aside below).
  auto own = deps_.placement->local_value(project);
  if (fresh.state == core::ProjectState::kDeleted ||
      (fresh.last_ack.seq > 0 && fresh.last_ack.epoch > newest->commit.epoch) ||
      (own && *own && (*own)->placement.last_ack.seq > 0 && (*own)->placement.last_ack.id == newest->id &&
       fresh.last_ack.seq >= (*own)->placement.last_ack.seq)) {
    forget_if_still_obsolete(project, newest_hex, token);
    return;
  }
  // Otherwise push ours to every listed replica: all must take it (or it
  // fails, and we keep everything).
  busy_.insert(project);
  push_to(project, newest_hex, fresh.replicas, [this, project, fresh, newest_hex, token](std::vector<NodeId> copied) {
    if (copied.size() != fresh.replicas.size()) {
      busy_.erase(project);
      end_collection(project, token);
      spdlog::info("project {}: keeping this node's copy: only {} of {} listed replicas confirmed {}", project, copied.size(),
                   fresh.replicas.size(), newest_hex.substr(0, 12));
      return;
    }
    busy_.erase(project);
    forget_if_still_obsolete(project, newest_hex, token);
  });
}

// A primary may have listed this node again since the first read (and the
// copies may have taken long). If it did before this read, the read shows
// it; if it pushed a snapshot since, the collection was abandoned.
void ProjectService::forget_if_still_obsolete(const std::string& project, const std::string& newest_hex,
                                              std::uint64_t token) {
  busy_.insert(project);
  read_register(project, [this, project, newest_hex, token](Result<core::RegisterValue> again) {
    busy_.erase(project);
    if (still_collecting(project, token) && again && obsolete_here(again->placement)) {
      forget_copy(again->placement, newest_hex);
    }
    end_collection(project, token);
  });
}

void ProjectService::forget_copy(const core::Placement& fresh, const std::string& newest_hex) {
  const std::string project = fresh.project;
  auto forgot = deps_.transfers->store().forget_project(project);
  if (!forgot) {
    spdlog::warn("project {}: cannot remove the obsolete copy: {}", project, forgot.error().message);
    return;
  }
  // A working directory may hold edits made after the last save: never
  // delete it, set it aside for the operator.
  std::error_code ec;
  if (std::filesystem::exists(working_dir(project), ec)) {
    const std::string retired = deps_.data_dir + "/projects-retired/" + project + ".epoch" + std::to_string(fresh.epoch);
    std::filesystem::create_directories(deps_.data_dir + "/projects-retired", ec);
    std::filesystem::rename(working_dir(project), retired, ec);
    if (ec) spdlog::warn("project {}: cannot set the old working directory aside: {}", project, ec.message());
  }
  ++copies_collected_;
  if (deps_.holdings_changed) deps_.holdings_changed();
  spdlog::info("project {}: collected this node's obsolete copy ({} snapshots); the replicas hold {}", project,
               forgot->removed.size(), newest_hex.substr(0, 12));
  // Free the chunks in a child: gc waits for running saves, the loop must not.
  auto gc = run_process(deps_.loop, {self_executable(), "snapshot", "gc", "--store", deps_.data_dir + "/store"},
                        [](ProcessResult r) {
                          if (r.exit_code != 0) spdlog::warn("store gc failed: {}", r.err.substr(0, 300));
                        });
  if (!gc) spdlog::warn("store gc not started: {}", gc.error().message);
  if (deps_.publish) {
    json line{{"time", rfc3339_utc_ms(std::chrono::system_clock::now())},
              {"event", "copy-collected"},
              {"project", project},
              {"snapshots", forgot->removed.size()}};
    deps_.publish(line.dump() + "\n");
  }
}

}  // namespace shoal::agent
