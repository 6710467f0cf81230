#pragma once
// storage/retention.h: which snapshots a retention policy keeps. A pure
// function of (times, policy), in the style of zfsnap/restic "forget":
// keep the newest N, then the newest snapshot in each of the H most recent
// hours that have one, D days, W weeks (UTC; weeks start on Monday). A
// snapshot kept by any rule is kept. Thread-safe; no I/O.

#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"

namespace shoal::storage {

struct RetentionPolicy {
  std::uint32_t keep_last = 0;
  std::uint32_t keep_hourly = 0;
  std::uint32_t keep_daily = 0;
  std::uint32_t keep_weekly = 0;

  bool keeps_nothing() const { return keep_last + keep_hourly + keep_daily + keep_weekly == 0; }
};

// keep[i] says whether the snapshot taken at times_ns[i] (Unix ns) is kept.
// Ties in time break by index (the later index counts as newer), so the
// answer is deterministic. An empty policy keeps nothing; callers refuse it.
std::vector<bool> select_kept(std::span<const std::int64_t> times_ns, const RetentionPolicy& policy);

}  // namespace shoal::storage
