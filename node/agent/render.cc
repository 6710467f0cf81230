#include "node/agent/render.h"

#include <ctime>

namespace shoal::agent {

nlohmann::json member_json(const gossip::Member& member) {
  nlohmann::json health = {
      {"load", static_cast<double>(member.health.load_milli) / 1000.0},
      {"free_disk_bytes", member.health.free_disk_bytes},
      {"local_health", member.health.local_health},
      {"projects_hosted", member.health.projects_hosted},
      {"version", member.health.version},
  };
  return nlohmann::json{
      {"name", member.name},
      {"id", member.id.to_hex()},
      {"dc", member.dc},
      {"addr", member.addr.to_string()},
      {"status", std::string(gossip::status_name(member.status))},
      {"stalled", member.stalled},
      {"incarnation", member.incarnation},
      {"catalog_version", member.catalog_version},
      {"health", std::move(health)},
  };
}

std::string rfc3339_utc_ms(std::chrono::system_clock::time_point time) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
  const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buffer;
}

std::string_view api_event_name(gossip::EventKind kind) {
  // The admin API's names are short and stable; the core's may be more descriptive.
  switch (kind) {
    case gossip::EventKind::kHealthChanged: return "health";
    case gossip::EventKind::kCatalogChanged: return "catalog";
    default: return gossip::event_name(kind);
  }
}

std::string event_line(const gossip::Event& event, std::chrono::system_clock::time_point wall_time) {
  const nlohmann::json line = {
      {"time", rfc3339_utc_ms(wall_time)},
      {"event", std::string(api_event_name(event.kind))},
      {"member", member_json(event.member)},
  };
  return json_text(line) + "\n";
}

std::string json_text(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string render_metrics(const MetricsSnapshot& m) {
  std::string out;
  auto metric = [&out](std::string_view name, std::string_view type, std::string_view help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
  };
  auto sample = [&out](std::string_view name, std::string_view labels, std::uint64_t value) {
    out += name;
    out += labels;
    out += ' ';
    out += std::to_string(value);
    out += '\n';
  };

  metric("shoal_members", "gauge", "Members known to this agent, by status.");
  for (auto status : {gossip::MemberStatus::kAlive, gossip::MemberStatus::kSuspect, gossip::MemberStatus::kDead,
                      gossip::MemberStatus::kLeft}) {
    sample("shoal_members", "{status=\"" + std::string(gossip::status_name(status)) + "\"}",
           m.members_by_status[static_cast<std::size_t>(status)]);
  }
  const struct {
    std::string_view name;
    std::string_view help;
    std::uint64_t value;
  } counters[] = {
      {"shoal_probes_total", "Direct probes sent.", m.core.probes_sent},
      {"shoal_probes_failed_total", "Probes answered by neither a direct nor an indirect ack.", m.core.probes_failed},
      {"shoal_indirect_probes_total", "Indirect probe requests sent.", m.core.indirect_probes_sent},
      {"shoal_suspicions_total", "Times this agent marked a member suspect.", m.core.suspicions},
      {"shoal_refutations_total", "Times this agent refuted a suspicion about itself.", m.core.refutations},
      {"shoal_deaths_declared_total", "Members this agent declared dead.", m.core.deaths_declared},
      {"shoal_push_pulls_total", "Full-state exchanges.", m.core.push_pulls},
      {"shoal_messages_in_total", "Gossip messages received (after opening).", m.core.messages_in},
      {"shoal_messages_out_total", "Gossip messages sent.", m.core.messages_out},
      {"shoal_packets_in_total", "Datagrams received.", m.packets_in},
      {"shoal_packets_out_total", "Datagrams sent.", m.packets_out},
      {"shoal_bytes_in_total", "Sealed datagram bytes received.", m.bytes_in},
      {"shoal_bytes_out_total", "Sealed datagram bytes sent.", m.bytes_out},
      {"shoal_streams_in_total", "Inbound push-pull connections served.", m.streams_in},
      {"shoal_streams_out_total", "Outbound TCP stream requests.", m.streams_out},
      {"shoal_streams_failed_total", "TCP streams that failed (refused, timed out, bad frame).", m.streams_failed},
  };
  for (const auto& c : counters) {
    metric(c.name, "counter", c.help);
    sample(c.name, "", c.value);
  }

  metric("shoal_datagrams_dropped_total", "counter", "Datagrams dropped, by reason.");
  for (std::size_t i = 0; i < kDropReasonCount; ++i) {
    const auto reason = static_cast<DropReason>(i);
    std::uint64_t value = m.drops.get(reason);
    if (reason == DropReason::kDecodeError) {
      value += m.core.decode_errors;
    }
    sample("shoal_datagrams_dropped_total", "{reason=\"" + std::string(drop_reason_name(reason)) + "\"}", value);
  }
  sample("shoal_datagrams_dropped_total", "{reason=\"unknown_type\"}", m.core.unknown_message_types);

  metric("shoal_local_health", "gauge", "Lifeguard local health score (0 is healthy).");
  sample("shoal_local_health", "", static_cast<std::uint64_t>(m.local_health < 0 ? 0 : m.local_health));
  return out;
}

HttpResponse json_response(const nlohmann::json& body, int status) {
  return HttpResponse{status, json_text(body) + "\n", "application/json"};
}

Result<nlohmann::json> parse_json_body(const HttpRequest& request) {
  if (request.body.empty()) {
    return nlohmann::json::object();
  }
  nlohmann::json body = nlohmann::json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    return make_error(Code::kInvalidArgument, "request body is not valid JSON");
  }
  if (!body.is_object()) {
    return make_error(Code::kInvalidArgument, "request body must be a JSON object");
  }
  return body;
}

int http_status_for(Code code) {
  switch (code) {
    case Code::kInvalidArgument: return 400;
    case Code::kNotFound: return 404;
    case Code::kAlreadyExists:
    case Code::kFailedPrecondition:
    case Code::kResourceExhausted: return 409;
    case Code::kPermissionDenied: return 403;
    case Code::kUnavailable: return 503;
    default: return 500;
  }
}

}  // namespace shoal::agent
