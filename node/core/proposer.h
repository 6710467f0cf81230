#pragma once
// node/core/proposer.h: the proposer side of the per-project register. Runs
// compare-and-set changes (CASPaxos) against the project's acceptors, follows
// closed generations to their successors, and keeps the ballot an accepted
// write pre-promised so the next change by the same node takes one round trip.
// Sans-IO: time and randomness come in, messages and outcomes go out.

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/random.h"
#include "base/result.h"
#include "base/time.h"
#include "node/core/paxos.h"

namespace shoal::core {

// Where to start looking for a project's register: a generation and its
// acceptors, from what this node has seen. It may be stale or wrong; the
// proposer follows stop signs and corrects the acceptor set from any value it
// reads. A hint never carries a value: a stop sign this node merely accepted
// may not be the one chosen, so only a proposer that made a stop sign chosen
// may start the next generation from it.
struct Hint {
  std::uint64_t generation = 0;
  std::vector<NodeId> acceptors;
};

// The change to apply: the current placement (empty if the project does not
// exist) → the wanted one, or an error that aborts the change (a failed
// compare). Returning the input unchanged is a linearizable read. May be
// called more than once per change (after a conflict), so it must be pure.
using ChangeFn = std::function<Result<Placement>(const std::optional<Placement>& current)>;

struct Envelope {
  NodeId to;
  Message message;
};

struct Outcome {
  std::uint64_t op = 0;
  std::string project;
  Result<RegisterValue> result;  // The committed value after the change.
};

struct ProposerOutput {
  std::vector<Envelope> send;
  std::vector<Outcome> done;
};

struct ProposerConfig {
  Duration retransmit = milliseconds(200);
  Duration deadline = seconds(5);      // Per change; then kUnavailable.
  Duration backoff_max = milliseconds(100);  // After a conflict, random wait up to this.
  int generations_max = 64;            // Stop signs followed in one change.
  // Ballot counters start above this. A proposer must never reuse a ballot
  // with another value, so after a restart the driver passes a floor above
  // any ballot used before (the agent: its gossip incarnation << 32).
  std::uint64_t counter_floor = 0;
};

class Proposer {
 public:
  Proposer(NodeId self, Random& random, ProposerConfig config = {});

  // Queues a change of `project`; changes of one project run one at a time,
  // in order. Returns the operation id reported in its Outcome.
  std::uint64_t propose(std::string project, Hint hint, ChangeFn change, Instant now,
                        ProposerOutput& out);
  void on_message(const NodeId& from, const Message& message, Instant now, ProposerOutput& out);
  void on_tick(Instant now, ProposerOutput& out);

  std::optional<Instant> next_wakeup() const;
  std::size_t active() const { return ops_.size(); }

  struct Stats {
    std::uint64_t fast_path = 0;    // Changes that skipped phase 1.
    std::uint64_t prepares = 0;     // Phase-1 rounds started.
    std::uint64_t conflicts = 0;    // Rejections that restarted a round.
    std::uint64_t generations_followed = 0;
  };
  const Stats& stats() const { return stats_; }

 private:
  enum class Phase { kPrepare, kAccept, kBackoff };
  enum class AfterChosen { kDone, kOpenNext, kFollowClosed };

  struct Op {
    std::uint64_t id = 0;
    std::string project;
    ChangeFn change;
    Instant deadline;
    std::uint64_t generation = 0;
    std::vector<NodeId> acceptors;
    std::optional<Placement> inherited;
    Phase phase = Phase::kPrepare;
    Ballot ballot;
    std::map<NodeId, Promise> promises;
    std::set<NodeId> accepted;
    RegisterValue writing;
    AfterChosen after = AfterChosen::kDone;
    Instant last_send;
    Instant retry_at;
    int generations_walked = 0;
    int attempts = 0;
  };
  struct Fast {
    std::uint64_t generation = 0;
    std::vector<NodeId> acceptors;
    Ballot next;
    RegisterValue value;
  };

  void start(Op& op, Instant now, ProposerOutput& out);
  void begin_prepare(Op& op, Instant now, ProposerOutput& out);
  void on_promise_quorum(Op& op, Instant now, ProposerOutput& out);
  void write(Op& op, const std::optional<Placement>& current, Instant now, ProposerOutput& out);
  void send_accepts(Op& op, Instant now, ProposerOutput& out);
  void on_chosen(Op& op, Instant now, ProposerOutput& out);
  void open_generation(Op& op, const Placement& first, Instant now, ProposerOutput& out);
  void conflict(Op& op, const Ballot& promised, Instant now);
  void finish(std::string project, Result<RegisterValue> result, ProposerOutput& out,
              Instant now);
  void retransmit(Op& op, Instant now, ProposerOutput& out);

  NodeId self_;
  Random* random_;
  ProposerConfig config_;
  std::uint64_t next_op_ = 1;
  std::map<std::string, Op> ops_;                  // The running change per project.
  std::map<std::string, std::deque<Op>> queued_;   // Changes waiting behind it.
  std::map<std::string, Fast> fast_;               // Pre-promised ballots.
  std::map<std::string, std::uint64_t> counters_;  // Highest ballot counter seen.
  Stats stats_;
};

std::size_t majority_of(std::size_t acceptors);

}  // namespace shoal::core
