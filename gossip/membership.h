#pragma once
// gossip/membership.h: SWIM + Lifeguard membership for one node. Owns the
// member table, incarnations, suspicion timers, the broadcast queue and the
// local health multiplier. Does no I/O and reads no clock: time and
// randomness are inputs. Single-threaded; driven by node/agent or sim/.
//
// Call order after any on_*() or join()/leave()/set_*(): drain poll_transmit(),
// poll_stream() and poll_event(), then arm a timer for next_deadline() and call
// on_tick() when it fires.
//
// `now` must never go backwards. A jump far past the deadline last handed out
// is read as this process having been paused (SIGSTOP, swap): in-flight
// probes are discarded instead of counted as failures (Counters::pauses_detected).
//
// Events: kJoined (new member, or back from dead/left), kSuspect, kStalled
// (suspect whose host still accepts TCP), kAlive (suspect refuted), kDead,
// kLeft, kHealthChanged, kCatalogChanged, and kUpdated (name, dc or address
// changed; also emitted about *self* whenever our incarnation rises, so the
// driver can persist self().incarnation for Config::initial_incarnation).
//
// Wire format and design notes: docs/gossip-wire.md.

#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "gossip/types.h"

namespace shoal::gossip {

class Membership {
 public:
  Membership(Config config, Random& random, Instant now);
  ~Membership();
  Membership(const Membership&) = delete;
  Membership& operator=(const Membership&) = delete;

  // --- inputs -------------------------------------------------------------
  // A datagram that opened with the cluster key (plaintext). Malformed input
  // is counted and dropped; never throws, never asserts.
  void on_datagram(Instant now, const Address& from, ByteView payload);
  // An inbound TCP push-pull request; returns the reply to write back, or an
  // error (count it and close the connection).
  Result<Bytes> on_stream_request(Instant now, const Address& from, ByteView payload);
  // The result of a StreamRequest this core asked for.
  void on_stream_result(Instant now, std::uint64_t stream_id, StreamOutcome outcome, ByteView reply);
  void on_tick(Instant now);

  // --- commands -----------------------------------------------------------
  // Contact seeds (push-pull over TCP, at most 16); all are tried at once and
  // retried with backoff (1 s doubling to Config::join_retry_max) until one
  // answers. Seeds may include our own address.
  void join(Instant now, std::span<const Address> seeds);
  // Seeds the member table from a saved member list: the agent's "members
  // last seen", read back from its data directory after a restart, or the
  // simulator's converged bootstrap (a mesh that was already running). Each
  // member that is not us, not yet known, well-formed, and whose id matches
  // its public key is added with its saved name, data center, address,
  // incarnation, health and catalog version: alive and suspect ones as
  // alive (probing finds out the rest), dead and left ones as dead and left
  // (so reconnects can still find them after a partition). Its state_seq
  // starts at 0, so any state the member itself sends is newer. Stops at
  // Config::members_max. Nothing is broadcast and no events are emitted:
  // it is not news, and the caller holds the list it passed. Afterwards a
  // new probe round covers everyone and the next periodic push-pull is
  // rescheduled at a random point of the push-pull period for the new size
  // (call join() as well to refresh a stale list at once). Returns how many
  // members were added.
  std::size_t restore_members(Instant now, std::span<const Member> members);
  // Broadcast our departure; the core stops probing. Done when leave_done().
  void leave(Instant now);
  bool leave_done(Instant now) const;
  // Our health record. Every change rides on our pings and acks (digest);
  // a significant one (health_change_is_significant) is also broadcast at
  // once. local_health is ignored: the core fills in its own awareness.
  void set_health(Instant now, const Health& health);
  // Broadcast at once (eager push) when it differs from the current one.
  void set_catalog_version(Instant now, std::uint64_t version);

  // --- outputs ------------------------------------------------------------
  std::optional<Datagram> poll_transmit();
  std::optional<StreamRequest> poll_stream();
  std::optional<Event> poll_event();
  std::optional<Instant> next_deadline() const;

  // --- views --------------------------------------------------------------
  NodeId self_id() const;
  Member self() const;
  std::vector<Member> members() const;  // Including self, sorted by name.
  std::optional<Member> find(const NodeId& id) const;
  std::size_t count(MemberStatus status) const;
  int local_health() const;  // Lifeguard awareness score, 0 = healthy.
  const Counters& counters() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// InvalidArgument naming the bad field. The constructor asserts this holds,
// so drivers call it first on configuration they read from users.
Status validate_config(const Config& config);

// True when a health change is worth a broadcast of its own: version or
// projects hosted changed, load moved by >= 0.5 and >= 25 %, or free disk by
// >= 1 GiB and >= 10 %. Smaller changes travel on probe digests only.
bool health_change_is_significant(const Health& before, const Health& after);

// Lifeguard's suspicion timeout: starts at max and falls toward min as
// independent confirmations arrive, log-scaled (memberlist suspicion.go).
// k is the number of confirmations expected (indirect_checks, capped by N-2).
Duration suspicion_timeout(int confirmations, int k, Duration min, Duration max);

// memberlist: suspicion_mult * log10(max(1, n)) * probe_interval, scaled.
Duration suspicion_timeout_min(const Config& config, std::size_t members);
// retransmit_mult * ceil(log10(n + 1)).
int retransmit_limit(int retransmit_mult, std::size_t members);

}  // namespace shoal::gossip
