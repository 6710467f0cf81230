#include "node/cli/project_util.h"

#include <cctype>
#include <cstdio>
#include <ctime>

#include "node/cli/output.h"

namespace shoal::cli {

using nlohmann::json;

namespace {
__extension__ typedef unsigned __int128 U128;  // __extension__: -Wpedantic.
}  // namespace

Result<std::uint64_t> parse_size(std::string_view text) {
  const auto bad = [&](const char* why) {
    return make_error(Code::kInvalidArgument,
                      "'" + std::string(text) + "' is not a size (" + why + "; e.g. 500M, 10G, 1.5T, 0)");
  };
  std::size_t i = 0;
  // Integer part and up to 9 fraction digits, kept exactly: value = whole + frac / 10^frac_digits.
  std::uint64_t whole = 0;
  bool digits = false;
  for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i) {
    const std::uint64_t d = static_cast<std::uint64_t>(text[i] - '0');
    if (whole > (UINT64_MAX - d) / 10) return bad("too large");
    whole = whole * 10 + d;
    digits = true;
  }
  std::uint64_t frac = 0;
  std::uint64_t frac_scale = 1;
  if (i < text.size() && text[i] == '.') {
    ++i;
    bool frac_digits = false;
    for (; i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])); ++i) {
      if (frac_scale >= 1'000'000'000) return bad("too many decimals");
      frac = frac * 10 + static_cast<std::uint64_t>(text[i] - '0');
      frac_scale *= 10;
      frac_digits = true;
    }
    if (!frac_digits) return bad("a digit must follow '.'");
  }
  if (!digits) return bad("it must start with a digit");
  std::string unit;
  for (; i < text.size(); ++i) unit += static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
  int shift = 0;
  if (unit.empty() || unit == "b") {
    shift = 0;
  } else {
    const char u = unit[0];
    const std::string rest = unit.substr(1);
    if (rest != "" && rest != "b" && rest != "ib") return bad("unknown unit");
    switch (u) {
      case 'k': shift = 10; break;
      case 'm': shift = 20; break;
      case 'g': shift = 30; break;
      case 't': shift = 40; break;
      case 'p': shift = 50; break;
      default: return bad("unknown unit; use K, M, G, T or P");
    }
  }
  if (shift > 0 && whole > (UINT64_MAX >> shift)) return bad("too large");
  const std::uint64_t base = whole << shift;
  // frac / frac_scale of one unit, in bytes; must be a whole number of bytes.
  // frac < 10^9 < 2^30 and shift <= 50, so compute in 128 bits.
  const U128 frac_bytes_scaled = static_cast<U128>(frac) << shift;
  if (frac_bytes_scaled % frac_scale != 0) return bad("not a whole number of bytes");
  const U128 total = static_cast<U128>(base) + frac_bytes_scaled / frac_scale;
  if (total > UINT64_MAX) return bad("too large");
  return static_cast<std::uint64_t>(total);
}

Status check_project_id(std::string_view id) {
  if (id.empty()) return make_error(Code::kInvalidArgument, "the project id is empty");
  for (char c : id) {
    const auto uc = static_cast<unsigned char>(c);
    if (c == '/' || c == '?' || c == '#' || c == '%' || c == ' ' || uc < 0x20 || uc == 0x7f) {
      return make_error(Code::kInvalidArgument, "the project id '" + std::string(id) +
                                                    "' has a character that cannot be in an id ('/', '?', '#', '%', "
                                                    "space or control)");
    }
  }
  return ok_status();
}

std::string replicas_text(const json& placement) {
  std::string out;
  if (placement.is_object() && placement.contains("replicas") && placement["replicas"].is_array()) {
    for (const auto& r : placement["replicas"]) {
      if (!r.is_string()) continue;
      if (!out.empty()) out += ' ';
      out += r.get<std::string>();
    }
  }
  return out.empty() ? "-" : out;
}

std::string last_ack_text(const json& placement) {
  const json ack = placement.is_object() && placement.contains("last_ack") ? placement["last_ack"] : json::object();
  const std::string snap = json_str(ack, "snapshot");
  if (snap.empty()) return "none";
  return snap.substr(0, 12) + " (seq " + std::to_string(json_u64(ack, "seq")) + ")";
}

std::string where_line(const json& placement) {
  const std::string primary = json_str(placement, "primary");
  return json_str(placement, "project") + ": epoch " + std::to_string(json_u64(placement, "epoch")) + ", primary " +
         (primary.empty() ? "-" : primary) + ", replicas " + replicas_text(placement) + ", last ack " +
         last_ack_text(placement);
}

std::string time_text(const json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (!value.is_number()) return "-";
  double v = value.get<double>();
  if (v > 1e12) v /= 1e9;  // Nanoseconds.
  const std::time_t secs = static_cast<std::time_t>(v);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string spinner_line(int tick, const json& operation, double seconds) {
  static constexpr char kFrames[] = {'|', '/', '-', '\\'};
  char buf[64];
  std::snprintf(buf, sizeof buf, " %.1f s", seconds);
  std::string state = json_str(operation, "state");
  std::string line = std::string(1, kFrames[tick & 3]) + " " + json_str(operation, "kind") + " " +
                     json_str(operation, "project") + ": " + (state.empty() ? "running" : state) + buf;
  if (operation.is_object() && operation.contains("progress") && operation["progress"].is_number()) {
    const double p = operation["progress"].get<double>();
    if (p >= 0 && p <= 1) {
      std::snprintf(buf, sizeof buf, " %.0f%%", p * 100);
      line += buf;
    }
  }
  return line;
}

}  // namespace shoal::cli
