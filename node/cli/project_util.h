#pragma once
// node/cli/project_util.h: the pure helpers behind `shoal project` and
// `shoal where` (node/cli/project_cmd.cc), kept apart so tests/cli can test
// them without an agent: size parsing for --quota, and the one-line renderings
// of placements, snapshots and operation progress. No I/O.

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/result.h"

namespace shoal::cli {

// "10G" → 10 GiB. Accepts a decimal number ("1.5G" too) with an optional unit
// K, M, G, T, P (powers of 1024; case-insensitive; "KiB", "KB", "k" all mean
// 1024) or B. Rejects signs, spaces, empty input, unknown units, fractions of
// a byte left over, and values that do not fit in 64 bits.
Result<std::uint64_t> parse_size(std::string_view text);

// Project ids are what the agent checks; the CLI only refuses what cannot be
// put in a URL path segment unescaped: empty, '/', '?', '#', '%', spaces and
// control characters.
Status check_project_id(std::string_view id);

// "node-3 node-0 node-5" from a placement's replicas (names).
std::string replicas_text(const nlohmann::json& placement);
// "ab12cd34ef56 (seq 2)", or "none" before the first acknowledged save.
std::string last_ack_text(const nlohmann::json& placement);
// The one line `shoal where` prints:
// "p1: epoch 2, primary node-3, replicas node-3 node-0 node-5, last ack ab12cd34ef56 (seq 2)".
std::string where_line(const nlohmann::json& placement);
// A snapshot's time as the agent sends it: a string as is; a number as UTC
// ISO-8601 (seconds, or nanoseconds when it is larger than 1e12).
std::string time_text(const nlohmann::json& value);
// The spinner line for an operation: "| save p1: running 1.2 s" (+ " 40%" when the
// operation has a progress figure in [0, 1]).
std::string spinner_line(int tick, const nlohmann::json& operation, double seconds);

}  // namespace shoal::cli
