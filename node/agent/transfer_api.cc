// node/agent/transfer_api.cc: transfer routes of the admin API and the
// agent's transfer service (see the header).

#include "node/agent/transfer_api.h"

#include <spdlog/spdlog.h>

#include <charconv>

#include "node/agent/render.h"

namespace shoal::agent {
namespace {

using nlohmann::json;

AdminReply error_reply(const Error& error) {
  return {json_response(json{{"error", error.message}, {"code", std::string(code_name(error.code))}},
                     http_status_for(error.code))};
}

std::optional<std::string> string_field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || !it->is_string()) {
    return std::nullopt;
  }
  return it->get<std::string>();
}

AdminReply replicate(const HttpRequest& request, TransferBackend& backend) {
  auto parsed = parse_json_body(request);
  if (!parsed) {
    return {error_response(400, parsed.error().message)};
  }
  const json& body = *parsed;
  ReplicateRequest r;
  auto project = string_field(body, "project");
  auto snapshot = string_field(body, "snapshot");
  if (!project || !snapshot) {
    return {error_response(400, "\"project\" and \"snapshot\" must be strings")};
  }
  r.project = *project;
  r.snapshot = *snapshot;
  r.to = string_field(body, "to");
  r.from = string_field(body, "from");
  if (r.to.has_value() == r.from.has_value()) {
    return {error_response(400, "give exactly one of \"to\" (push) and \"from\" (pull)")};
  }
  auto id = backend.replicate(r);
  if (!id) {
    return error_reply(id.error());
  }
  auto info = backend.transfer(*id);
  json out = info ? transfer_json(*info) : json::object();
  out["id"] = *id;
  return {json_response(out, 202)};
}

}  // namespace

nlohmann::json transfer_json(const TransferInfo& t) {
  const auto& p = t.progress;
  json j{{"id", t.id},
         {"direction", t.direction == TransferDirection::kSend ? "send" : "receive"},
         {"peer", t.peer},
         {"project", t.project},
         {"snapshot", to_hex(t.snapshot)},
         {"state", std::string(transfer_state_name(t.state))},
         {"chunks", p.chunks_transferred},
         {"bytes", p.bytes_transferred},
         {"chunks_wanted", p.chunks_wanted},
         {"chunks_already_held", p.chunks_already_held},
         {"chunks_refused", p.chunks_refused},
         {"walk_complete", p.walk_complete},
         {"already_held", p.snapshot_already_held},
         {"bytes_per_second", p.bytes_per_second},
         {"attempts", t.attempts}};
  if (p.eta) {
    j["eta_seconds"] = to_seconds(*p.eta);
  }
  if (t.finished) {
    j["seconds"] = to_seconds(*t.finished - t.started);
  }
  if (t.state == TransferState::kFailed || t.state == TransferState::kRetrying) {
    j["error"] = t.error.message;  // Retrying: why the last attempt failed.
    j["code"] = std::string(code_name(t.error.code));
  }
  return j;
}

std::string transfer_event_line(TransferEventKind kind, const TransferInfo& info,
                                 std::chrono::system_clock::time_point wall_time) {
  return json_text(json{{"time", rfc3339_utc_ms(wall_time)},
                        {"event", std::string(transfer_event_name(kind))},
                        {"transfer", transfer_json(info)}}) +
         "\n";
}

std::string render_transfer_metrics(const TransferMetrics& m) {
  std::string out;
  auto counter = [&](const char* name, const char* help, std::uint64_t value, const std::string& labels = "") {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n";
    out += std::string(name) + labels + " " + std::to_string(value) + "\n";
  };
  counter("shoal_transfer_bytes_sent_total", "Chunk bytes (as stored) of finished sends.", m.bytes_sent);
  counter("shoal_transfer_bytes_received_total", "Chunk bytes (as stored) received.", m.bytes_received);
  counter("shoal_transfer_chunks_sent_total", "Chunks sent in finished sends.", m.chunks_sent);
  counter("shoal_transfer_chunks_received_total", "Chunks received and stored.", m.chunks_received);
  counter("shoal_transfer_chunks_refused_total", "Chunks refused on arrival, by reason.", m.chunks_refused_corrupt,
          "{reason=\"corrupt\"}");
  counter("shoal_transfer_wire_bytes_out_total", "Bytes written to transfer sockets.", m.wire_bytes_out);
  counter("shoal_transfer_wire_bytes_in_total", "Bytes read from transfer sockets.", m.wire_bytes_in);
  counter("shoal_transfers_done_total", "Transfers finished successfully.", m.transfers_done);
  counter("shoal_transfers_failed_total", "Transfers that failed.", m.transfers_failed);
  counter("shoal_transfer_retries_total", "Attempts scheduled after a failed attempt.", m.transfer_retries);
  counter("shoal_transfer_connections_refused_total", "Inbound transfer connections refused at the limit.",
          m.connections_refused);
  counter("shoal_transfer_connections_evicted_total",
          "Inbound connections closed while handshaking to admit a newer one.", m.connections_evicted);
  counter("shoal_transfer_handshakes_completed_total", "Secure channel handshakes completed.",
          m.channel.handshakes_completed);
  out += "# HELP shoal_transfer_channel_failures_total Secure channels failed (handshake or stream), by reason.\n";
  out += "# TYPE shoal_transfer_channel_failures_total counter\n";
  for (std::size_t r = 1; r < static_cast<std::size_t>(transfer::FailReason::kCount); ++r) {
    const auto reason = static_cast<transfer::FailReason>(r);
    out += "shoal_transfer_channel_failures_total{reason=\"" + std::string(transfer::fail_reason_name(reason)) +
           "\"} " + std::to_string(m.channel.failed(reason)) + "\n";
  }
  out += "# HELP shoal_transfer_seconds_sum Total duration of finished transfers.\n";
  out += "# TYPE shoal_transfer_seconds_sum counter\n";
  out += "shoal_transfer_seconds_sum " + std::to_string(m.transfer_seconds_sum) + "\n";
  return out;
}

std::optional<AdminReply> handle_transfer_request(const HttpRequest& request, TransferBackend* backend) {
  const std::string& path = request.path;
  if (path != "/v1/replicate" && path != "/v1/transfers" && !path.starts_with("/v1/transfers/")) {
    return std::nullopt;
  }
  if (backend == nullptr) {
    return AdminReply{error_response(503, "this agent runs without transfers")};
  }
  if (path == "/v1/replicate") {
    if (request.method != "POST") {
      return AdminReply{error_response(405, "use POST")};
    }
    return replicate(request, *backend);
  }
  if (path == "/v1/transfers") {
    if (request.method != "GET") {
      return AdminReply{error_response(405, "use GET")};
    }
    json list = json::array();
    for (const auto& t : backend->transfers()) {
      list.push_back(transfer_json(t));
    }
    return AdminReply{json_response(json{{"transfers", list}, {"rate_limit_bytes_per_second", backend->rate_limit()}})};
  }
  if (path == "/v1/transfers/limit") {
    if (request.method != "POST") {
      return AdminReply{error_response(405, "use POST")};
    }
    auto parsed = parse_json_body(request);
    if (!parsed) {
      return AdminReply{error_response(400, parsed.error().message)};
    }
    json& body = *parsed;
    if (!body.contains("bytes_per_second") || !body["bytes_per_second"].is_number_unsigned()) {
      return AdminReply{error_response(400, "\"bytes_per_second\" must be a non-negative integer (0 = unlimited)")};
    }
    backend->set_rate_limit(body["bytes_per_second"].get<std::uint64_t>());
    return AdminReply{json_response(json{{"rate_limit_bytes_per_second", backend->rate_limit()}})};
  }
  const std::string_view id_text = std::string_view(path).substr(std::string_view("/v1/transfers/").size());
  std::uint64_t id = 0;
  const auto [end, ec] = std::from_chars(id_text.data(), id_text.data() + id_text.size(), id);
  if (ec != std::errc() || end != id_text.data() + id_text.size()) {
    return AdminReply{error_response(404, "no such endpoint: " + path)};
  }
  if (request.method != "GET") {
    return AdminReply{error_response(405, "use GET")};
  }
  auto info = backend->transfer(id);
  if (!info) {
    return AdminReply{error_response(404, "no transfer " + std::to_string(id) + " (it may have aged out)")};
  }
  return AdminReply{json_response(transfer_json(*info))};
}

// --- the service ---------------------------------------------------------------

Result<std::unique_ptr<TransferService>> TransferService::open(uv_loop_t* loop, const Identity& identity,
                                                               const Keyring& keyring, Random& random,
                                                               const std::string& store_dir, MembersFn members) {
  auto store = storage::SnapshotStore::open(store_dir);
  if (!store) {
    return make_error(store.error().code, "snapshot store " + store_dir + ": " + store.error().message);
  }
  std::unique_ptr<TransferService> service(new TransferService());
  service->store_ = std::move(*store);
  service->members_ = std::move(members);
  TransferService* self = service.get();
  // An inbound peer must be a member the mesh knows, holding the key the mesh
  // gossips for its id (the id passed is the hash of the presented key).
  auto authorize = [self](const NodeId& id, const PublicKey& key) -> Status {
    for (const auto& m : self->members_()) {
      if (m.id == id) {
        if (m.public_key != key) {
          return make_error(Code::kPermissionDenied, "node " + id.short_hex() + " presented a key the mesh does not gossip for it");
        }
        if (m.status == gossip::MemberStatus::kDead || m.status == gossip::MemberStatus::kLeft) {
          return make_error(Code::kPermissionDenied, "node " + id.short_hex() + " (" + m.name + ") is not a live member");
        }
        return {};
      }
    }
    return make_error(Code::kPermissionDenied, "node " + id.short_hex() + " is not a member of this mesh");
  };
  service->net_ = std::make_unique<TransferNet>(loop, identity, keyring, random, *service->store_, authorize);
  service->net_->set_peer_namer([self](const PublicKey& key) {
    for (const auto& m : self->members_()) {
      if (m.public_key == key) {
        return m.name;
      }
    }
    return std::string();
  });
  return service;
}

TransferService::~TransferService() {
  // The net's handles must be closed (close() and a loop run) before this.
  net_.reset();
  store_.reset();
}

Result<gossip::Member> TransferService::find_member(const std::string& spec) const {
  std::optional<gossip::Member> found;
  for (const auto& m : members_()) {
    if (m.name == spec || (spec.size() >= 4 && m.id.to_hex().starts_with(spec))) {
      if (found && found->id != m.id) {
        return make_error(Code::kInvalidArgument, "node '" + spec + "' is ambiguous; give its name or more id digits");
      }
      found = m;
    }
  }
  if (!found) {
    return make_error(Code::kNotFound, "no member '" + spec + "' (see `shoal members`)");
  }
  if (found->status == gossip::MemberStatus::kDead || found->status == gossip::MemberStatus::kLeft) {
    return make_error(Code::kUnavailable, "member '" + spec + "' is " + std::string(gossip::status_name(found->status)));
  }
  return *found;
}

Result<std::uint64_t> TransferService::replicate(const ReplicateRequest& request) {
  SHOAL_TRY_STATUS(storage::validate_project(request.project));
  if (request.from) {
    // This node does not hold the snapshot, so it cannot resolve a prefix or
    // "latest": a pull names the full id.
    auto bytes = from_hex(request.snapshot);
    if (!bytes || bytes->size() != kHashBytes) {
      return make_error(Code::kInvalidArgument, "a pull needs the snapshot's full id (64 hex digits, from "
                                                "`shoal snapshot list` on the node that holds it)");
    }
    storage::ChunkId id{};
    std::copy(bytes->begin(), bytes->end(), id.begin());
    auto member = find_member(*request.from);
    if (!member) {
      return std::unexpected(member.error());
    }
    return net_->pull(TransferPeer{.name = member->name, .address = member->addr, .key = member->public_key},
                      request.project, id);
  }
  auto snapshot = store_->find(request.snapshot, request.project);
  if (!snapshot) {
    return std::unexpected(snapshot.error());
  }
  auto member = find_member(*request.to);
  if (!member) {
    return std::unexpected(member.error());
  }
  return net_->push(TransferPeer{.name = member->name, .address = member->addr, .key = member->public_key},
                    request.project, snapshot->id);
}

}  // namespace shoal::agent
