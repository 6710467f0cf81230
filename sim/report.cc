// sim/report.cc: text, JSON, Markdown and SVG renderings of a Report. The SVG
// writer is deliberately tiny (polylines, axes, ticks, legend): plots must be
// produced by the binary itself on a machine with nothing else installed.

#include "sim/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace shoal::sim {
namespace {

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A "nice" tick step (1, 2 or 5 times a power of ten) for about `count` ticks.
double nice_step(double span, int count) {
  if (!(span > 0)) {
    return 1;
  }
  const double raw = span / count;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  const double nice = norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10;
  return nice * mag;
}

std::string latency_row(const std::string& name, const std::vector<double>& samples) {
  const LatencySummary s = summarize(samples);
  if (s.count == 0) {
    return "| " + name + " | 0 | - | - | - | - |\n";
  }
  return "| " + name + " | " + std::to_string(s.count) + " | " + fmt("%.2f", s.mean) + " | " + fmt("%.2f", s.p50) +
         " | " + fmt("%.2f", s.p99) + " | " + fmt("%.2f", s.max) + " |\n";
}

nlohmann::json latency_json(const std::vector<double>& samples) {
  const LatencySummary s = summarize(samples);
  return {{"count", s.count}, {"mean", s.mean}, {"p50", s.p50}, {"p99", s.p99}, {"max", s.max}};
}

std::vector<PlotSeries> cdf_series(const Report& r) {
  std::vector<PlotSeries> out;
  const std::pair<const char*, const std::vector<double>*> sets[] = {
      {"first suspicion", &r.first_suspect_s}, {"first dead", &r.first_dead_s}, {"dead everywhere", &r.full_dead_s}};
  for (const auto& [label, samples] : sets) {
    if (samples->empty()) {
      continue;
    }
    std::vector<double> sorted = *samples;
    std::sort(sorted.begin(), sorted.end());
    PlotSeries s;
    s.label = label;
    s.points.emplace_back(0.0, 0.0);
    for (std::size_t k = 0; k < sorted.size(); ++k) {
      s.points.emplace_back(sorted[k], static_cast<double>(k + 1) / static_cast<double>(sorted.size()));
    }
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<PlotSeries> traffic_series(const Report& r) {
  PlotSeries msgs;
  msgs.label = "messages/node/s";
  PlotSeries kib;
  kib.label = "KiB/node/s";
  for (std::size_t b = 0; b < r.traffic.size(); ++b) {
    const auto& t = r.traffic[b];
    if (t.node_seconds <= 0) {
      continue;
    }
    msgs.points.emplace_back(static_cast<double>(b), static_cast<double>(t.messages) / t.node_seconds);
    kib.points.emplace_back(static_cast<double>(b), static_cast<double>(t.bytes) / 1024.0 / t.node_seconds);
  }
  return {msgs, kib};
}

}  // namespace

LatencySummary summarize(std::vector<double> samples) {
  LatencySummary s;
  s.count = samples.size();
  if (samples.empty()) {
    return s;
  }
  std::sort(samples.begin(), samples.end());
  double sum = 0;
  for (double v : samples) {
    sum += v;
  }
  s.mean = sum / static_cast<double>(samples.size());
  auto pct = [&](double p) {
    // Nearest rank: the smallest sample with at least p of the samples at or below it.
    const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(samples.size())));
    return samples[std::min(samples.size() - 1, rank == 0 ? 0 : rank - 1)];
  };
  s.p50 = pct(0.50);
  s.p99 = pct(0.99);
  s.max = samples.back();
  return s;
}

std::string format_text(const Report& r) {
  std::ostringstream o;
  o << "scenario " << r.scenario << "  seed " << r.seed << "  nodes " << r.nodes << "  simulated "
    << fmt("%.1f", r.sim_seconds) << "s  wall " << fmt("%.2f", r.wall_seconds) << "s ("
    << fmt("%.1f", r.wall_seconds > 0 ? r.sim_seconds / r.wall_seconds : 0) << " sim-s/wall-s)  events " << r.events
    << "\n";
  auto line = [&](const char* name, const std::vector<double>& v) {
    const LatencySummary s = summarize(v);
    o << "  " << name << ": ";
    if (s.count == 0) {
      o << "none\n";
      return;
    }
    o << "n=" << s.count << " mean " << fmt("%.2f", s.mean) << "s p50 " << fmt("%.2f", s.p50) << "s p99 "
      << fmt("%.2f", s.p99) << "s max " << fmt("%.2f", s.max) << "s\n";
  };
  o << "detection (crashes tracked " << r.crashes_tracked << ", incomplete " << r.crashes_incomplete << ")\n";
  line("first suspicion", r.first_suspect_s);
  line("first dead     ", r.first_dead_s);
  line("dead everywhere", r.full_dead_s);
  line("dissemination  ", r.dissemination_s);
  line("join known everywhere", r.join_full_s);
  o << "false positives " << r.false_positives << " (excused " << r.false_positives_excused << ", "
    << fmt("%.3f", r.node_hours > 0 ? static_cast<double>(r.false_positives) / r.node_hours : 0)
    << " per node-hour), false suspicions " << r.false_suspicions << "\n";
  for (const auto& c : r.convergence) {
    o << "convergence after " << c.what << ": "
      << (c.seconds >= 0 ? fmt("%.2fs", c.seconds) : std::string("not reached")) << (c.overlapped ? " (overlapped)" : "")
      << "\n";
  }
  o << "traffic from " << fmt("%.1f", r.steady_from_s) << "s: " << fmt("%.2f", r.messages_per_node_second)
    << " messages and " << fmt("%.0f", r.bytes_per_node_second) << " bytes per node per second\n";
  o << "network: sent " << r.net.datagrams_sent << " delivered " << r.net.datagrams_delivered << " lost "
    << r.net.dropped_loss << " cut " << r.net.dropped_partition << " queue " << r.net.dropped_queue
    << " to-down " << r.net.dropped_not_running << " dup " << r.net.duplicated << " streams " << r.net.streams
    << " (timeouts " << r.net.stream_timeouts << ", refused " << r.net.stream_refused << ")\n";
  o << "core: probes " << r.core.probes_sent << " failed " << r.core.probes_failed << " suspicions "
    << r.core.suspicions << " refutations " << r.core.refutations << " deaths " << r.core.deaths_declared
    << " push-pulls " << r.core.push_pulls << " decode errors " << r.core.decode_errors << "\n";
  if (r.placement.enabled) {
    const PlacementReport& p = r.placement;
    o << "placement: " << p.projects << " projects, commits " << p.commits << ", failovers " << p.failovers
      << ", moves " << p.moves << ", saves " << p.saves_acked << "/" << p.saves_started << " acknowledged ("
      << p.saves_failed << " failed, " << p.saves_deferred << " deferred), pushes " << p.pushes << " (fenced " << p.pushes_fenced << "), copied "
      << fmt("%.1f", static_cast<double>(p.bytes_copied) / (1 << 20)) << " MiB, collected " << p.copies_collected
      << " (stray at the end " << p.stray_copies_at_end << ")\n";
    o << "  proposals " << p.proposals << " (failed " << p.proposals_failed << ", fast path " << p.fast_path
      << ", prepares " << p.prepares << ", conflicts " << p.conflicts << "), injected read faults " << p.read_faults
      << "\n";
    const LatencySummary np = summarize(p.new_primary_s);
    const LatencySummary npp = summarize(p.new_primary_periods);
    o << "  new primary after confirmation: primaries lost " << p.primaries_lost << ", not replaced "
      << p.primaries_not_replaced;
    if (np.count > 0) {
      o << ", p50 " << fmt("%.2f", np.p50) << "s p99 " << fmt("%.2f", np.p99) << "s max " << fmt("%.2f", np.max)
        << "s (p50 " << fmt("%.1f", npp.p50) << ", p99 " << fmt("%.1f", npp.p99) << " protocol periods)";
    }
    o << "\n  re-replicated after the last fault (" << fmt("%.1f", p.last_fault_s) << "s): "
      << (p.rereplicated_s >= 0 ? fmt("%.1fs", p.rereplicated_s) : std::string("not reached"))
      << ", unconverged projects at the end " << p.unconverged_at_end << "\n";
  }
  if (r.tick_storms > 0) {
    o << "warning: the core asked for a deadline in the past " << r.tick_storms << " times\n";
  }
  o << "violations " << r.violations_total << "\n";
  for (const auto& v : r.violations) {
    o << "  " << fmt("%.3f", v.at_s) << "s " << v.invariant << ": " << v.message << "\n";
  }
  o << "hash " << r.hash << "\n";
  return o.str();
}

std::string format_json(const Report& r) {
  nlohmann::json j;
  j["scenario"] = r.scenario;
  j["scenario_path"] = r.scenario_path;
  j["seed"] = r.seed;
  j["nodes"] = r.nodes;
  j["sim_seconds"] = r.sim_seconds;
  j["wall_seconds"] = r.wall_seconds;
  j["events"] = r.events;
  j["hash"] = r.hash;
  j["detection"] = {{"crashes_tracked", r.crashes_tracked},
                    {"crashes_incomplete", r.crashes_incomplete},
                    {"first_suspicion_s", latency_json(r.first_suspect_s)},
                    {"first_dead_s", latency_json(r.first_dead_s)},
                    {"dead_everywhere_s", latency_json(r.full_dead_s)},
                    {"dissemination_s", latency_json(r.dissemination_s)},
                    {"first_suspicion_protocol_periods",
                     summarize(r.first_suspect_s).mean / std::max(r.probe_interval_s, 1e-9)}};
  j["join_known_everywhere_s"] = latency_json(r.join_full_s);
  j["false_positives"] = {{"count", r.false_positives},
                          {"excused", r.false_positives_excused},
                          {"per_node_hour", r.node_hours > 0 ? static_cast<double>(r.false_positives) / r.node_hours : 0},
                          {"false_suspicions", r.false_suspicions},
                          {"node_hours", r.node_hours}};
  nlohmann::json conv = nlohmann::json::array();
  for (const auto& c : r.convergence) {
    conv.push_back({{"what", c.what}, {"at_s", c.at_s}, {"seconds", c.seconds >= 0 ? nlohmann::json(c.seconds) : nullptr},
                    {"overlapped", c.overlapped}});
  }
  j["convergence"] = conv;
  j["traffic"] = {{"steady_from_s", r.steady_from_s},
                  {"messages_per_node_second", r.messages_per_node_second},
                  {"bytes_per_node_second", r.bytes_per_node_second}};
  j["network"] = {{"datagrams_sent", r.net.datagrams_sent},     {"datagrams_delivered", r.net.datagrams_delivered},
                  {"dropped_loss", r.net.dropped_loss},         {"dropped_partition", r.net.dropped_partition},
                  {"dropped_queue", r.net.dropped_queue},       {"dropped_not_running", r.net.dropped_not_running},
                  {"dropped_backlog", r.net.dropped_backlog},   {"dropped_bad_address", r.net.dropped_bad_address},
                  {"duplicated", r.net.duplicated},             {"streams", r.net.streams},
                  {"stream_timeouts", r.net.stream_timeouts},   {"stream_refused", r.net.stream_refused}};
  j["core"] = {{"probes_sent", r.core.probes_sent},   {"probes_failed", r.core.probes_failed},
               {"suspicions", r.core.suspicions},     {"refutations", r.core.refutations},
               {"deaths_declared", r.core.deaths_declared}, {"push_pulls", r.core.push_pulls},
               {"decode_errors", r.core.decode_errors}};
  nlohmann::json aw = nlohmann::json::array();
  for (const auto& a : r.awareness) {
    aw.push_back({{"label", a.label}, {"points", a.points}});
  }
  j["awareness"] = aw;
  nlohmann::json viol = nlohmann::json::array();
  for (const auto& v : r.violations) {
    viol.push_back({{"at_s", v.at_s}, {"invariant", v.invariant}, {"message", v.message}});
  }
  j["violations"] = viol;
  j["violations_total"] = r.violations_total;
  j["tick_storms"] = r.tick_storms;
  if (r.placement.enabled) {
    const PlacementReport& p = r.placement;
    j["placement"] = {{"projects", p.projects},
                      {"commits", p.commits},
                      {"failovers", p.failovers},
                      {"moves", p.moves},
                      {"saves_started", p.saves_started},
                      {"saves_acked", p.saves_acked},
                      {"saves_failed", p.saves_failed},
                      {"saves_deferred", p.saves_deferred},
                      {"pushes", p.pushes},
                      {"pushes_fenced", p.pushes_fenced},
                      {"bytes_copied", p.bytes_copied},
                      {"stray_copies_at_end", p.stray_copies_at_end},
                      {"copies_collected", p.copies_collected},
                      {"proposals", p.proposals},
                      {"proposals_failed", p.proposals_failed},
                      {"fast_path", p.fast_path},
                      {"prepares", p.prepares},
                      {"conflicts", p.conflicts},
                      {"read_faults", p.read_faults},
                      {"primaries_lost", p.primaries_lost},
                      {"primaries_not_replaced", p.primaries_not_replaced},
                      {"new_primary_s", latency_json(p.new_primary_s)},
                      {"new_primary_protocol_periods", latency_json(p.new_primary_periods)},
                      {"last_fault_s", p.last_fault_s},
                      {"rereplicated_s", p.rereplicated_s >= 0 ? nlohmann::json(p.rereplicated_s) : nullptr},
                      {"unconverged_at_end", p.unconverged_at_end}};
  }
  return j.dump(2) + "\n";
}

std::string format_markdown(const Report& r) {
  std::ostringstream o;
  o << "# Simulation report: " << r.scenario << "\n\n";
  o << "- scenario file: `" << r.scenario_path << "`, seed " << r.seed << " (reproduce: `shoal sim run "
    << r.scenario_path << " --seed " << r.seed << "`)\n";
  o << "- " << r.nodes << " node slots, " << fmt("%.1f", r.sim_seconds) << " simulated seconds in "
    << fmt("%.2f", r.wall_seconds) << " s wall, " << r.events << " events\n";
  o << "- event-log hash (BLAKE2b-256): `" << r.hash << "`\n";
  o << "- invariant violations: **" << r.violations_total << "**\n\n";
  o << "## Failure detection\n\nSeconds after each crash (" << r.crashes_tracked << " crashes tracked, "
    << r.crashes_incomplete << " not known dead everywhere by the end).\n\n";
  o << "| measure | n | mean | p50 | p99 | max |\n|---|---|---|---|---|---|\n";
  o << latency_row("first suspicion", r.first_suspect_s);
  o << latency_row("first declared dead", r.first_dead_s);
  o << latency_row("dead at every live node", r.full_dead_s);
  o << latency_row("dissemination (first dead to everywhere)", r.dissemination_s);
  o << latency_row("joined node known everywhere", r.join_full_s);
  o << "\n![CDF of detection latency](detection_cdf.svg)\n\n";
  o << "## False positives\n\n";
  o << "- declared dead while alive and reachable: " << r.false_positives << " (" << r.false_positives_excused
    << " under injected pause, loss or partition), "
    << fmt("%.4f", r.node_hours > 0 ? static_cast<double>(r.false_positives) / r.node_hours : 0)
    << " per node-hour over " << fmt("%.2f", r.node_hours) << " node-hours\n";
  o << "- suspected while alive and reachable: " << r.false_suspicions << "\n\n";
  o << "## Convergence\n\n| after | at (s) | converged in (s) |\n|---|---|---|\n";
  for (const auto& c : r.convergence) {
    o << "| " << c.what << " | " << fmt("%.1f", c.at_s) << " | "
      << (c.seconds >= 0 ? fmt("%.2f", c.seconds) : std::string("not reached")) << (c.overlapped ? " (overlapped)" : "")
      << " |\n";
  }
  o << "\n## Awareness over time\n\n![Fraction of live nodes aware of each event](awareness.svg)\n\n";
  o << "## Traffic\n\nFrom " << fmt("%.1f", r.steady_from_s) << " s (bootstrap converged): "
    << fmt("%.2f", r.messages_per_node_second) << " messages and " << fmt("%.0f", r.bytes_per_node_second)
    << " bytes (sealed) per node per second.\n\n![Traffic over time](traffic.svg)\n\n";
  o << "## Network and core counters\n\n```\n";
  const std::string text = format_text(r);
  const auto net_pos = text.find("network:");
  o << (net_pos != std::string::npos ? text.substr(net_pos) : text) << "```\n";
  if (!r.violations.empty()) {
    o << "\n## Violations\n\n";
    for (const auto& v : r.violations) {
      o << "- " << fmt("%.3f", v.at_s) << " s **" << v.invariant << "**: " << v.message << "\n";
    }
  }
  return o.str();
}

std::string svg_line_plot(const std::string& title, const std::string& x_label, const std::string& y_label,
                          const std::vector<PlotSeries>& series, bool step) {
  constexpr double kWidth = 720;
  constexpr double kHeight = 420;
  constexpr double kLeft = 70;
  constexpr double kRight = 180;
  constexpr double kTop = 40;
  constexpr double kBottom = 50;
  static const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2"};
  double x_min = 0;
  double x_max = 1;
  double y_min = 0;
  double y_max = 1;
  bool any = false;
  for (const auto& s : series) {
    for (const auto& [x, y] : s.points) {
      if (!any) {
        x_min = x_max = x;
        y_max = y;
        any = true;
      }
      x_min = std::min(x_min, x);
      x_max = std::max(x_max, x);
      y_max = std::max(y_max, y);
    }
  }
  x_min = std::min(x_min, 0.0);
  if (x_max <= x_min) {
    x_max = x_min + 1;
  }
  if (y_max <= y_min) {
    y_max = y_min + 1;
  }
  const double x_step = nice_step(x_max - x_min, 8);
  const double y_step = nice_step(y_max - y_min, 5);
  x_max = std::ceil(x_max / x_step) * x_step;
  y_max = std::ceil(y_max / y_step) * y_step;
  const double pw = kWidth - kLeft - kRight;
  const double ph = kHeight - kTop - kBottom;
  auto px = [&](double x) { return kLeft + (x - x_min) / (x_max - x_min) * pw; };
  auto py = [&](double y) { return kTop + ph - (y - y_min) / (y_max - y_min) * ph; };

  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << "<text x=\"" << kWidth / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << xml_escape(title)
    << "</text>\n";
  for (double x = x_min; x <= x_max + x_step / 2; x += x_step) {
    o << "<line x1=\"" << px(x) << "\" y1=\"" << kTop << "\" x2=\"" << px(x) << "\" y2=\"" << kTop + ph
      << "\" stroke=\"#eee\"/>\n";
    o << "<text x=\"" << px(x) << "\" y=\"" << kTop + ph + 16 << "\" text-anchor=\"middle\">" << fmt("%g", x)
      << "</text>\n";
  }
  for (double y = y_min; y <= y_max + y_step / 2; y += y_step) {
    o << "<line x1=\"" << kLeft << "\" y1=\"" << py(y) << "\" x2=\"" << kLeft + pw << "\" y2=\"" << py(y)
      << "\" stroke=\"#eee\"/>\n";
    o << "<text x=\"" << kLeft - 6 << "\" y=\"" << py(y) + 4 << "\" text-anchor=\"end\">" << fmt("%g", y)
      << "</text>\n";
  }
  o << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"black\"/>\n";
  o << "<text x=\"" << kLeft + pw / 2 << "\" y=\"" << kHeight - 12 << "\" text-anchor=\"middle\">"
    << xml_escape(x_label) << "</text>\n";
  o << "<text transform=\"translate(16," << kTop + ph / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
    << xml_escape(y_label) << "</text>\n";
  for (std::size_t k = 0; k < series.size(); ++k) {
    const char* color = kColors[k % (sizeof kColors / sizeof kColors[0])];
    const auto& pts = series[k].points;
    if (!pts.empty()) {
      o << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.5\" points=\"";
      for (std::size_t p = 0; p < pts.size(); ++p) {
        if (step && p > 0) {
          o << fmt("%.1f", px(pts[p].first)) << "," << fmt("%.1f", py(pts[p - 1].second)) << " ";
        }
        o << fmt("%.1f", px(pts[p].first)) << "," << fmt("%.1f", py(pts[p].second)) << " ";
      }
      o << "\"/>\n";
    }
    const double ly = kTop + 14 + 18 * static_cast<double>(k);
    o << "<line x1=\"" << kLeft + pw + 10 << "\" y1=\"" << ly - 4 << "\" x2=\"" << kLeft + pw + 30 << "\" y2=\""
      << ly - 4 << "\" stroke=\"" << color << "\" stroke-width=\"2\"/>\n";
    std::string label = series[k].label;
    if (label.size() > 26) {
      label = label.substr(0, 25) + "…";
    }
    o << "<text x=\"" << kLeft + pw + 34 << "\" y=\"" << ly << "\">" << xml_escape(label) << "</text>\n";
  }
  if (series.empty() || !any) {
    o << "<text x=\"" << kLeft + pw / 2 << "\" y=\"" << kTop + ph / 2 << "\" text-anchor=\"middle\" fill=\"#888\">"
      << "no data</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

Status write_report_dir(const Report& r, const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return make_error(Code::kIOError, dir + ": cannot create directory: " + ec.message());
  }
  std::vector<PlotSeries> awareness;
  for (const auto& a : r.awareness) {
    awareness.push_back(PlotSeries{a.label, a.points});
  }
  const std::pair<std::string, std::string> files[] = {
      {"report.md", format_markdown(r)},
      {"report.json", format_json(r)},
      {"detection_cdf.svg",
       svg_line_plot("Detection latency (CDF)", "seconds after crash", "fraction of crashes", cdf_series(r), true)},
      {"awareness.svg",
       svg_line_plot("Awareness over time", "seconds after event", "fraction of live nodes aware", awareness, true)},
      {"traffic.svg", svg_line_plot("Traffic per node", "simulated seconds", "per node per second", traffic_series(r))},
  };
  for (const auto& [name, content] : files) {
    const std::string path = (std::filesystem::path(dir) / name).string();
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    out.close();
    if (!out) {
      return make_error(Code::kIOError, path + ": write failed");
    }
  }
  return ok_status();
}

}  // namespace shoal::sim
