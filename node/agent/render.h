#pragma once
// node/agent/render.h: how the admin API shows the agent's state. Owns the
// JSON form of members and events and the Prometheus text of /metrics; the
// CLI and the integration tests parse exactly these shapes (docs/admin-api.md).
// Pure functions; no I/O.

#include <array>
#include <chrono>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "gossip/types.h"
#include "base/result.h"
#include "node/agent/datagram.h"
#include "node/agent/http.h"

namespace shoal::agent {

// {name, id, dc, addr, status, stalled, incarnation, catalog_version,
//  health: {load, free_disk_bytes, local_health, projects_hosted, version}}
nlohmann::json member_json(const gossip::Member& member);

// "2026-11-22T04:05:26.123Z"
std::string rfc3339_utc_ms(std::chrono::system_clock::time_point time);

// "joined", "suspect", "stalled", "alive", "dead", "left", "health", "catalog", "updated".
std::string_view api_event_name(gossip::EventKind kind);

// One line of the event stream, newline-terminated:
// {"time": ..., "event": "joined", "member": {...}}
std::string event_line(const gossip::Event& event, std::chrono::system_clock::time_point wall_time);

// Serialises JSON without ever throwing: names gossiped by peers may hold
// invalid UTF-8, which is replaced rather than allowed to abort a response.
std::string json_text(const nlohmann::json& value);

// A JSON reply with a trailing newline.
HttpResponse json_response(const nlohmann::json& body, int status = 200);
// Parses a request body that must be a JSON object; an empty body is an
// empty object. InvalidArgument, with a message for the client, otherwise.
Result<nlohmann::json> parse_json_body(const HttpRequest& request);
// The HTTP status that tells an API client what to do about an error code.
int http_status_for(Code code);

struct MetricsSnapshot {
  std::array<std::size_t, 4> members_by_status{};  // Indexed by gossip::MemberStatus.
  gossip::Counters core;
  DropCounters drops;
  std::uint64_t packets_in = 0;   // Datagrams received (before opening).
  std::uint64_t packets_out = 0;  // Datagrams sent.
  std::uint64_t bytes_in = 0;     // Sealed datagram bytes received.
  std::uint64_t bytes_out = 0;
  std::uint64_t streams_in = 0;   // Inbound push-pull connections served.
  std::uint64_t streams_out = 0;  // Outbound stream requests started.
  std::uint64_t streams_failed = 0;  // Inbound or outbound streams that failed.
  int local_health = 0;
};

std::string render_metrics(const MetricsSnapshot& metrics);

}  // namespace shoal::agent
