// sim/scenario.cc: TOML scenario parsing. Every table is read through a
// TableReader that remembers which keys it consumed, so an unknown key (a
// typo such as `latncy_ms`) is an error naming its line instead of being
// silently ignored. toml++ reports syntax errors as exceptions; they are
// caught here, at the boundary, and turned into the same error format.

#include "sim/scenario.h"

#include <charconv>
#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "gossip/membership.h"

namespace shoal::sim {
namespace {

std::string fmt_error(std::string_view path, int line, std::string_view key, std::string_view what) {
  std::string out(path);
  out += ":" + std::to_string(line) + ": ";
  if (!key.empty()) {
    out += std::string(key) + ": ";
  }
  out += what;
  return out;
}

int line_of(const toml::node& node) { return static_cast<int>(node.source().begin.line); }

class TableReader {
 public:
  TableReader(const toml::table& table, std::string prefix, std::string_view path)
      : table_(table), prefix_(std::move(prefix)), path_(path) {}

  std::string key_name(std::string_view key) const {
    return prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
  }
  int line() const { return line_of(table_); }
  const toml::node* get(std::string_view key) {
    used_.insert(std::string(key));
    return table_.get(key);
  }
  std::unexpected<Error> error(std::string_view key, std::string_view what) const {
    const toml::node* node = table_.get(key);
    const int line = node != nullptr ? line_of(*node) : line_of(table_);
    return make_error(Code::kInvalidArgument, fmt_error(path_, line, key_name(key), what));
  }

  Status read_string(std::string_view key, std::string& out) {
    const toml::node* node = get(key);
    if (node == nullptr) {
      return ok_status();
    }
    if (!node->is_string()) {
      return error(key, "expected a string");
    }
    out = node->as_string()->get();
    return ok_status();
  }
  Status read_bool(std::string_view key, bool& out) {
    const toml::node* node = get(key);
    if (node == nullptr) {
      return ok_status();
    }
    if (!node->is_boolean()) {
      return error(key, "expected true or false");
    }
    out = node->as_boolean()->get();
    return ok_status();
  }
  Status read_u64(std::string_view key, std::uint64_t& out, std::uint64_t max) {
    const toml::node* node = get(key);
    if (node == nullptr) {
      return ok_status();
    }
    if (!node->is_integer()) {
      return error(key, "expected an integer");
    }
    const std::int64_t v = node->as_integer()->get();
    if (v < 0 || static_cast<std::uint64_t>(v) > max) {
      return error(key, "out of range [0, " + std::to_string(max) + "]");
    }
    out = static_cast<std::uint64_t>(v);
    return ok_status();
  }
  Status read_u32(std::string_view key, std::uint32_t& out, std::uint32_t max) {
    std::uint64_t v = out;
    SHOAL_TRY_STATUS(read_u64(key, v, max));
    out = static_cast<std::uint32_t>(v);
    return ok_status();
  }
  Status read_int(std::string_view key, int& out, int min, int max) {
    const toml::node* node = get(key);
    if (node == nullptr) {
      return ok_status();
    }
    if (!node->is_integer()) {
      return error(key, "expected an integer");
    }
    const std::int64_t v = node->as_integer()->get();
    if (v < min || v > max) {
      return error(key, "out of range [" + std::to_string(min) + ", " + std::to_string(max) + "]");
    }
    out = static_cast<int>(v);
    return ok_status();
  }
  Status read_double(std::string_view key, double& out, double min, double max) {
    const toml::node* node = get(key);
    if (node == nullptr) {
      return ok_status();
    }
    double v = 0;
    if (node->is_integer()) {
      v = static_cast<double>(node->as_integer()->get());
    } else if (node->is_floating_point()) {
      v = node->as_floating_point()->get();
    } else {
      return error(key, "expected a number");
    }
    if (!(v >= min && v <= max)) {
      std::ostringstream range;
      range << "out of range [" << min << ", " << max << "]";
      return error(key, range.str());
    }
    out = v;
    return ok_status();
  }
  Status read_optional_double(std::string_view key, std::optional<double>& out, double min, double max) {
    if (table_.get(key) == nullptr) {
      used_.insert(std::string(key));
      return ok_status();
    }
    double v = 0;
    SHOAL_TRY_STATUS(read_double(key, v, min, max));
    out = v;
    return ok_status();
  }
  // A duration: a string with a unit ("250ms") or a number of seconds.
  Status read_duration(std::string_view key, Duration& out, Duration max = kDurationMax) {
    const toml::node* node = get(key);
    if (node == nullptr) {
      return ok_status();
    }
    Duration d{0};
    if (node->is_string()) {
      auto parsed = parse_duration(node->as_string()->get());
      if (!parsed) {
        return error(key, parsed.error().message);
      }
      d = *parsed;
    } else if (node->is_integer() || node->is_floating_point()) {
      const double s = node->is_integer() ? static_cast<double>(node->as_integer()->get())
                                          : node->as_floating_point()->get();
      if (!(s >= 0 && s <= to_seconds(kDurationMax))) {
        return error(key, "out of range");
      }
      d = Duration(static_cast<std::int64_t>(std::llround(s * 1e6)));
    } else {
      return error(key, "expected a duration such as \"250ms\", \"30s\", \"5m\" or a number of seconds");
    }
    if (d < Duration(0) || d > max) {
      return error(key, "duration out of range");
    }
    out = d;
    return ok_status();
  }
  Status read_optional_duration(std::string_view key, std::optional<Duration>& out) {
    if (table_.get(key) == nullptr) {
      used_.insert(std::string(key));
      return ok_status();
    }
    Duration d{0};
    SHOAL_TRY_STATUS(read_duration(key, d));
    out = d;
    return ok_status();
  }
  Status read_string_list(std::string_view key, std::vector<std::string>& out) {
    const toml::node* node = get(key);
    if (node == nullptr) {
      return ok_status();
    }
    if (node->is_string()) {
      out.push_back(node->as_string()->get());
      return ok_status();
    }
    if (!node->is_array()) {
      return error(key, "expected a string or an array of strings");
    }
    for (const auto& item : *node->as_array()) {
      if (!item.is_string()) {
        return make_error(Code::kInvalidArgument,
                          fmt_error(path_, line_of(item), key_name(key), "expected strings only"));
      }
      out.push_back(item.as_string()->get());
    }
    return ok_status();
  }

  // Fails on the first key that no read_*() asked for.
  Status reject_unknown() const {
    for (const auto& [key, node] : table_) {
      if (!used_.contains(std::string(key.str()))) {
        return make_error(Code::kInvalidArgument,
                          fmt_error(path_, line_of(node), key_name(key.str()), "unknown key"));
      }
    }
    return ok_status();
  }

 private:
  const toml::table& table_;
  std::string prefix_;
  std::string_view path_;
  std::set<std::string> used_;
};

Result<FaultKind> parse_fault_kind(std::string_view name) {
  static constexpr FaultKind kAll[] = {FaultKind::kCrash,     FaultKind::kRestart,   FaultKind::kPause,
                                       FaultKind::kDcOutage,  FaultKind::kDcReturn,  FaultKind::kPartition,
                                       FaultKind::kHeal,      FaultKind::kJoin,      FaultKind::kLeave};
  for (FaultKind kind : kAll) {
    if (fault_kind_name(kind) == name) {
      return kind;
    }
  }
  return make_error(Code::kInvalidArgument,
                    "unknown fault kind '" + std::string(name) +
                        "' (expected crash, restart, pause, dc_outage, dc_return, partition, heal, join or leave)");
}

Status parse_gossip(TableReader& r, gossip::Config& cfg) {
  int probe_interval_ms = static_cast<int>(to_ms(cfg.probe_interval));
  int probe_timeout_ms = static_cast<int>(to_ms(cfg.probe_timeout));
  int gossip_interval_ms = static_cast<int>(to_ms(cfg.gossip_interval));
  int push_pull_interval_ms = static_cast<int>(to_ms(cfg.push_pull_interval));
  SHOAL_TRY_STATUS(r.read_int("probe_interval_ms", probe_interval_ms, 1, 600000));
  SHOAL_TRY_STATUS(r.read_int("probe_timeout_ms", probe_timeout_ms, 1, 600000));
  SHOAL_TRY_STATUS(r.read_int("gossip_interval_ms", gossip_interval_ms, 1, 600000));
  SHOAL_TRY_STATUS(r.read_int("push_pull_interval_ms", push_pull_interval_ms, 0, 3600000));
  SHOAL_TRY_STATUS(r.read_int("indirect_checks", cfg.indirect_checks, 0, 64));
  SHOAL_TRY_STATUS(r.read_int("suspicion_mult", cfg.suspicion_mult, 1, 100));
  SHOAL_TRY_STATUS(r.read_int("suspicion_max_timeout_mult", cfg.suspicion_max_timeout_mult, 1, 100));
  SHOAL_TRY_STATUS(r.read_int("gossip_nodes", cfg.gossip_nodes, 1, 64));
  SHOAL_TRY_STATUS(r.read_int("retransmit_mult", cfg.retransmit_mult, 1, 100));
  SHOAL_TRY_STATUS(r.read_int("awareness_max", cfg.awareness_max, 1, 100));
  SHOAL_TRY_STATUS(r.read_duration("stall_budget", cfg.stall_budget));
  SHOAL_TRY_STATUS(r.read_duration("gossip_to_dead", cfg.gossip_to_dead));
  SHOAL_TRY_STATUS(r.read_duration("reconnect_interval", cfg.reconnect_interval));
  SHOAL_TRY_STATUS(r.read_duration("eager_gossip_interval", cfg.eager_gossip_interval));
  cfg.probe_interval = milliseconds(probe_interval_ms);
  cfg.probe_timeout = milliseconds(probe_timeout_ms);
  cfg.gossip_interval = milliseconds(gossip_interval_ms);
  cfg.push_pull_interval = milliseconds(push_pull_interval_ms);
  return r.reject_unknown();
}

Status parse_latency(TableReader& r, std::string_view mean_key, std::string_view jitter_key, Duration& mean,
                     Duration& jitter) {
  double mean_ms = static_cast<double>(mean.count()) / 1000.0;
  double jitter_ms = static_cast<double>(jitter.count()) / 1000.0;
  SHOAL_TRY_STATUS(r.read_double(mean_key, mean_ms, 0, 60000));
  SHOAL_TRY_STATUS(r.read_double(jitter_key, jitter_ms, 0, 60000));
  if (jitter_ms > mean_ms) {
    return r.error(jitter_key, "jitter must not exceed the mean latency");
  }
  mean = Duration(static_cast<std::int64_t>(std::llround(mean_ms * 1000)));
  jitter = Duration(static_cast<std::int64_t>(std::llround(jitter_ms * 1000)));
  return ok_status();
}

Status parse_network(const toml::table& table, std::string_view path, NetOptions& net) {
  TableReader r(table, "network", path);
  SHOAL_TRY_STATUS(parse_latency(r, "latency_ms", "jitter_ms", net.latency_mean, net.latency_jitter));
  SHOAL_TRY_STATUS(parse_latency(r, "wan_latency_ms", "wan_jitter_ms", net.wan_latency_mean, net.wan_latency_jitter));
  SHOAL_TRY_STATUS(r.read_double("loss", net.loss, 0, 1));
  SHOAL_TRY_STATUS(r.read_double("duplicate", net.duplicate, 0, 1));
  SHOAL_TRY_STATUS(r.read_double("reorder", net.reorder, 0, 1));
  SHOAL_TRY_STATUS(r.read_duration("reorder_delay", net.reorder_delay, seconds(60)));
  SHOAL_TRY_STATUS(r.read_u64("bandwidth_bytes_per_second", net.bandwidth_bytes_per_second, 1ULL << 40));
  SHOAL_TRY_STATUS(r.read_duration("egress_queue_max", net.egress_queue_max, seconds(60)));
  SHOAL_TRY_STATUS(r.read_duration("stream_timeout", net.stream_timeout, seconds(600)));
  std::uint64_t backlog = net.paused_backlog_max;
  SHOAL_TRY_STATUS(r.read_u64("paused_backlog_max", backlog, 1 << 20));
  net.paused_backlog_max = backlog;
  if (const toml::node* links = r.get("link"); links != nullptr) {
    if (!links->is_array_of_tables()) {
      return r.error("link", "expected [[network.link]] tables");
    }
    int i = 0;
    for (const auto& item : *links->as_array()) {
      TableReader lr(*item.as_table(), "network.link[" + std::to_string(i++) + "]", path);
      LinkOptions link;
      link.latency_mean = net.wan_latency_mean;
      link.latency_jitter = net.wan_latency_jitter;
      SHOAL_TRY_STATUS(lr.read_string("from", link.from));
      SHOAL_TRY_STATUS(lr.read_string("to", link.to));
      if (link.from.empty() || link.to.empty()) {
        return lr.error(link.from.empty() ? "from" : "to", "required (a data center name)");
      }
      SHOAL_TRY_STATUS(parse_latency(lr, "latency_ms", "jitter_ms", link.latency_mean, link.latency_jitter));
      SHOAL_TRY_STATUS(lr.read_optional_double("loss", link.loss, 0, 1));
      SHOAL_TRY_STATUS(lr.reject_unknown());
      net.links.push_back(std::move(link));
    }
  }
  return r.reject_unknown();
}

Status parse_fault(const toml::table& table, int index, std::string_view path, Scenario& sc) {
  TableReader r(table, "fault[" + std::to_string(index) + "]", path);
  FaultSpec f;
  f.line = r.line();
  std::string kind;
  SHOAL_TRY_STATUS(r.read_string("kind", kind));
  if (kind.empty()) {
    return r.error("kind", "required");
  }
  auto parsed = parse_fault_kind(kind);
  if (!parsed) {
    return r.error("kind", parsed.error().message);
  }
  f.kind = *parsed;
  if (table.get("at") == nullptr) {
    return r.error("at", "required (when the fault happens, e.g. \"30s\")");
  }
  SHOAL_TRY_STATUS(r.read_duration("at", f.at));
  SHOAL_TRY_STATUS(r.read_string_list("nodes", f.select.names));
  SHOAL_TRY_STATUS(r.read_u32("count", f.select.count, kNodesMax));
  SHOAL_TRY_STATUS(r.read_double("fraction", f.select.fraction, 0, 1));
  SHOAL_TRY_STATUS(r.read_string("dc", f.dc));
  f.select.dc = f.dc;
  SHOAL_TRY_STATUS(r.read_optional_duration("duration", f.duration));
  SHOAL_TRY_STATUS(r.read_optional_duration("duration_max", f.duration_max));
  SHOAL_TRY_STATUS(r.read_duration("every", f.every));
  SHOAL_TRY_STATUS(r.read_u32("times", f.times, kFaultActionsMax));
  SHOAL_TRY_STATUS(r.read_bool("sticky", f.sticky));
  SHOAL_TRY_STATUS(r.read_bool("power", f.power));
  SHOAL_TRY_STATUS(r.read_bool("one_way", f.one_way));
  SHOAL_TRY_STATUS(r.read_duration("spread", f.spread));
  if (const toml::node* groups = r.get("groups"); groups != nullptr) {
    if (!groups->is_array()) {
      return r.error("groups", "expected an array of arrays of data center names");
    }
    for (const auto& g : *groups->as_array()) {
      std::vector<std::string> side;
      if (!g.is_array()) {
        return r.error("groups", "expected an array of arrays of data center names");
      }
      for (const auto& name : *g.as_array()) {
        if (!name.is_string()) {
          return r.error("groups", "expected data center names (strings)");
        }
        side.push_back(name.as_string()->get());
      }
      f.groups.push_back(std::move(side));
    }
  }
  SHOAL_TRY_STATUS(r.reject_unknown());

  // Cross-field checks, each naming the key to fix.
  auto dc_known = [&](const std::string& name) {
    for (const auto& dc : sc.dcs) {
      if (dc.name == name) {
        return true;
      }
    }
    return false;
  };
  if (!f.dc.empty() && !dc_known(f.dc)) {
    return r.error("dc", "unknown data center '" + f.dc + "'");
  }
  if (f.every.count() > 0 && f.times < 1) {
    return r.error("times", "must be at least 1 with `every`");
  }
  if (f.every.count() == 0 && table.get("times") != nullptr && f.times != 1) {
    return r.error("times", "needs `every`");
  }
  if (f.duration_max && (!f.duration || *f.duration_max < *f.duration)) {
    return r.error("duration_max", "needs `duration` <= duration_max");
  }
  const bool selects = !f.select.names.empty() || f.select.count > 0 || f.select.fraction > 0;
  switch (f.kind) {
    case FaultKind::kCrash:
    case FaultKind::kPause:
    case FaultKind::kLeave:
    case FaultKind::kRestart:
      if (!selects && f.kind != FaultKind::kRestart) {
        return r.error("nodes", "say which nodes: `nodes`, `count` or `fraction`");
      }
      if (f.kind == FaultKind::kPause && !f.duration) {
        return r.error("duration", "required for pause");
      }
      break;
    case FaultKind::kDcOutage:
    case FaultKind::kDcReturn:
      if (f.dc.empty()) {
        return r.error("dc", "required for " + kind);
      }
      break;
    case FaultKind::kPartition:
      if (f.groups.empty() && f.select.fraction <= 0 && f.select.count == 0 && f.select.names.empty()) {
        return r.error("groups", "say what is cut off: `groups` of DCs, `nodes`, `count` or `fraction`");
      }
      for (const auto& side : f.groups) {
        for (const auto& name : side) {
          if (!dc_known(name)) {
            return r.error("groups", "unknown data center '" + name + "'");
          }
        }
      }
      if (!f.groups.empty() && f.groups.size() < 2) {
        return r.error("groups", "needs at least two groups");
      }
      break;
    case FaultKind::kHeal:
      break;
    case FaultKind::kJoin:
      if (f.select.count == 0) {
        return r.error("count", "required for join (how many new nodes)");
      }
      if (f.dc.empty()) {
        if (sc.dcs.empty()) {
          return r.error("dc", "required for join");
        }
        f.dc = sc.dcs.front().name;
      }
      break;
  }
  sc.faults.push_back(std::move(f));
  return ok_status();
}

Status parse_root(const toml::table& root, std::string_view path, Scenario& sc) {
  TableReader r(root, "", path);
  SHOAL_TRY_STATUS(r.read_string("name", sc.name));
  SHOAL_TRY_STATUS(r.read_string("description", sc.description));
  SHOAL_TRY_STATUS(r.read_u64("seed", sc.seed, UINT64_MAX >> 1));
  SHOAL_TRY_STATUS(r.read_duration("duration", sc.duration));
  if (sc.duration.count() <= 0) {
    return r.error("duration", "must be positive");
  }
  SHOAL_TRY_STATUS(r.read_string("profile", sc.profile_name));
  auto profile = gossip::parse_profile(sc.profile_name);
  if (!profile) {
    return r.error("profile", "unknown profile '" + sc.profile_name + "' (expected lan, wan or local)");
  }
  sc.gossip = gossip::profile_config(*profile);

  const toml::node* dcs = r.get("dc");
  if (dcs == nullptr || !dcs->is_array_of_tables() || dcs->as_array()->empty()) {
    return r.error("dc", "required: at least one [[dc]] table with `name` and `nodes`");
  }
  int i = 0;
  for (const auto& item : *dcs->as_array()) {
    TableReader dr(*item.as_table(), "dc[" + std::to_string(i++) + "]", path);
    DcOptions dc;
    SHOAL_TRY_STATUS(dr.read_string("name", dc.name));
    if (dc.name.empty()) {
      return dr.error("name", "required");
    }
    for (const auto& other : sc.dcs) {
      if (other.name == dc.name) {
        return dr.error("name", "duplicate data center '" + dc.name + "'");
      }
    }
    SHOAL_TRY_STATUS(dr.read_u32("nodes", dc.nodes, kNodesMax));
    SHOAL_TRY_STATUS(dr.reject_unknown());
    sc.dcs.push_back(std::move(dc));
  }
  if (sc.dcs.size() > kDcsMax) {
    return r.error("dc", "at most " + std::to_string(kDcsMax) + " data centers");
  }
  if (sc.initial_nodes() < 1) {
    return r.error("dc", "at least one node is needed");
  }

  if (const toml::node* g = r.get("gossip"); g != nullptr) {
    if (!g->is_table()) {
      return r.error("gossip", "expected a table");
    }
    TableReader gr(*g->as_table(), "gossip", path);
    SHOAL_TRY_STATUS(parse_gossip(gr, sc.gossip));
  }
  {
    // The core asserts a valid configuration; check it here so a bad
    // scenario is an error naming the table, not a crash.
    gossip::Config probe = sc.gossip;
    probe.name = "probe";
    probe.dc = sc.dcs.front().name;
    probe.advertise = Address{"10.0.0.1", 7946};
    probe.health.version = "sim";
    if (auto valid = gossip::validate_config(probe); !valid) {
      return r.error(r.get("gossip") != nullptr ? "gossip" : "profile", valid.error().message);
    }
  }
  if (const toml::node* n = r.get("network"); n != nullptr) {
    if (!n->is_table()) {
      return r.error("network", "expected a table");
    }
    SHOAL_TRY_STATUS(parse_network(*n->as_table(), path, sc.net));
    for (const auto& link : sc.net.links) {
      for (const auto* name : {&link.from, &link.to}) {
        bool known = false;
        for (const auto& dc : sc.dcs) {
          known = known || dc.name == *name;
        }
        if (!known) {
          return make_error(Code::kInvalidArgument,
                            fmt_error(path, line_of(*n), "network.link", "unknown data center '" + *name + "'"));
        }
      }
    }
  }
  if (const toml::node* c = r.get("clock"); c != nullptr) {
    if (!c->is_table()) {
      return r.error("clock", "expected a table");
    }
    TableReader cr(*c->as_table(), "clock", path);
    SHOAL_TRY_STATUS(cr.read_duration("skew_max", sc.clock.skew_max, kSkewMax));
    SHOAL_TRY_STATUS(cr.read_double("drift_ppm_max", sc.clock.drift_ppm_max, 0, 100000));
    SHOAL_TRY_STATUS(cr.reject_unknown());
  }
  if (const toml::node* b = r.get("bootstrap"); b != nullptr) {
    if (!b->is_table()) {
      return r.error("bootstrap", "expected a table");
    }
    TableReader br(*b->as_table(), "bootstrap", path);
    std::string mode = "join";
    SHOAL_TRY_STATUS(br.read_string("mode", mode));
    if (mode == "converged") {
      sc.bootstrap.converged = true;
      sc.bootstrap.spread = Duration(0);
      for (const std::string_view key : {"spread", "seeds"}) {
        if (br.get(key) != nullptr) {
          return br.error(key, "does not apply to mode = \"converged\" (every node starts at 0 s knowing all)");
        }
      }
    } else if (mode != "join") {
      return br.error("mode", "unknown mode '" + mode + "' (expected join or converged)");
    }
    SHOAL_TRY_STATUS(br.read_duration("spread", sc.bootstrap.spread));
    SHOAL_TRY_STATUS(br.read_u32("seeds", sc.bootstrap.seeds, 16));
    SHOAL_TRY_STATUS(br.reject_unknown());
  }
  if (const toml::node* b = r.get("bounds"); b != nullptr) {
    if (!b->is_table()) {
      return r.error("bounds", "expected a table");
    }
    TableReader br(*b->as_table(), "bounds", path);
    SHOAL_TRY_STATUS(br.read_duration("detection", sc.bounds.detection));
    SHOAL_TRY_STATUS(br.read_duration("convergence", sc.bounds.convergence));
    SHOAL_TRY_STATUS(br.read_duration("disturbance_window", sc.bounds.disturbance_window));
    SHOAL_TRY_STATUS(br.reject_unknown());
  }
  if (const toml::node* pl = r.get("placement"); pl != nullptr) {
    if (!pl->is_table()) {
      return r.error("placement", "expected a table");
    }
    PlacementOptions& o = sc.placement;
    o.enabled = true;
    TableReader pr(*pl->as_table(), "placement", path);
    SHOAL_TRY_STATUS(pr.read_u32("projects", o.projects, 1000000));
    SHOAL_TRY_STATUS(pr.read_u32("replication_factor", o.replication_factor, 15));
    if (o.replication_factor == 0) {
      return pr.error("replication_factor", "must be at least 1");
    }
    SHOAL_TRY_STATUS(pr.read_duration("create_at", o.create_at));
    SHOAL_TRY_STATUS(pr.read_duration("save_interval", o.save_interval));
    SHOAL_TRY_STATUS(pr.read_duration("save_jitter", o.save_jitter));
    SHOAL_TRY_STATUS(pr.read_u64("snapshot_bytes_min", o.snapshot_bytes_min, 1ULL << 40));
    SHOAL_TRY_STATUS(pr.read_u64("snapshot_bytes_max", o.snapshot_bytes_max, 1ULL << 40));
    if (o.snapshot_bytes_max < o.snapshot_bytes_min) {
      return pr.error("snapshot_bytes_max", "smaller than snapshot_bytes_min");
    }
    SHOAL_TRY_STATUS(pr.read_u64("bandwidth_bytes_per_second", o.bandwidth_bytes_per_second, 1ULL << 40));
    SHOAL_TRY_STATUS(pr.read_duration("failover_grace", o.failover_grace));
    SHOAL_TRY_STATUS(pr.read_duration("repair_interval", o.repair_interval));
    SHOAL_TRY_STATUS(pr.read_duration("primary_check", o.primary_check));
    SHOAL_TRY_STATUS(pr.read_duration("collect_interval", o.collect_interval));
    SHOAL_TRY_STATUS(pr.read_duration("push_timeout", o.push_timeout));
    SHOAL_TRY_STATUS(pr.read_double("read_fault", o.read_fault, 0, 1));
    SHOAL_TRY_STATUS(pr.read_duration("convergence", o.convergence));
    SHOAL_TRY_STATUS(pr.read_duration("sample_interval", o.sample_interval));
    for (const char* key : {"repair_interval", "sample_interval"}) {
      const Duration d = std::string_view(key) == "repair_interval" ? o.repair_interval : o.sample_interval;
      if (d < milliseconds(10)) {
        return pr.error(key, "must be at least 10ms");
      }
    }
    std::string bug = "none";
    SHOAL_TRY_STATUS(pr.read_string("bug", bug));
    if (bug == "none") {
      o.bug = PlacementBug::kNone;
    } else if (bug == "skip_phase1") {
      o.bug = PlacementBug::kSkipPhase1;
    } else if (bug == "ack_without_majority") {
      o.bug = PlacementBug::kAckWithoutMajority;
    } else if (bug == "delete_on_doubt") {
      o.bug = PlacementBug::kDeleteOnDoubt;
    } else if (bug == "no_repair") {
      o.bug = PlacementBug::kNoRepair;
    } else if (bug == "stale_read") {
      o.bug = PlacementBug::kStaleRead;
    } else {
      return pr.error("bug", "unknown bug '" + bug + "' (test-only: none, skip_phase1, ack_without_majority, "
                             "delete_on_doubt, no_repair, stale_read)");
    }
    SHOAL_TRY_STATUS(pr.reject_unknown());
  }
  if (const toml::node* faults = r.get("fault"); faults != nullptr) {
    if (!faults->is_array_of_tables()) {
      return r.error("fault", "expected [[fault]] tables");
    }
    int index = 0;
    for (const auto& item : *faults->as_array()) {
      SHOAL_TRY_STATUS(parse_fault(*item.as_table(), index++, path, sc));
    }
  }
  SHOAL_TRY_STATUS(r.reject_unknown());
  if (sc.node_slots() > kNodesMax) {
    return r.error("dc", "more than " + std::to_string(kNodesMax) + " nodes in total (with join waves)");
  }
  if (sc.name.empty()) {
    sc.name = std::string(path);
  }
  return ok_status();
}

}  // namespace

std::string_view fault_kind_name(FaultKind kind) {
  switch (kind) {
    case FaultKind::kCrash: return "crash";
    case FaultKind::kRestart: return "restart";
    case FaultKind::kPause: return "pause";
    case FaultKind::kDcOutage: return "dc_outage";
    case FaultKind::kDcReturn: return "dc_return";
    case FaultKind::kPartition: return "partition";
    case FaultKind::kHeal: return "heal";
    case FaultKind::kJoin: return "join";
    case FaultKind::kLeave: return "leave";
  }
  return "?";
}

std::uint32_t Scenario::initial_nodes() const {
  std::uint64_t n = 0;
  for (const auto& dc : dcs) {
    n += dc.nodes;
  }
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(n, UINT32_MAX));
}

std::uint32_t Scenario::node_slots() const {
  std::uint64_t n = initial_nodes();
  for (const auto& f : faults) {
    if (f.kind == FaultKind::kJoin) {
      n += static_cast<std::uint64_t>(f.select.count) * (f.every.count() > 0 ? f.times : 1);
    }
  }
  return static_cast<std::uint32_t>(std::min<std::uint64_t>(n, UINT32_MAX));
}

bool Scenario::any_loss() const {
  if (net.loss > 0) {
    return true;
  }
  for (const auto& link : net.links) {
    if (link.loss.value_or(0) > 0) {
      return true;
    }
  }
  return false;
}

Result<Duration> parse_duration(std::string_view text) {
  double value = 0;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || ptr == begin) {
    return make_error(Code::kInvalidArgument, "bad duration '" + std::string(text) + "'");
  }
  const std::string_view unit(ptr, static_cast<std::size_t>(end - ptr));
  double scale = 0;
  if (unit == "us") {
    scale = 1;
  } else if (unit == "ms") {
    scale = 1e3;
  } else if (unit == "s" || unit.empty()) {
    scale = 1e6;
  } else if (unit == "m" || unit == "min") {
    scale = 60e6;
  } else if (unit == "h") {
    scale = 3600e6;
  } else {
    return make_error(Code::kInvalidArgument,
                      "bad duration unit '" + std::string(unit) + "' in '" + std::string(text) + "' (us, ms, s, m, h)");
  }
  const double us = value * scale;
  if (!(us >= 0 && us <= static_cast<double>(kDurationMax.count()))) {
    return make_error(Code::kInvalidArgument, "duration '" + std::string(text) + "' out of range");
  }
  return Duration(static_cast<std::int64_t>(std::llround(us)));
}

Result<Scenario> parse_scenario(std::string_view text, std::string_view path) {
  Scenario sc;
  sc.path = std::string(path);
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    return make_error(Code::kInvalidArgument,
                      fmt_error(path, static_cast<int>(e.source().begin.line), "", std::string(e.description())));
  }
  SHOAL_TRY_STATUS(parse_root(root, path, sc));
  return sc;
}

Result<Scenario> load_scenario(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return make_error(Code::kNotFound, path + ": cannot open scenario file");
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) {
    return make_error(Code::kIOError, path + ": read failed");
  }
  return parse_scenario(buffer.str(), path);
}

}  // namespace shoal::sim
