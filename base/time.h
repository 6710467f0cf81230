#pragma once
// base/time.h: time as a value. Instant is a point on a monotonic timeline
// whose origin the driver chooses (uv_now() in the agent, 0 in the simulator);
// Duration is microseconds. Nothing here reads a clock.

#include <chrono>
#include <cstdint>

namespace shoal {

// A clock type with no now(): protocol code can only be handed time.
struct MonotonicTimeline {
  using duration = std::chrono::microseconds;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::time_point<MonotonicTimeline, duration>;
  static constexpr bool is_steady = true;
};

using Duration = std::chrono::microseconds;
using Instant = MonotonicTimeline::time_point;

constexpr Duration milliseconds(std::int64_t ms) { return std::chrono::milliseconds(ms); }
constexpr Duration seconds(std::int64_t s) { return std::chrono::seconds(s); }
constexpr Instant instant_from_us(std::int64_t us) { return Instant(Duration(us)); }
constexpr std::int64_t to_us(Instant t) { return t.time_since_epoch().count(); }
constexpr std::int64_t to_ms(Duration d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); }
constexpr double to_seconds(Duration d) { return static_cast<double>(d.count()) / 1e6; }

}  // namespace shoal
