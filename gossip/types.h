#pragma once
// gossip/types.h: the vocabulary of membership shared by the gossip core, the
// agent and the simulator: member entries, health records, configuration
// profiles, the core's outputs (datagrams, stream requests, events) and its
// counters. Plain data; no I/O.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/address.h"
#include "base/bytes.h"
#include "base/crypto.h"
#include "base/result.h"
#include "base/time.h"

namespace shoal::gossip {

enum class MemberStatus : std::uint8_t { kAlive = 0, kSuspect = 1, kDead = 2, kLeft = 3 };
std::string_view status_name(MemberStatus status);  // "alive", "suspect", "dead", "left"
Result<MemberStatus> parse_status(std::string_view name);

// Refreshed at a bounded rate and carried on probe/ack packets as a digest.
struct Health {
  std::uint32_t load_milli = 0;        // 1-minute load average x 1000.
  std::uint64_t free_disk_bytes = 0;
  std::uint32_t local_health = 0;      // Lifeguard awareness score; 0 is healthy.
  std::uint32_t projects_hosted = 0;
  std::string version;                 // Software version, e.g. "0.1.0".
  bool operator==(const Health&) const = default;
};

// A member as seen by one node. The core may store members more compactly;
// this is the public view.
struct Member {
  NodeId id;
  std::string name;
  std::string dc;
  Address addr;                  // Where its UDP and TCP listen (advertised).
  PublicKey public_key{};        // Ed25519; id == node_id_from_public_key(public_key).
  std::uint64_t incarnation = 0;
  MemberStatus status = MemberStatus::kAlive;
  // Suspect, but its host's kernel still completes a TCP handshake: the
  // process is paused or overloaded, not crashed. Declared dead only after
  // Config::stall_budget.
  bool stalled = false;
  Health health;
  std::uint64_t catalog_version = 0;  // Bumped by the node when its held project versions change.
  Instant status_since{};             // Local time of the last status change.
};

enum class Profile { kLan, kWan, kLocal };
Result<Profile> parse_profile(std::string_view name);  // "lan", "wan", "local"

struct Config {
  // Identity of this node.
  std::string name;
  std::string dc;
  PublicKey public_key{};
  Address advertise;                   // What peers use to reach us.
  std::uint64_t initial_incarnation = 0;  // Restored from disk on restart; the core starts above it.
  Health health;

  // Timing; defaults are memberlist's LAN profile.
  Duration probe_interval = milliseconds(1000);
  Duration probe_timeout = milliseconds(500);
  int indirect_checks = 3;
  int suspicion_mult = 4;
  int suspicion_max_timeout_mult = 6;
  Duration gossip_interval = milliseconds(200);
  int gossip_nodes = 3;
  int retransmit_mult = 4;
  Duration push_pull_interval = seconds(30);
  int awareness_max = 8;               // Lifeguard local health multiplier cap.
  Duration stall_budget = seconds(30); // How long a stalled member may stay stalled before it is dead.
  Duration gossip_to_dead = seconds(30);  // Keep gossiping about dead members this long.
  Duration dead_reap = seconds(24 * 3600);  // Forget dead/left members after this.
  // Merge after partitions: how often to retry contact with dead members' addresses.
  Duration reconnect_interval = seconds(2);

  std::size_t datagram_bytes_max = 1400;  // Plaintext budget per datagram (sealing adds 40).
  std::size_t members_max = 20000;

  // Eager push: new information is gossiped at once, at most this often,
  // instead of waiting for the next gossip_interval tick.
  Duration eager_gossip_interval = milliseconds(20);
  // leave_done() turns true once the leave was sent to gossip_nodes members,
  // or after this long, whichever is first.
  Duration leave_timeout = seconds(2);
  // Join retries back off from 1 s up to this.
  Duration join_retry_max = seconds(30);
  // Piggyback queue bound; when full the most-sent broadcast is dropped.
  // A 64-node mesh rarely holds more than ~130; the simulator may lower it.
  std::size_t broadcasts_max = 1024;
};

Config profile_config(Profile profile);

// A datagram to send. Plaintext: the driver seals it with the cluster key.
struct Datagram {
  Address to;
  Bytes payload;
};

enum class StreamKind : std::uint8_t {
  kPushPull,      // Connect, send payload, read one reply, close.
  kReachability,  // Connect and close at once: does the host's kernel accept?
};

// A request for the driver to open a TCP connection.
struct StreamRequest {
  std::uint64_t id = 0;
  StreamKind kind = StreamKind::kPushPull;
  Address to;
  Bytes payload;  // Plaintext; empty for kReachability.
};

enum class StreamOutcome : std::uint8_t {
  kReplied,    // kPushPull: the reply is passed along.
  kConnected,  // kReachability: the TCP handshake completed.
  kRefused,    // Connection refused (RST): no process listens there.
  kTimeout,    // No answer within the driver's timeout.
  kFailed,     // Any other failure (bad reply, reset mid-exchange, wrong key).
};

enum class EventKind : std::uint8_t {
  kJoined, kSuspect, kStalled, kAlive, kDead, kLeft, kHealthChanged, kCatalogChanged, kUpdated,
};
std::string_view event_name(EventKind kind);  // "joined", "suspect", ...

struct Event {
  EventKind kind;
  Instant at;
  Member member;  // The member's state after the change.
};

struct Counters {
  std::uint64_t probes_sent = 0;
  std::uint64_t probes_failed = 0;        // Neither direct nor indirect ack in time.
  std::uint64_t indirect_probes_sent = 0;
  std::uint64_t nacks_sent = 0;
  std::uint64_t suspicions = 0;            // Times we marked a member suspect.
  std::uint64_t refutations = 0;           // Times we refuted a suspicion about ourselves.
  std::uint64_t deaths_declared = 0;
  std::uint64_t push_pulls = 0;
  std::uint64_t messages_in = 0;
  std::uint64_t messages_out = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  std::uint64_t decode_errors = 0;         // Opened but malformed messages.
  std::uint64_t unknown_message_types = 0;
  std::uint64_t stale_messages = 0;        // Older than what we know; ignored.
  std::uint64_t identity_rejected = 0;     // id != hash(public_key), or a known id with another key.
  std::uint64_t stalls = 0;                // Times we found a suspect stalled (reachable, silent).
  std::uint64_t pauses_detected = 0;       // Times `now` jumped: this process was paused.
  std::uint64_t outputs_dropped = 0;       // Datagrams/events dropped because the driver did not drain.
};

}  // namespace shoal::gossip
