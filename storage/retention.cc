#include "storage/retention.h"

#include <algorithm>
#include <numeric>

namespace shoal::storage {
namespace {

constexpr std::int64_t kNsPerHour = 3600LL * 1000 * 1000 * 1000;
constexpr std::int64_t kNsPerDay = 24 * kNsPerHour;

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  const std::int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

std::int64_t hour_of(std::int64_t t) { return floor_div(t, kNsPerHour); }
std::int64_t day_of(std::int64_t t) { return floor_div(t, kNsPerDay); }
// 1970-01-01 was a Thursday: shifting by 3 days makes weeks start on Monday.
std::int64_t week_of(std::int64_t t) { return floor_div(day_of(t) + 3, 7); }

}  // namespace

std::vector<bool> select_kept(std::span<const std::int64_t> times_ns, const RetentionPolicy& policy) {
  std::vector<std::size_t> order(times_ns.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return times_ns[a] != times_ns[b] ? times_ns[a] > times_ns[b] : a > b;  // Newest first.
  });
  std::vector<bool> keep(times_ns.size(), false);
  for (std::size_t i = 0; i < order.size() && i < policy.keep_last; ++i) {
    keep[order[i]] = true;
  }
  auto keep_buckets = [&](std::uint32_t count, std::int64_t (*bucket_of)(std::int64_t)) {
    std::uint32_t taken = 0;
    bool have_last = false;
    std::int64_t last = 0;
    for (std::size_t index : order) {
      if (taken >= count) {
        break;
      }
      const std::int64_t bucket = bucket_of(times_ns[index]);
      if (have_last && bucket == last) {
        continue;  // An older snapshot in a bucket that already has its newest.
      }
      have_last = true;
      last = bucket;
      keep[index] = true;
      ++taken;
    }
  };
  keep_buckets(policy.keep_hourly, hour_of);
  keep_buckets(policy.keep_daily, day_of);
  keep_buckets(policy.keep_weekly, week_of);
  return keep;
}

}  // namespace shoal::storage
