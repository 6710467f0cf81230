#include "node/agent/options.h"

#include <toml++/toml.h>

#include <tuple>

namespace shoal::agent {

Status load_config_file(const std::string& path, Settings& settings) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    return make_error(Code::kInvalidArgument, "--config " + path + ": " + std::string(e.description()) + " (line " +
                                                  std::to_string(e.source().begin.line) + ")");
  }
  for (const auto& [key, node] : table) {
    const std::string k(key.str());
    bool known = false;
    for (const char* v : kValueKeys) {
      if (k == v) {
        known = true;
        auto text = node.value<std::string>();
        if (!text) {
          return make_error(Code::kInvalidArgument, "--config " + path + ": \"" + k + "\" must be a string");
        }
        settings.values[k] = *text;
      }
    }
    if (k == "join") {
      known = true;
      const toml::array* list = node.as_array();
      if (list == nullptr) {
        return make_error(Code::kInvalidArgument, "--config " + path + ": \"join\" must be an array of strings");
      }
      for (const auto& item : *list) {
        auto text = item.value<std::string>();
        if (!text) {
          return make_error(Code::kInvalidArgument, "--config " + path + ": \"join\" must hold strings");
        }
        settings.join.push_back(*text);
      }
    } else if (k == "enable_fault_injection") {
      known = true;
      auto flag = node.value<bool>();
      if (!flag) {
        return make_error(Code::kInvalidArgument, "--config " + path + ": \"enable_fault_injection\" must be a boolean");
      }
      settings.fault_injection = *flag;
    }
    if (!known) {
      return make_error(Code::kInvalidArgument, "--config " + path + ": unknown key \"" + k + "\"");
    }
  }
  return ok_status();
}

namespace {

Result<Address> address_setting(const Settings& s, const std::string& key, const std::string& flag) {
  auto addr = parse_address(s.values.at(key));
  if (!addr) {
    return make_error(Code::kInvalidArgument, "--" + flag + " " + s.values.at(key) + ": " + addr.error().message +
                                                  "; give HOST:PORT (IPv6 as [ADDR]:PORT)");
  }
  return *addr;
}

}  // namespace

Result<AgentOptions> build_options(const Settings& s) {
  AgentOptions o;
  const struct {
    const char* key;
    const char* flag;
    std::string* out;
  } required[] = {{"name", "name", &o.name},
                  {"dc", "dc", &o.dc},
                  {"data_dir", "data-dir", &o.data_dir},
                  {"cluster_key_file", "cluster-key-file", &o.cluster_key_file}};
  for (const auto& r : required) {
    auto it = s.values.find(r.key);
    if (it == s.values.end() || it->second.empty()) {
      return make_error(Code::kInvalidArgument, std::string("--") + r.flag + " is required (see --help)");
    }
    *r.out = it->second;
  }
  if (s.values.count("bind")) {
    auto a = address_setting(s, "bind", "bind");
    if (!a) return std::unexpected(a.error());
    o.bind = *a;
  }
  if (s.values.count("admin")) {
    auto a = address_setting(s, "admin", "admin");
    if (!a) return std::unexpected(a.error());
    o.admin = *a;
  }
  if (s.values.count("advertise")) {
    auto a = address_setting(s, "advertise", "advertise");
    if (!a) return std::unexpected(a.error());
    o.advertise = *a;
  }
  for (const auto& j : s.join) {
    auto a = parse_address(j);
    if (!a) {
      return make_error(Code::kInvalidArgument, "--join " + j + ": " + a.error().message);
    }
    o.join.push_back(*a);
  }
  if (auto it = s.values.find("profile"); it != s.values.end()) {
    auto p = gossip::parse_profile(it->second);
    if (!p) {
      return make_error(Code::kInvalidArgument, "--profile " + it->second + ": use lan, wan or local");
    }
    o.profile = *p;
  }
  for (const auto& [key, flag, target] : {std::tuple{"save_interval", "--save-interval", &o.save_interval},
                                          std::tuple{"rebalance_after", "--rebalance-after", &o.rebalance_after}}) {
    auto it = s.values.find(key);
    if (it == s.values.end()) continue;
    // "300", "30s", "5m", "1h"; 0 turns it off.
    const std::string& text = it->second;
    std::size_t used = 0;
    long long amount = -1;
    try {
      amount = std::stoll(text, &used);
    } catch (const std::exception&) {
    }
    const std::string unit = text.substr(used);
    const long long scale = unit.empty() || unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : 0;
    if (amount < 0 || scale == 0 || amount > 365LL * 24 * 3600) {
      return make_error(Code::kInvalidArgument, std::string(flag) + " " + text + ": use seconds or 30s, 5m, 1h (0 = off)");
    }
    *target = seconds(amount * scale);
  }
  o.fault_injection = s.fault_injection;
  return o;
}

}  // namespace shoal::agent
