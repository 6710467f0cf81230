#pragma once
// node/agent/transfer_rate.h: the per-node bandwidth limit on transfers, a
// token bucket charged with the bytes written to sockets. Pure (time is
// passed in); single-threaded, owned by TransferNet.
//
// Why a bucket and not a per-write sleep: the driver asks allow() before each
// poll_transmit() and stops pulling from the protocol while it is false, so a
// limited node also stops reading its disk; the timer wakes it at wait().
// One transmit may overdraw the bucket (tokens go negative), and the debt is
// paid before the next one, so the long-run rate holds exactly.

#include <algorithm>
#include <cstdint>

#include "base/time.h"

namespace shoal::agent {

class TokenBucket {
 public:
  // bytes_per_second = 0: unlimited. The burst is a tenth of a second of rate
  // (at least 64 KiB), so the rate holds over short windows too.
  void set_rate(std::uint64_t bytes_per_second, Instant now) {
    const bool was_unlimited = unlimited();
    rate_ = static_cast<double>(bytes_per_second);
    burst_ = std::max(rate_ / 10.0, 64.0 * 1024.0);
    tokens_ = was_unlimited ? burst_ : std::min(tokens_, burst_);  // A new limit starts with a full burst.
    last_ = now;
  }
  std::uint64_t rate() const { return static_cast<std::uint64_t>(rate_); }
  bool unlimited() const { return rate_ <= 0; }

  // True if a transmit may start now.
  bool allow(Instant now) {
    if (unlimited()) {
      return true;
    }
    refill(now);
    return tokens_ > 0;
  }
  void charge(std::uint64_t bytes) {
    if (!unlimited()) {
      tokens_ -= static_cast<double>(bytes);
    }
  }
  // How long until allow() turns true (zero if it is already).
  Duration wait(Instant now) {
    if (unlimited()) {
      return Duration{};
    }
    refill(now);
    if (tokens_ > 0) {
      return Duration{};
    }
    const double seconds_needed = (1.0 - tokens_) / rate_;
    return Duration(static_cast<std::int64_t>(seconds_needed * 1e6) + 1);
  }

 private:
  void refill(Instant now) {
    if (now > last_) {
      const double elapsed_s = to_seconds(now - last_);
      tokens_ = std::min(burst_, tokens_ + elapsed_s * rate_);
      last_ = now;
    }
  }

  double rate_ = 0;
  double burst_ = 0;
  double tokens_ = 0;
  Instant last_{};
};

}  // namespace shoal::agent
