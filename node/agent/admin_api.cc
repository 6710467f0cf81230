#include "node/agent/admin_api.h"
#include "node/agent/project_service.h"

#include "node/agent/limits.h"
#include "node/agent/render.h"
#include "node/agent/transfer_api.h"

namespace shoal::agent {
namespace {

using nlohmann::json;

constexpr std::size_t kJoinAddressesMax = 64;

// Reads body[field] as an array of "host:port" strings.
Result<std::vector<Address>> address_list(const json& body, const char* field, std::size_t max) {
  auto it = body.find(field);
  if (it == body.end() || !it->is_array()) {
    return make_error(Code::kInvalidArgument, std::string("\"") + field + "\" must be an array of \"host:port\" strings");
  }
  if (it->size() > max) {
    return make_error(Code::kInvalidArgument, std::string("\"") + field + "\" holds more than " + std::to_string(max) +
                                                  " addresses");
  }
  std::vector<Address> out;
  for (const auto& item : *it) {
    if (!item.is_string()) {
      return make_error(Code::kInvalidArgument, std::string("\"") + field + "\" must hold strings");
    }
    auto addr = parse_address(item.get<std::string>());
    if (!addr) {
      return make_error(Code::kInvalidArgument, addr.error().message);
    }
    out.push_back(std::move(*addr));
  }
  return out;
}

Result<ClusterKey> key_field(const json& body) {
  auto it = body.find("key");
  if (it == body.end() || !it->is_string()) {
    return make_error(Code::kInvalidArgument, "\"key\" must be a base64 cluster key string");
  }
  auto key = parse_cluster_key(it->get<std::string>());
  if (!key) {
    return make_error(Code::kInvalidArgument, "\"key\" is not a valid cluster key: " + key.error().message);
  }
  return *key;
}

AdminReply members(const HttpRequest& request, AdminBackend& backend) {
  std::optional<gossip::MemberStatus> filter;
  if (auto it = request.query.find("status"); it != request.query.end()) {
    auto status = gossip::parse_status(it->second);
    if (!status) {
      return {error_response(400, "status must be one of alive, suspect, dead, left")};
    }
    filter = *status;
  }
  json list = json::array();
  for (const auto& member : backend.members()) {
    if (!filter || member.status == *filter) {
      list.push_back(member_json(member));
    }
  }
  return {json_response(list)};
}

AdminReply self(AdminBackend& backend) {
  json body = member_json(backend.self());
  body["local_health"] = backend.local_health();
  return {json_response(body)};
}

AdminReply join(const json& body, AdminBackend& backend) {
  auto addrs = address_list(body, "addrs", kJoinAddressesMax);
  if (!addrs) {
    return {error_response(400, addrs.error().message)};
  }
  if (addrs->empty()) {
    return {error_response(400, "\"addrs\" is empty; give at least one \"host:port\"")};
  }
  auto contacted = backend.join(*addrs);
  if (!contacted) {
    return {error_response(http_status_for(contacted.error().code), contacted.error().message)};
  }
  return {json_response(json{{"contacted", *contacted}})};
}

AdminReply keys(AdminBackend& backend) {
  json list = json::array();
  const Keyring& ring = backend.keyring();
  for (std::size_t i = 0; i < ring.keys().size(); ++i) {
    const ClusterKey& key = ring.keys()[i];
    list.push_back(json{{"key", format_cluster_key(key)}, {"fingerprint", cluster_key_fingerprint(key)},
                        {"primary", i == 0}});
  }
  return {json_response(json{{"keys", std::move(list)}})};
}

AdminReply change_keys(std::string_view action, const json& body, AdminBackend& backend) {
  auto key = key_field(body);
  if (!key) {
    return {error_response(400, key.error().message)};
  }
  Keyring ring = backend.keyring();
  Status changed = action == "install" ? ring.install(*key) : action == "use" ? ring.use(*key) : ring.remove(*key);
  if (!changed) {
    return {error_response(http_status_for(changed.error().code), changed.error().message)};
  }
  if (auto saved = backend.replace_keyring(ring); !saved) {
    return {error_response(500, "keyring not saved: " + saved.error().message)};
  }
  return {json_response(json::object())};
}

AdminReply catalog_version(const json& body, AdminBackend& backend) {
  std::uint64_t version = backend.self().catalog_version + 1;
  if (auto it = body.find("version"); it != body.end()) {
    if (!it->is_number_unsigned()) {
      return {error_response(400, "\"version\" must be a non-negative integer")};
    }
    version = it->get<std::uint64_t>();
  }
  backend.set_catalog_version(version);
  return {json_response(json{{"catalog_version", version}})};
}

AdminReply debug_drop(const json& body, AdminBackend& backend) {
  if (!backend.fault_injection_enabled()) {
    return {error_response(403, "fault injection is disabled; start the agent with --enable-fault-injection")};
  }
  auto peers = address_list(body, "peers", kDropPeersMax);
  if (!peers) {
    return {error_response(400, peers.error().message)};
  }
  backend.set_dropped_peers(*peers);
  return {json_response(json{{"dropping", peers->size()}})};
}

AdminReply debug_health(const json& body, AdminBackend& backend) {
  if (!backend.fault_injection_enabled()) {
    return {error_response(403, "fault injection is disabled; start the agent with --enable-fault-injection")};
  }
  const auto it = body.find("free_disk_bytes");
  if (it == body.end() || !(it->is_null() || it->is_number_unsigned())) {
    return {error_response(400, "expected {\"free_disk_bytes\": BYTES} (a non-negative integer, or null to measure again)")};
  }
  backend.set_free_disk_override(it->is_null() ? std::nullopt : std::optional<std::uint64_t>(it->get<std::uint64_t>()));
  return {json_response(json{{"free_disk_bytes", *it}})};
}

}  // namespace

HttpResponse error_response(int status, std::string_view message) {
  return json_response(json{{"error", std::string(message)}}, status);
}

AdminReply handle_admin_request(const HttpRequest& request, AdminBackend& backend) {
  const std::string& path = request.path;
  const bool get = request.method == "GET";
  const bool post = request.method == "POST";

  if (auto transfer_reply = handle_transfer_request(request, backend.transfer_backend())) {
    return std::move(*transfer_reply);
  }
  if (ProjectService* projects = backend.project_service()) {
    if (auto project_reply = projects->handle(request)) {
      return std::move(*project_reply);
    }
  }
  if (path == "/v1/members") {
    return get ? members(request, backend) : AdminReply{error_response(405, "use GET")};
  }
  if (path == "/v1/self") {
    return get ? self(backend) : AdminReply{error_response(405, "use GET")};
  }
  if (path == "/v1/keys") {
    return get ? keys(backend) : AdminReply{error_response(405, "use GET")};
  }
  if (path == "/metrics") {
    if (!get) {
      return {error_response(405, "use GET")};
    }
    std::string text = render_metrics(backend.metrics());
    if (TransferBackend* transfers = backend.transfer_backend()) {
      text += render_transfer_metrics(transfers->transfer_metrics());
    }
    if (ProjectService* projects = backend.project_service()) {
      text += projects->render_metrics();
    }
    return {HttpResponse{200, std::move(text), "text/plain; version=0.0.4"}};
  }
  if (path == "/v1/events") {
    if (!get) {
      return {error_response(405, "use GET")};
    }
    AdminReply reply;
    reply.event_stream = true;
    reply.response.content_type = "application/x-ndjson";
    return reply;
  }

  const bool is_post_route = path == "/v1/join" || path == "/v1/leave" || path == "/v1/keys/install" ||
                             path == "/v1/keys/use" || path == "/v1/keys/remove" || path == "/v1/catalog-version" ||
                             path == "/v1/debug/drop" || path == "/v1/debug/health";
  if (!is_post_route) {
    return {error_response(404, "no such endpoint: " + path)};
  }
  if (!post) {
    return {error_response(405, "use POST")};
  }
  auto body = parse_json_body(request);
  if (!body) {
    return {error_response(400, body.error().message)};
  }
  if (path == "/v1/join") {
    return join(*body, backend);
  }
  if (path == "/v1/leave") {
    AdminReply reply{json_response(json::object())};
    reply.after_write = [&backend] { backend.leave(); };
    return reply;
  }
  if (path == "/v1/catalog-version") {
    return catalog_version(*body, backend);
  }
  if (path == "/v1/debug/drop") {
    return debug_drop(*body, backend);
  }
  if (path == "/v1/debug/health") {
    return debug_health(*body, backend);
  }
  return change_keys(std::string_view(path).substr(std::string_view("/v1/keys/").size()), *body, backend);
}

}  // namespace shoal::agent
