#pragma once
// node/cli/output.h: what client commands share to talk to the agent and show
// its answers: one JSON request with the exit-code convention, tolerant field
// readers for the agent's JSON, human byte counts and plain tables.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "node/cli/admin_client.h"

namespace shoal::cli {

// One request. Returns the parsed JSON on a 2xx; otherwise prints why on
// stderr and sets exit_code (1: the agent refused, 2: unreachable or not JSON).
std::optional<nlohmann::json> call_agent(AdminClient& client, std::string_view method, std::string_view path,
                                         const std::string& body, int& exit_code);

// Field readers that yield an empty/zero value when the key is absent or of
// another type, so a newer agent's extra or missing fields never crash the CLI.
std::string json_str(const nlohmann::json& j, const char* key);
std::uint64_t json_u64(const nlohmann::json& j, const char* key);
double json_f64(const nlohmann::json& j, const char* key);
bool json_bool(const nlohmann::json& j, const char* key);

std::string human_bytes(double bytes);  // "1.5 GiB"
void print_table(const std::vector<std::vector<std::string>>& rows);

}  // namespace shoal::cli
