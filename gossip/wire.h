#pragma once
// gossip/wire.h: the gossip wire format. Owns the message structs, their
// msgpack encoding and strict decoding, and the compound datagram framing.
// Knows nothing of member tables or timers. Pure functions; any thread.
//
// Every message is a msgpack array whose first item is a Type tag. A datagram
// is a compound [kCompound, message, message, ...]: the first message is the
// datagram's purpose (ping, ack, ...), the rest are piggybacked broadcasts.
// Decoding is all-or-nothing per datagram: one malformed message drops the
// whole datagram. A message with an unknown type tag is skipped and counted,
// so a newer peer can add types without breaking older ones.
// docs/gossip-wire.md is the specification; keep the two in step.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <variant>
#include <vector>

#include "base/codec.h"
#include "gossip/types.h"

namespace shoal::gossip::wire {

enum class Type : std::uint8_t {
  kCompound = 0,
  kPing = 1,
  kPingReq = 2,
  kAck = 3,
  kNack = 4,
  kAlive = 5,
  kSuspect = 6,
  kDead = 7,
  kLeave = 8,
  kState = 9,
  kPushPull = 10,
};

// Limits on peer-supplied fields, checked while decoding.
constexpr std::size_t kNameBytesMax = 128;
constexpr std::size_t kDcBytesMax = 64;
constexpr std::size_t kHostBytesMax = 255;
constexpr std::size_t kVersionBytesMax = 64;
constexpr std::size_t kCompoundPartsMax = 128;
constexpr std::size_t kDatagramBytesMax = 65507;  // Largest UDP payload.
// Worst-case encoded size of one MemberRecord (all strings at their limits).
constexpr std::size_t kMemberRecordBytesMax = 16 * 4 + kNameBytesMax + kDcBytesMax + kHostBytesMax + 34 +
                                              kPublicKeyBytes + 9 * 8 + kVersionBytesMax;
static_assert(kMemberRecordBytesMax < 1024);

DecodeLimits datagram_limits();
DecodeLimits stream_limits(std::size_t members_max);

// The sender's own health and catalog digest, carried on pings and acks.
struct Digest {
  NodeId id;
  std::uint64_t incarnation = 0;
  std::uint64_t state_seq = 0;
  std::uint64_t catalog_version = 0;
  Health health;
  bool operator==(const Digest&) const = default;
};

// Everything known about one member; used by alive messages and push-pull.
struct MemberRecord {
  NodeId id;
  std::string name;
  std::string dc;
  Address addr;
  PublicKey public_key{};
  std::uint64_t incarnation = 0;
  MemberStatus status = MemberStatus::kAlive;
  bool stalled = false;
  std::uint64_t state_seq = 0;
  std::uint64_t catalog_version = 0;
  Health health;
  bool operator==(const MemberRecord&) const = default;
};

struct Ping {
  std::uint64_t seq = 0;
  NodeId target;  // The receiver answers only if this is its id.
  Digest source;
  bool operator==(const Ping&) const = default;
};
struct PingReq {
  std::uint64_t seq = 0;
  NodeId target;
  Address target_addr;
  bool nack = true;  // Answer with a nack if the target does not ack in time.
  bool operator==(const PingReq&) const = default;
};
struct Ack {
  std::uint64_t seq = 0;
  std::optional<Digest> source;  // The acking member's digest (also on forwarded acks).
  bool operator==(const Ack&) const = default;
};
struct Nack {
  std::uint64_t seq = 0;
  bool operator==(const Nack&) const = default;
};
struct Alive {
  MemberRecord member;  // status is alive, stalled false.
  bool operator==(const Alive&) const = default;
};
struct Suspect {
  NodeId id;
  std::uint64_t incarnation = 0;
  NodeId from;  // The accuser; independent accusers shorten the timeout.
  bool stalled = false;
  bool operator==(const Suspect&) const = default;
};
struct Dead {
  NodeId id;
  std::uint64_t incarnation = 0;
  NodeId from;
  bool operator==(const Dead&) const = default;
};
struct Leave {
  NodeId id;
  std::uint64_t incarnation = 0;
  bool operator==(const Leave&) const = default;
};
// Health and catalog version of a member; ordered by state_seq per member.
struct State {
  NodeId id;
  std::uint64_t state_seq = 0;
  std::uint64_t catalog_version = 0;
  Health health;
  bool operator==(const State&) const = default;
};

using Message = std::variant<Ping, PingReq, Ack, Nack, Alive, Suspect, Dead, Leave, State>;

// The full-state exchange over TCP, in both directions.
struct PushPull {
  bool join = false;
  std::vector<MemberRecord> members;
};

Bytes encode(const Message& message);
Bytes encode(const PushPull& push_pull);

// Frames already-encoded messages as one compound datagram.
Bytes compound(std::span<const ByteView> parts);
// Bytes a compound of parts adds on top of the parts' own sizes.
constexpr std::size_t compound_overhead_bytes(std::size_t parts) { return parts < 15 ? 2 : 4; }

struct Packet {
  std::vector<Message> messages;
  std::size_t unknown_types = 0;  // Messages skipped because their tag is unknown.
};

// InvalidArgument on malformed, truncated, oversized or out-of-range input.
Result<Packet> decode_packet(ByteView bytes);
Result<PushPull> decode_push_pull(ByteView bytes, std::size_t members_max);

}  // namespace shoal::gossip::wire
