#pragma once
// node/core/paxos.h: the acceptor side of the per-project register, and the
// messages of the protocol with their wire form. One CASPaxos instance per
// (project, generation); the acceptor is a pure step function over a record
// that the driver makes durable before it sends the reply. No I/O.

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include "base/bytes.h"
#include "base/crypto.h"
#include "base/result.h"
#include "node/core/placement.h"

namespace shoal::core {

// Totally ordered and owned by one proposer: (counter, proposer id).
struct Ballot {
  std::uint64_t counter = 0;
  NodeId proposer;
  auto operator<=>(const Ballot&) const = default;
  bool is_zero() const { return counter == 0; }
};

// Durable state of one acceptor for one (project, generation).
struct AcceptorRecord {
  Ballot promised;
  Ballot accepted;  // Zero when nothing accepted yet.
  std::optional<RegisterValue> value;
  bool operator==(const AcceptorRecord&) const = default;
};

struct Prepare {
  std::string project;
  std::uint64_t generation = 0;
  Ballot ballot;
};
struct Promise {
  std::string project;
  std::uint64_t generation = 0;
  Ballot ballot;     // The ballot promised.
  Ballot accepted;   // Zero when value is empty.
  std::optional<RegisterValue> value;
};
// Accept also promises `next` (the same proposer's following ballot), so a
// proposer whose accept a majority acknowledged skips phase 1 next time.
struct Accept {
  std::string project;
  std::uint64_t generation = 0;
  Ballot ballot;
  RegisterValue value;
  Ballot next;
};
struct Accepted {
  std::string project;
  std::uint64_t generation = 0;
  Ballot ballot;
};
struct Reject {
  std::string project;
  std::uint64_t generation = 0;
  Ballot ballot;     // The ballot refused.
  Ballot promised;   // What the acceptor has promised instead.
};

// Not Paxos: "which generation of this project do you know, and its
// acceptors?" A node without local state asks before its first proposal; the
// answer is only a hint (the proposer corrects stale ones).
struct Locate {
  std::string project;
  std::uint64_t generation = 0;  // Unused; kept so every message has one.
};
struct Located {
  std::string project;
  std::uint64_t generation = 0;  // The newest generation holding a value here.
  bool known = false;            // False: this node holds nothing for the project.
  std::vector<NodeId> acceptors;
};

// Not Paxos either: "what do you hold of this project?", for status reports.
struct Inquire {
  std::string project;
  std::uint64_t generation = 0;  // Unused.
  Hash256 snapshot{};            // Whether the answerer holds this one.
};
struct Inquired {
  std::string project;
  std::uint64_t generation = 0;  // Unused.
  bool holds = false;            // Holds Inquire::snapshot.
  std::uint64_t snapshots = 0;   // How many snapshots of the project it holds.
  Hash256 newest{};              // Its newest snapshot (zero when none).
};

// Not Paxos either: an admin request (save, open, stop, delete, move of the
// project, or a poll of the operation one started) forwarded to the project's
// primary, because the admin API listens on loopback only. The receiver
// answers every retry of one (sender, request_id) with the same reply.
// Bounded so that one fits a placement datagram with room to spare.
inline constexpr std::size_t kForwardMethodBytesMax = 8;
inline constexpr std::size_t kForwardPathBytesMax = 160;
inline constexpr std::size_t kForwardBodyBytesMax = 3072;
struct Forward {
  std::string project;
  std::uint64_t generation = 0;  // Unused.
  std::uint64_t request_id = 0;  // Unique per sender (it starts above the ids of its earlier runs).
  std::string method;
  std::string path;
  std::string body;
};
struct ForwardReply {
  std::string project;
  std::uint64_t generation = 0;  // Unused.
  std::uint64_t request_id = 0;
  std::uint64_t status = 0;      // The HTTP status the primary's admin API answered.
  std::string body;
};
// Whether a forward or its reply is within the bounds decode_message
// enforces; the error names the part that is too large and the limit.
Status check_forward(const Forward& forward);
Status check_forward_reply(const ForwardReply& reply);

using Message = std::variant<Prepare, Promise, Accept, Accepted, Reject, Locate, Located, Inquire, Inquired, Forward,
                             ForwardReply>;

const std::string& message_project(const Message& message);
std::uint64_t message_generation(const Message& message);

Bytes encode_acceptor_record(const AcceptorRecord& record);
Result<AcceptorRecord> decode_acceptor_record(ByteView bytes);

Bytes encode_message(const Message& message);
Result<Message> decode_message(ByteView bytes);

// What an acceptor does with one request: the record to persist (if it
// changed) and the reply to send only after it is durable.
struct AcceptorStep {
  std::optional<AcceptorRecord> write;
  Message reply;
};

// REQUIRES: request is a Prepare or an Accept.
AcceptorStep acceptor_step(const AcceptorRecord& record, const Message& request);

}  // namespace shoal::core
