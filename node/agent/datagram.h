#pragma once
// node/agent/datagram.h: sealing and opening of gossip datagrams. Owns the
// drop reasons and their counters. A datagram is nonce || XChaCha20-Poly1305
// ciphertext, sealed with the keyring's primary key and kDatagramAad; opening
// tries every installed key so rotation needs no downtime. Bytes that fail to
// open are dropped and counted, never parsed. Single-threaded.

#include <array>
#include <cstdint>
#include <string_view>

#include "base/bytes.h"
#include "base/crypto.h"
#include "base/random.h"
#include "base/result.h"

namespace shoal::agent {

enum class DropReason : std::uint8_t {
  kTooShort,     // Shorter than nonce + tag.
  kOversized,    // Larger than kDatagramBytesMax.
  kNoKey,        // No installed key opens it: another cluster, or tampered.
  kDecodeError,  // Opened but the core could not parse it (from the core's counters).
  kFiltered,     // Fault injection dropped it.
  kSendFailed,   // Outbound: the socket refused it (buffer full, unreachable).
  kStreamNoKey,  // A TCP push-pull frame no installed key opens (counted here too:
                 // a node with another cluster key joins over TCP first).
};
inline constexpr std::size_t kDropReasonCount = 7;
std::string_view drop_reason_name(DropReason reason);  // "too_short", "oversized", ...

struct DropCounters {
  std::array<std::uint64_t, kDropReasonCount> by_reason{};
  void add(DropReason reason) { ++by_reason[static_cast<std::size_t>(reason)]; }
  std::uint64_t get(DropReason reason) const { return by_reason[static_cast<std::size_t>(reason)]; }
};

// Seals a plaintext datagram. REQUIRES: plaintext fits kDatagramPlaintextBytesMax.
Bytes seal_datagram(const Keyring& keyring, Random& random, ByteView plaintext);

// Opens a received datagram; on failure returns the reason to count.
std::expected<Bytes, DropReason> open_datagram(const Keyring& keyring, ByteView sealed);

}  // namespace shoal::agent
