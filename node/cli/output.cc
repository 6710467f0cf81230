#include "node/cli/output.h"

#include <algorithm>
#include <cstdio>

namespace shoal::cli {

using nlohmann::json;

std::optional<json> call_agent(AdminClient& client, std::string_view method, std::string_view path,
                               const std::string& body, int& exit_code) {
  auto response = client.request(method, path, body);
  if (!response) {
    exit_code = report_client_error(response.error());
    return std::nullopt;
  }
  json parsed = json::parse(response->body, nullptr, /*allow_exceptions=*/false);
  if (response->status < 200 || response->status >= 300) {
    const std::string reason = json_str(parsed, "error").empty() ? response->body : json_str(parsed, "error");
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

std::string json_str(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
}

std::uint64_t json_u64(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number_unsigned() ? j[key].get<std::uint64_t>() : 0;
}

double json_f64(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_number() ? j[key].get<double>() : 0.0;
}

bool json_bool(const json& j, const char* key) {
  return j.is_object() && j.contains(key) && j[key].is_boolean() && j[key].get<bool>();
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

}  // namespace shoal::cli
