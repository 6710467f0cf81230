#pragma once
// node/agent/limits.h: every bound the agent enforces on network input, queues
// and connections, named in one place. The gossip core has its own bounds on
// message contents; these bound what reaches it and what the agent buffers.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "base/crypto.h"

namespace shoal::agent {

// Associated data bound into every seal: a datagram from another protocol
// version, or a stream frame replayed as a datagram, does not open.
inline constexpr std::string_view kDatagramAad = "shoal/gossip/1";
inline constexpr std::string_view kStreamRequestAad = "shoal/stream-request/1";
inline constexpr std::string_view kStreamReplyAad = "shoal/stream-reply/1";

// Sealed datagrams larger than this are dropped unopened. The core's plaintext
// budget (Config::datagram_bytes_max, 1400 by default) plus the seal overhead
// must fit; the slack admits peers configured with a somewhat larger budget.
inline constexpr std::size_t kDatagramBytesMax = 4096;
inline constexpr std::size_t kDatagramPlaintextBytesMax = kDatagramBytesMax - kSealOverheadBytes;
// The receive buffer is larger than the limit so that an oversized datagram is
// seen whole (and counted as oversized) instead of silently truncated.
inline constexpr std::size_t kDatagramReceiveBufferBytes = 64 * 1024;
static_assert(kDatagramBytesMax < kDatagramReceiveBufferBytes);

// TCP push-pull frames: 4-byte big-endian length, then a sealed payload.
inline constexpr std::size_t kFrameHeaderBytes = 4;
inline constexpr std::size_t kFrameBytesMax = 8 * 1024 * 1024;
static_assert(kFrameBytesMax < UINT32_MAX);
inline constexpr std::size_t kStreamConnectionsMax = 64;   // Inbound gossip TCP connections at once.
inline constexpr std::size_t kOutboundStreamsMax = 128;    // Outbound stream requests in flight.
// All inbound connections together buffer at most this much of unfinished frames.
inline constexpr std::size_t kInboundBufferedBytesMax = 32 * 1024 * 1024;
static_assert(kInboundBufferedBytesMax >= 2 * (kFrameBytesMax + kFrameHeaderBytes));
inline constexpr std::chrono::milliseconds kStreamIdleTimeout{10'000};
inline constexpr std::chrono::milliseconds kPushPullTimeout{10'000};

// Admin API.
inline constexpr std::size_t kAdminConnectionsMax = 64;
inline constexpr std::size_t kAdminRequestBytesMax = 64 * 1024;  // Headers and body together.
inline constexpr std::size_t kAdminHeaderCountMax = 64;
inline constexpr std::chrono::milliseconds kAdminIdleTimeout{30'000};
// An event-stream client whose unsent output exceeds this is disconnected:
// the loop never blocks on, or buffers without bound for, a slow reader.
inline constexpr std::size_t kEventClientQueueBytesMax = 1024 * 1024;
inline constexpr std::size_t kDropPeersMax = 1024;         // Fault injection list.

// Persistence.
inline constexpr std::size_t kKnownMembersMax = 256;       // Addresses kept for rejoin.
inline constexpr std::chrono::milliseconds kPersistMembersDelay{500};  // After a membership change.

// Health sampling and shutdown.
inline constexpr std::chrono::milliseconds kHealthInterval{5'000};
inline constexpr std::chrono::milliseconds kLeaveTimeout{2'000};

}  // namespace shoal::agent
