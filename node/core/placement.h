#pragma once
// node/core/placement.h: the placement register of one project and its wire
// form. A Placement is what operators see (epoch, primary, replicas, state,
// newest acknowledged snapshot); a RegisterValue wraps it with the consensus
// generation and acceptor set it was written in. Plain values; no I/O.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/codec.h"
#include "base/crypto.h"
#include "base/result.h"

namespace shoal::core {

inline constexpr std::size_t kProjectIdBytesMax = 64;
inline constexpr std::size_t kReplicasMax = 15;
inline constexpr std::size_t kDcNameBytesMax = 64;

enum class ProjectState : std::uint8_t {
  kStopped, kStarting, kRunning, kSaving, kStopping, kMoving, kError, kDeleted,
};
inline constexpr std::uint8_t kProjectStateMax = 7;
std::string_view project_state_name(ProjectState state);

// A project id is 1-64 characters of [A-Za-z0-9._-], not starting with '.'.
Status validate_project_id(std::string_view id);

// The newest snapshot whose save was acknowledged: held by a majority of the
// replica set when the register recorded it.
struct SnapshotRef {
  Hash256 id{};
  std::uint64_t seq = 0;  // 0 = no snapshot yet; +1 per acknowledged save.
  // The epoch the snapshot was saved at. A copy of an older epoch than an
  // acknowledged one is behind it in the project's history (obsolete-copy
  // collection relies on this; docs/placement.md "Obsolete copies").
  std::uint64_t epoch = 0;
  bool operator==(const SnapshotRef&) const = default;
};

struct Placement {
  std::string project;
  std::uint64_t version = 0;  // +1 on every committed change, across generations.
  std::uint64_t epoch = 0;    // Writer term: +1 whenever the primary changes.
  NodeId primary;
  std::vector<NodeId> replicas;  // Contains primary.
  ProjectState state = ProjectState::kStopped;
  SnapshotRef last_ack;
  std::string preferred_dc;
  std::uint64_t quota_bytes = 0;  // 0 = no limit.

  bool is_replica(const NodeId& node) const;
  bool operator==(const Placement&) const = default;
};

// One value of the per-project consensus register. A generation is one
// CASPaxos instance with a fixed acceptor set. A reconfiguration (the replica
// set changes) writes a closing value into the old generation ("stop sign")
// whose placement is the first value of generation + 1, acceptors =
// placement.replicas. A closed generation never changes again.
struct RegisterValue {
  std::uint64_t generation = 0;
  std::vector<NodeId> acceptors;
  bool closed = false;
  Placement placement;
  bool operator==(const RegisterValue&) const = default;
};

// True when a and b hold the same nodes, in any order.
bool same_node_set(const std::vector<NodeId>& a, const std::vector<NodeId>& b);

void encode_placement(Encoder& out, const Placement& placement);
Placement decode_placement(Reader& in);  // Check in.ok() after.
void encode_register_value(Encoder& out, const RegisterValue& value);
RegisterValue decode_register_value(Reader& in);

}  // namespace shoal::core
