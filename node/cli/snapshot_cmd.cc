// node/cli/snapshot_cmd.cc: `shoal snapshot <verb>`: the snapshot store,
// worked directly on a store directory (possibly a running agent's data
// directory: LMDB and the flock-based locks are multi-process safe).
// Exit codes: 0 success, 1 the operation found a problem (verify found damage,
// restore left damaged files out), 2 usage or I/O error.

#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "base/bytes.h"
#include "node/cli/commands.h"
#include "node/cli/flags.h"
#include "storage/snapshot_store.h"

namespace shoal::cli {
namespace {

using nlohmann::json;
using storage::SnapshotInfo;
using storage::SnapshotStore;

constexpr const char* kUsage = R"(usage: shoal snapshot <verb> --store DIR [options]

Deduplicated, compressed, verifiable snapshots of project directories, kept in
a store directory (one LMDB environment; may be a running agent's data dir).

verbs:
  create   --store DIR --project ID PATH [--json]      save PATH; prints the snapshot id
  list     --store DIR [--project ID] [--json]         snapshots, oldest first
  show     --store DIR [--project ID] SNAPSHOT [--json]
  diff     --store DIR [--project ID] SNAP_A SNAP_B [--json]
           lines: '+' added, '-' removed, 'M' contents changed, 'm' mode/mtime only
  restore  --store DIR --project ID [--snapshot S|latest] --to DIR [--force] [--json]
           DIR must be absent or empty unless --force
  verify   --store DIR [--project ID] [--snapshot S] [--json]
           re-hashes every chunk; exit 0 clean, 1 damage found, 2 usage or I/O error
  prune    --store DIR --project ID --keep-last N [--keep-hourly H] [--keep-daily D]
           [--keep-weekly W] [--dry-run] [--json]   (then run gc to free space)
  gc       --store DIR [--json]                        delete chunks no snapshot uses
  stats    --store DIR [--json]                        sizes, dedup and compression ratios
  quota    set --store DIR --project ID [--live BYTES] [--stored BYTES]   (0 = unlimited)
  quota    show --store DIR --project ID [--json]

SNAPSHOT is a full id, a unique prefix of at least 6 hex digits, or 'latest'
(with --project). BYTES accepts K, M, G, T suffixes (powers of 1024).
)";

int usage_error(const std::string& message) {
  std::fprintf(stderr, "shoal snapshot: %s\n(run `shoal snapshot --help` for usage)\n", message.c_str());
  return 2;
}

int fail(const Error& e) {
  std::fprintf(stderr, "shoal snapshot: %s\n", e.message.c_str());
  return 2;
}

std::string hex(const storage::ChunkId& id) { return to_hex(id); }

// Length of the valid UTF-8 sequence at s[i] (2-4 bytes, no overlongs or
// surrogates), 0 if there is none.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  std::size_t n = 0;
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) { n = 3; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
  else if (c >= 0xF0 && c <= 0xF4) { n = 4; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
  else return 0;
  if (i + n > s.size() || b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k) {
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  }
  return n;
}

// Path names are raw bytes (newlines, invalid UTF-8). In text output a name
// that is not plain printable text is shown like git does: in double quotes
// with C escapes (\n, \t, \", \\) and octal (\377) for other bytes, so every
// line is one entry and the bytes can be recovered.
std::string escaped(std::string_view s, bool* changed) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      if (const std::size_t n = utf8_sequence(s, i); n != 0) {
        out.append(s.substr(i, n));
        i += n;
        continue;
      }
    }
    ++i;
    switch (c) {
      case '\n': out += "\\n"; *changed = true; continue;
      case '\t': out += "\\t"; *changed = true; continue;
      case '\r': out += "\\r"; *changed = true; continue;
      case '"': out += "\\\""; *changed = true; continue;
      case '\\': out += "\\\\"; *changed = true; continue;
      default: break;
    }
    if (c < 0x20 || c >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\%03o", c);
      out += buf;
      *changed = true;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}
std::string quote_path(std::string_view path) {
  bool changed = false;
  std::string out = escaped(path, &changed);
  return changed ? "\"" + out + "\"" : out;
}
// Messages that embed paths (warnings): escaped in place, without quotes.
std::string printable(std::string_view text) {
  bool changed = false;
  return escaped(text, &changed);
}
bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
    } else if (const std::size_t n = utf8_sequence(s, i); n != 0) {
      i += n;
    } else {
      return false;
    }
  }
  return true;
}
// JSON strings must be UTF-8: invalid bytes become U+FFFD in "path", so an
// entry whose path is not valid UTF-8 also carries its exact bytes in hex.
void add_path(json& j, const std::string& path) {
  j["path"] = path;
  if (!valid_utf8(path)) j["path_hex"] = to_hex(as_bytes(path));
}

std::string format_time(std::int64_t ns) {
  const std::time_t secs = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string human(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

Result<std::uint64_t> parse_bytes(const std::string& text) {
  std::size_t used = 0;
  std::uint64_t v = 0;
  try {
    v = std::stoull(text, &used);
  } catch (...) {
    return make_error(Code::kInvalidArgument, "'" + text + "' is not a size (e.g. 500M, 10G, 0)");
  }
  const std::string suffix = text.substr(used);
  int shift = 0;
  if (suffix.empty() || suffix == "B") shift = 0;
  else if (suffix == "K" || suffix == "KiB") shift = 10;
  else if (suffix == "M" || suffix == "MiB") shift = 20;
  else if (suffix == "G" || suffix == "GiB") shift = 30;
  else if (suffix == "T" || suffix == "TiB") shift = 40;
  else return make_error(Code::kInvalidArgument, "'" + text + "': unknown size suffix (use K, M, G or T)");
  return v << shift;
}

Result<std::uint32_t> parse_count(const ParsedFlags& f, const std::string& name) {
  auto v = f.get(name);
  if (!v) {
    return 0u;
  }
  try {
    std::size_t used = 0;
    const unsigned long n = std::stoul(*v, &used);
    if (used == v->size() && n <= 1'000'000) {
      return static_cast<std::uint32_t>(n);
    }
  } catch (...) {
  }
  return make_error(Code::kInvalidArgument, "--" + name + " needs a whole number, got '" + *v + "'");
}

json info_json(const SnapshotInfo& s) {
  const auto& c = s.commit;
  return json{{"id", hex(s.id)},
              {"project", c.project},
              {"time", format_time(c.time_ns)},
              {"time_ns", c.time_ns},
              {"parent", c.parent ? json(hex(*c.parent)) : json(nullptr)},
              {"tree", hex(c.tree)},
              {"epoch", c.epoch},
              {"files", c.files},
              {"dirs", c.dirs},
              {"symlinks", c.symlinks},
              {"logical_bytes", c.logical_bytes},
              {"new_bytes", c.new_bytes}};
}

// A progress line on stderr, only when it is a terminal; at most 5 per second.
class ProgressLine {
 public:
  explicit ProgressLine(const char* verb) : verb_(verb), enabled_(::isatty(2) == 1), start_(Clock::now()) {}
  ~ProgressLine() {
    if (printed_) std::fprintf(stderr, "\r\033[K");
  }
  storage::ProgressFn fn() {
    if (!enabled_) return nullptr;
    return [this](const storage::Progress& p) { update(p); };
  }

 private:
  using Clock = std::chrono::steady_clock;
  void update(const storage::Progress& p) {
    const auto now = Clock::now();
    if (printed_ && now - last_ < std::chrono::milliseconds(200)) return;
    last_ = now;
    printed_ = true;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 ? static_cast<double>(p.bytes_done) / secs : 0;
    const double eta = rate > 0 ? static_cast<double>(p.bytes_total - std::min(p.bytes_total, p.bytes_done)) / rate : 0;
    std::fprintf(stderr, "\r\033[K%s: %" PRIu64 "/%" PRIu64 " files, %s/%s, %s/s, ETA %.0fs", verb_,
                 p.files_done, p.files_total, human(p.bytes_done).c_str(), human(p.bytes_total).c_str(),
                 human(static_cast<std::uint64_t>(rate)).c_str(), eta);
  }
  const char* verb_;
  bool enabled_;
  bool printed_ = false;
  Clock::time_point start_;
  Clock::time_point last_{};
};

std::int64_t wall_now_ns() {
  struct timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

Result<std::unique_ptr<SnapshotStore>> open_store(const ParsedFlags& f, bool may_create) {
  auto dir = f.get("store");
  if (!dir) {
    return make_error(Code::kInvalidArgument, "--store DIR is required");
  }
  std::error_code ec;
  if (!may_create && !std::filesystem::is_directory(*dir, ec)) {
    return make_error(Code::kNotFound, "store " + *dir + " does not exist (create a snapshot into it first)");
  }
  return SnapshotStore::open(*dir);
}

int run_create(const ParsedFlags& f) {
  auto project = f.get("project");
  if (!project) return usage_error("create needs --project ID");
  if (f.positionals.size() != 1) return usage_error("create needs exactly one PATH to save");
  auto store = open_store(f, true);
  if (!store) return fail(store.error());
  storage::CreateOptions o;
  o.project = *project;
  o.source_dir = f.positionals[0];
  o.now_ns = wall_now_ns();
  if (auto e = f.get("epoch")) o.epoch = std::stoull(*e);
  if (auto t = f.get("threads")) o.threads = static_cast<unsigned>(std::stoul(*t));
  ProgressLine line("create");
  o.progress = line.fn();
  auto r = (*store)->create(o);
  if (!r) return fail(r.error());
  for (const auto& w : r->warnings) std::fprintf(stderr, "warning: %s\n", printable(w).c_str());
  if (f.has("json")) {
    json j = info_json(r->snapshot);
    j["files_read"] = r->files_read;
    j["bytes_read"] = r->bytes_read;
    j["cache_hits"] = r->cache_hits;
    j["chunks_new"] = r->chunks_new;
    j["warnings"] = r->warnings;
    std::printf("%s\n", j.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
  } else {
    std::printf("%s\n", hex(r->snapshot.id).c_str());
  }
  return 0;
}

int run_list(const ParsedFlags& f) {
  auto store = open_store(f, false);
  if (!store) return fail(store.error());
  auto project = f.get("project");
  if (project) {
    if (auto s = storage::validate_project(*project); !s) return usage_error(s.error().message);
  }
  auto snaps = (*store)->list(project);
  if (!snaps) return fail(snaps.error());
  if (f.has("json")) {
    json arr = json::array();
    for (const auto& s : *snaps) arr.push_back(info_json(s));
    std::printf("%s\n", arr.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    return 0;
  }
  std::printf("%-12s  %-20s  %-20s  %8s  %10s  %10s\n", "ID", "PROJECT", "TIME (UTC)", "FILES", "SIZE", "NEW");
  for (const auto& s : *snaps) {
    std::printf("%-12s  %-20s  %-20s  %8" PRIu64 "  %10s  %10s\n", hex(s.id).substr(0, 12).c_str(),
                s.commit.project.c_str(), format_time(s.commit.time_ns).c_str(), s.commit.files,
                human(s.commit.logical_bytes).c_str(), human(s.commit.new_bytes).c_str());
  }
  return 0;
}

int run_show(const ParsedFlags& f) {
  if (f.positionals.size() != 1) return usage_error("show needs one SNAPSHOT id");
  auto store = open_store(f, false);
  if (!store) return fail(store.error());
  auto snap = (*store)->find(f.positionals[0], f.get("project"));
  if (!snap) return fail(snap.error());
  json j = info_json(*snap);
  if (f.has("json")) {
    std::printf("%s\n", j.dump(2, ' ', false, json::error_handler_t::replace).c_str());
    return 0;
  }
  const auto& c = snap->commit;
  std::printf("id:            %s\nproject:       %s\ntime:          %s\nparent:        %s\nepoch:         %" PRIu64
              "\nfiles:         %" PRIu64 "\ndirectories:   %" PRIu64 "\nsymlinks:      %" PRIu64
              "\nlogical size:  %s (%" PRIu64 " bytes)\nnew bytes:     %s\n",
              hex(snap->id).c_str(), c.project.c_str(), format_time(c.time_ns).c_str(),
              c.parent ? hex(*c.parent).c_str() : "(none)", c.epoch, c.files, c.dirs, c.symlinks,
              human(c.logical_bytes).c_str(), c.logical_bytes, human(c.new_bytes).c_str());
  return 0;
}

int run_diff(const ParsedFlags& f) {
  if (f.positionals.size() != 2) return usage_error("diff needs two snapshot ids: SNAP_A SNAP_B");
  auto store = open_store(f, false);
  if (!store) return fail(store.error());
  auto a = (*store)->find(f.positionals[0], f.get("project"));
  if (!a) return fail(a.error());
  auto b = (*store)->find(f.positionals[1], f.get("project"));
  if (!b) return fail(b.error());
  auto d = (*store)->diff(*a, *b);
  if (!d) return fail(d.error());
  if (f.has("json")) {
    json arr = json::array();
    for (const auto& e : *d) {
      json j{{"change", std::string(1, e.change)}};
      add_path(j, e.path);
      arr.push_back(std::move(j));
    }
    std::printf("%s\n", arr.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    return 0;
  }
  for (const auto& e : *d) std::printf("%c %s\n", e.change, quote_path(e.path).c_str());
  return 0;
}

json damage_json(const std::vector<storage::Damage>& damage) {
  json arr = json::array();
  for (const auto& d : damage) {
    json j{{"chunk", hex(d.chunk)}, {"problem", d.problem}};
    add_path(j, d.path);
    arr.push_back(std::move(j));
  }
  return arr;
}

int run_restore(const ParsedFlags& f) {
  auto project = f.get("project");
  auto to = f.get("to");
  if (!project) return usage_error("restore needs --project ID");
  if (!to) return usage_error("restore needs --to DIR (a new or empty directory)");
  auto store = open_store(f, false);
  if (!store) return fail(store.error());
  auto snap = (*store)->find(f.get("snapshot").value_or("latest"), project);
  if (!snap) return fail(snap.error());
  ProgressLine line("restore");
  auto r = (*store)->restore(*snap, *to, storage::RestoreOptions{.force = f.has("force"), .progress = line.fn()});
  if (!r) return fail(r.error());
  for (const auto& d : r->damaged) {
    std::fprintf(stderr, "damaged, not restored: %s (chunk %s: %s)\n", quote_path(d.path).c_str(), hex(d.chunk).substr(0, 16).c_str(),
                 d.problem.c_str());
  }
  if (f.has("json")) {
    std::printf("%s\n", json{{"id", hex(snap->id)}, {"files", r->files}, {"dirs", r->dirs}, {"symlinks", r->symlinks},
                             {"bytes", r->bytes}, {"damaged", damage_json(r->damaged)}}.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
  } else {
    std::fprintf(stderr, "restored %s: %" PRIu64 " files, %" PRIu64 " directories, %" PRIu64 " symlinks, %s into %s\n",
                 hex(snap->id).substr(0, 12).c_str(), r->files, r->dirs, r->symlinks, human(r->bytes).c_str(), to->c_str());
  }
  if (!r->damaged.empty()) {
    std::fprintf(stderr, "%zu damaged files were left out; run `shoal snapshot verify` for details\n", r->damaged.size());
    return 1;
  }
  return 0;
}

int run_verify(const ParsedFlags& f) {
  auto store = open_store(f, false);
  if (!store) return fail(store.error());
  auto project = f.get("project");
  std::vector<SnapshotInfo> snaps;
  if (auto s = f.get("snapshot")) {
    auto one = (*store)->find(*s, project);
    if (!one) return fail(one.error());
    snaps.push_back(*one);
  } else {
    auto all = (*store)->list(project);
    if (!all) return fail(all.error());
    snaps = std::move(*all);
  }
  auto r = (*store)->verify(snaps);
  if (!r) return fail(r.error());
  if (f.has("json")) {
    json arr = json::array();
    for (const auto& s : r->snapshots) {
      arr.push_back(json{{"id", hex(s.snapshot.id)}, {"project", s.snapshot.commit.project}, {"damage", damage_json(s.damage)}});
    }
    std::printf("%s\n", json{{"clean", r->clean()}, {"chunks_checked", r->chunks_checked},
                             {"bytes_checked", r->bytes_checked}, {"snapshots", arr}}.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
  } else {
    for (const auto& s : r->snapshots) {
      for (const auto& d : s.damage) {
        std::printf("DAMAGED snapshot %s (%s) file %s chunk %s: %s\n", hex(s.snapshot.id).substr(0, 12).c_str(),
                    s.snapshot.commit.project.c_str(), d.path.empty() ? "(snapshot object)" : quote_path(d.path).c_str(),
                    hex(d.chunk).c_str(), d.problem.c_str());
      }
    }
    std::printf("%s: %zu snapshots, %" PRIu64 " chunks (%s) checked\n", r->clean() ? "clean" : "DAMAGE FOUND",
                r->snapshots.size(), r->chunks_checked, human(r->bytes_checked).c_str());
  }
  return r->clean() ? 0 : 1;
}

int run_prune(const ParsedFlags& f) {
  auto project = f.get("project");
  if (!project) return usage_error("prune needs --project ID");
  storage::RetentionPolicy p;
  for (auto [name, slot] : {std::pair{"keep-last", &p.keep_last}, std::pair{"keep-hourly", &p.keep_hourly},
                            std::pair{"keep-daily", &p.keep_daily}, std::pair{"keep-weekly", &p.keep_weekly}}) {
    auto v = parse_count(f, name);
    if (!v) return usage_error(v.error().message);
    *slot = *v;
  }
  if (p.keeps_nothing()) return usage_error("prune needs --keep-last N (N >= 1) or another --keep-* rule");
  auto store = open_store(f, false);
  if (!store) return fail(store.error());
  auto r = (*store)->prune(*project, p, f.has("dry-run"));
  if (!r) return fail(r.error());
  if (f.has("json")) {
    json kept = json::array();
    json removed = json::array();
    for (const auto& s : r->kept) kept.push_back(hex(s.id));
    for (const auto& s : r->removed) removed.push_back(hex(s.id));
    std::printf("%s\n", json{{"kept", kept}, {"removed", removed}, {"dry_run", f.has("dry-run")}}.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    return 0;
  }
  for (const auto& s : r->removed) {
    std::printf("%s %s %s\n", f.has("dry-run") ? "would remove" : "removed", hex(s.id).substr(0, 12).c_str(),
                format_time(s.commit.time_ns).c_str());
  }
  std::printf("kept %zu, %s %zu snapshots of '%s'%s\n", r->kept.size(), f.has("dry-run") ? "would remove" : "removed",
              r->removed.size(), project->c_str(), r->removed.empty() || f.has("dry-run") ? "" : "; run `shoal snapshot gc` to free their space");
  return 0;
}

int run_gc(const ParsedFlags& f) {
  auto store = open_store(f, false);
  if (!store) return fail(store.error());
  if (::isatty(2) == 1) std::fprintf(stderr, "gc: waiting for running saves, if any...\r");
  auto r = (*store)->gc();
  if (!r) return fail(r.error());
  if (f.has("json")) {
    std::printf("%s\n", json{{"chunks_kept", r->chunks_kept}, {"chunks_removed", r->chunks_removed},
                             {"bytes_removed", r->bytes_removed}, {"waited_for_saves", r->waited_for_saves},
                             {"mark_seconds", r->mark_seconds}, {"locked_seconds", r->locked_seconds}}.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
  } else {
    std::printf("removed %" PRIu64 " unreferenced chunks (%s), kept %" PRIu64 "\n", r->chunks_removed,
                human(r->bytes_removed).c_str(), r->chunks_kept);
  }
  return 0;
}

int run_stats(const ParsedFlags& f) {
  auto store = open_store(f, false);
  if (!store) return fail(store.error());
  auto r = (*store)->stats();
  if (!r) return fail(r.error());
  auto ratio = [](std::uint64_t a, std::uint64_t b) { return b == 0 ? 0.0 : static_cast<double>(a) / static_cast<double>(b); };
  if (f.has("json")) {
    json projects = json::array();
    for (const auto& p : r->projects) {
      projects.push_back(json{{"project", p.project}, {"snapshots", p.snapshots}, {"live_bytes", p.live_bytes},
                              {"logical_bytes", p.logical_bytes}, {"unique_plain_bytes", p.unique_plain_bytes},
                              {"stored_bytes", p.stored_bytes}, {"dedup_ratio", ratio(p.logical_bytes, p.unique_plain_bytes)},
                              {"compression_ratio", ratio(p.unique_plain_bytes, p.stored_bytes)},
                              {"quota_live_bytes", p.quota.live_bytes_max}, {"quota_stored_bytes", p.quota.stored_bytes_max}});
    }
    std::printf("%s\n", json{{"snapshots", r->snapshots}, {"logical_bytes", r->logical_bytes}, {"chunks", r->chunks},
                             {"plain_bytes", r->plain_bytes}, {"stored_bytes", r->stored_bytes},
                             {"file_bytes", r->file_bytes}, {"unreferenced_chunks", r->unreferenced_chunks},
                             {"dedup_ratio", ratio(r->logical_bytes, r->plain_bytes)},
                             {"compression_ratio", ratio(r->plain_bytes, r->stored_bytes)}, {"projects", projects}}.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
    return 0;
  }
  std::printf("node: %" PRIu64 " snapshots, logical %s, %" PRIu64 " chunks: %s before compression, %s stored "
              "(dedup %.2fx, compression %.2fx), store file %s, %" PRIu64 " unreferenced chunks\n",
              r->snapshots, human(r->logical_bytes).c_str(), r->chunks, human(r->plain_bytes).c_str(),
              human(r->stored_bytes).c_str(), ratio(r->logical_bytes, r->plain_bytes), ratio(r->plain_bytes, r->stored_bytes),
              human(r->file_bytes).c_str(), r->unreferenced_chunks);
  std::printf("%-20s %6s %12s %12s %12s %8s %8s\n", "PROJECT", "SNAPS", "LIVE", "LOGICAL", "STORED", "DEDUP", "COMPR");
  for (const auto& p : r->projects) {
    std::printf("%-20s %6" PRIu64 " %12s %12s %12s %7.2fx %7.2fx\n", p.project.c_str(), p.snapshots, human(p.live_bytes).c_str(),
                human(p.logical_bytes).c_str(), human(p.stored_bytes).c_str(), ratio(p.logical_bytes, p.unique_plain_bytes),
                ratio(p.unique_plain_bytes, p.stored_bytes));
  }
  return 0;
}

int run_quota(const ParsedFlags& f) {
  if (f.positionals.empty() || (f.positionals[0] != "set" && f.positionals[0] != "show")) {
    return usage_error("quota needs 'set' or 'show'");
  }
  auto project = f.get("project");
  if (!project) return usage_error("quota needs --project ID");
  auto store = open_store(f, f.positionals[0] == "set");
  if (!store) return fail(store.error());
  if (f.positionals[0] == "set") {
    auto q = (*store)->quota(*project);
    if (!q) return fail(q.error());
    if (!f.get("live") && !f.get("stored")) return usage_error("quota set needs --live BYTES and/or --stored BYTES");
    if (auto v = f.get("live")) {
      auto b = parse_bytes(*v);
      if (!b) return usage_error(b.error().message);
      q->live_bytes_max = *b;
    }
    if (auto v = f.get("stored")) {
      auto b = parse_bytes(*v);
      if (!b) return usage_error(b.error().message);
      q->stored_bytes_max = *b;
    }
    if (auto s = (*store)->set_quota(*project, *q); !s) return fail(s.error());
  }
  auto q = (*store)->quota(*project);
  if (!q) return fail(q.error());
  if (f.has("json")) {
    std::printf("%s\n", json{{"project", *project}, {"live_bytes_max", q->live_bytes_max},
                             {"stored_bytes_max", q->stored_bytes_max}}.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
  } else {
    std::printf("project %s: live size limit %s, stored size limit %s\n", project->c_str(),
                q->live_bytes_max ? human(q->live_bytes_max).c_str() : "none",
                q->stored_bytes_max ? human(q->stored_bytes_max).c_str() : "none");
  }
  return 0;
}

}  // namespace

int cmd_snapshot(Args args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::string verb(args[0]);
  const FlagSpec spec{
      .with_value = {"store", "project", "snapshot", "to", "keep-last", "keep-hourly", "keep-daily", "keep-weekly",
                     "live", "stored", "epoch", "threads"},
      .switches = {"json", "force", "dry-run"},
  };
  auto flags = parse_flags(args.subspan(1), spec);
  if (!flags) return usage_error(flags.error().message);
  if (flags->has("help")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  try {
    if (verb == "create") return run_create(*flags);
    if (verb == "list") return run_list(*flags);
    if (verb == "show") return run_show(*flags);
    if (verb == "diff") return run_diff(*flags);
    if (verb == "restore") return run_restore(*flags);
    if (verb == "verify") return run_verify(*flags);
    if (verb == "prune") return run_prune(*flags);
    if (verb == "gc") return run_gc(*flags);
    if (verb == "stats") return run_stats(*flags);
    if (verb == "quota") return run_quota(*flags);
  } catch (const std::exception& e) {  // std::stoull on a bad --epoch/--threads, json encoding.
    return usage_error(e.what());
  }
  return usage_error("unknown verb '" + verb + "'");
}

}  // namespace shoal::cli
