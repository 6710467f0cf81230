// node/core/proposer.cc: CASPaxos proposer with generations and a fast path.
#include "node/core/proposer.h"

#include <algorithm>

#include "base/assert.h"

namespace shoal::core {
namespace {

bool contains(const std::vector<NodeId>& nodes, const NodeId& node) {
  return std::find(nodes.begin(), nodes.end(), node) != nodes.end();
}

Status check_wanted(const Placement& p) {
  if (p.replicas.empty()) return make_error(Code::kInvalidArgument, "a placement needs at least one replica");
  if (p.replicas.size() > kReplicasMax) return make_error(Code::kInvalidArgument, "too many replicas");
  if (!p.is_replica(p.primary)) return make_error(Code::kInvalidArgument, "the primary must be a replica");
  std::vector<NodeId> sorted = p.replicas;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    return make_error(Code::kInvalidArgument, "a node is listed twice as replica");
  }
  return {};
}

}  // namespace

std::size_t majority_of(std::size_t acceptors) { return acceptors / 2 + 1; }

Proposer::Proposer(NodeId self, Random& random, ProposerConfig config)
    : self_(self), random_(&random), config_(config) {}

std::uint64_t Proposer::propose(std::string project, Hint hint, ChangeFn change, Instant now,
                                ProposerOutput& out) {
  Op op;
  op.id = next_op_++;
  op.project = project;
  op.change = std::move(change);
  op.deadline = now + config_.deadline;
  op.generation = hint.generation;
  op.acceptors = std::move(hint.acceptors);
  const std::uint64_t id = op.id;
  if (ops_.contains(project)) {
    queued_[project].push_back(std::move(op));
    return id;
  }
  Op& running = ops_.emplace(project, std::move(op)).first->second;
  start(running, now, out);
  return id;
}

void Proposer::start(Op& op, Instant now, ProposerOutput& out) {
  if (op.acceptors.empty()) {
    finish(op.project, make_error(Code::kUnavailable, "no acceptors known for project " + op.project), out, now);
    return;
  }
  const auto fast = fast_.find(op.project);
  if (fast != fast_.end() && fast->second.generation >= op.generation) {
    // Our last accept pre-promised fast.next at a majority: phase 1 is done.
    ++stats_.fast_path;
    op.generation = fast->second.generation;
    op.acceptors = fast->second.acceptors;
    op.inherited.reset();
    op.ballot = fast->second.next;
    const Placement current = fast->second.value.placement;
    fast_.erase(fast);
    write(op, current, now, out);
    return;
  }
  begin_prepare(op, now, out);
}

void Proposer::begin_prepare(Op& op, Instant now, ProposerOutput& out) {
  ++stats_.prepares;
  std::uint64_t& counter = counters_[op.project];
  counter = std::max(counter, config_.counter_floor) + 1;
  op.ballot = Ballot{counter, self_};
  op.phase = Phase::kPrepare;
  op.promises.clear();
  op.accepted.clear();
  op.last_send = now;
  for (const NodeId& to : op.acceptors) {
    out.send.push_back({to, Prepare{op.project, op.generation, op.ballot}});
  }
}

void Proposer::on_message(const NodeId& from, const Message& message, Instant now, ProposerOutput& out) {
  const auto it = ops_.find(message_project(message));
  if (it == ops_.end()) return;
  Op& op = it->second;
  if (message_generation(message) != op.generation || !contains(op.acceptors, from)) return;

  if (const auto* reject = std::get_if<Reject>(&message)) {
    if (reject->ballot != op.ballot || op.phase == Phase::kBackoff) return;
    conflict(op, reject->promised, now);
    return;
  }
  if (const auto* promise = std::get_if<Promise>(&message)) {
    if (op.phase != Phase::kPrepare || promise->ballot != op.ballot) return;
    if (promise->value && promise->value->generation != op.generation) return;  // Malformed.
    op.promises[from] = *promise;
    if (promise->value && !same_node_set(promise->value->acceptors, op.acceptors)) {
      // Our idea of this generation's acceptors was stale; every value of a
      // generation names the real ones. Ask them instead.
      op.acceptors = promise->value->acceptors;
      op.inherited.reset();
      begin_prepare(op, now, out);
      return;
    }
    if (op.promises.size() >= majority_of(op.acceptors.size())) on_promise_quorum(op, now, out);
    return;
  }
  if (const auto* accepted = std::get_if<Accepted>(&message)) {
    if (op.phase != Phase::kAccept || accepted->ballot != op.ballot) return;
    op.accepted.insert(from);
    if (op.accepted.size() >= majority_of(op.acceptors.size())) on_chosen(op, now, out);
  }
}

void Proposer::on_promise_quorum(Op& op, Instant now, ProposerOutput& out) {
  const Promise* highest = nullptr;
  for (const auto& [node, promise] : op.promises) {
    if (promise.value && (!highest || promise.accepted > highest->accepted)) highest = &promise;
  }
  if (highest && highest->value->closed) {
    // Someone closed this generation; make sure the stop sign is chosen by
    // writing it again at our ballot, then continue in the next generation.
    op.writing = *highest->value;
    op.after = AfterChosen::kFollowClosed;
    send_accepts(op, now, out);
    return;
  }
  std::optional<Placement> current;
  if (highest) {
    current = highest->value->placement;
  } else if (op.inherited) {
    current = op.inherited;
  } else if (op.generation > 0) {
    finish(op.project,
           make_error(Code::kUnavailable, "generation " + std::to_string(op.generation) + " of project " +
                                              op.project + " holds no value; its placement is unknown here"),
           out, now);
    return;
  }
  write(op, current, now, out);
}

void Proposer::write(Op& op, const std::optional<Placement>& current, Instant now, ProposerOutput& out) {
  Result<Placement> wanted = op.change(current);
  if (!wanted) {
    finish(op.project, std::unexpected(wanted.error()), out, now);
    return;
  }
  Placement next = std::move(*wanted);
  next.project = op.project;
  if (!current || !(next == *current)) {
    next.version = (current ? current->version : 0) + 1;
  }
  if (const Status valid = check_wanted(next); !valid) {
    finish(op.project, std::unexpected(valid.error()), out, now);
    return;
  }
  const bool reconfigure = !same_node_set(next.replicas, op.acceptors);
  op.writing = RegisterValue{op.generation, op.acceptors, reconfigure, std::move(next)};
  op.after = reconfigure ? AfterChosen::kOpenNext : AfterChosen::kDone;
  send_accepts(op, now, out);
}

void Proposer::send_accepts(Op& op, Instant now, ProposerOutput& out) {
  op.phase = Phase::kAccept;
  op.accepted.clear();
  op.last_send = now;
  const Ballot next{op.ballot.counter + 1, self_};
  for (const NodeId& to : op.acceptors) {
    out.send.push_back({to, Accept{op.project, op.generation, op.ballot, op.writing, next}});
  }
}

void Proposer::on_chosen(Op& op, Instant now, ProposerOutput& out) {
  std::uint64_t& counter = counters_[op.project];
  counter = std::max(counter, op.ballot.counter + 1);
  if (!op.writing.closed) {
    fast_[op.project] = Fast{op.generation, op.acceptors, Ballot{op.ballot.counter + 1, self_}, op.writing};
  } else {
    fast_.erase(op.project);
  }
  switch (op.after) {
    case AfterChosen::kDone:
      finish(op.project, op.writing, out, now);
      return;
    case AfterChosen::kOpenNext:
      // Our change is decided (the stop sign carries it); open the next
      // generation with it unchanged.
      op.change = [](const std::optional<Placement>& current) -> Result<Placement> {
        SHOAL_ASSERT(current.has_value());
        return *current;
      };
      open_generation(op, op.writing.placement, now, out);
      return;
    case AfterChosen::kFollowClosed:
      open_generation(op, op.writing.placement, now, out);
      return;
  }
}

void Proposer::open_generation(Op& op, const Placement& first, Instant now, ProposerOutput& out) {
  ++stats_.generations_followed;
  if (++op.generations_walked > config_.generations_max) {
    finish(op.project, make_error(Code::kUnavailable, "project " + op.project + " is being moved repeatedly"),
           out, now);
    return;
  }
  op.generation += 1;
  op.acceptors = first.replicas;
  op.inherited = first;
  begin_prepare(op, now, out);
}

void Proposer::conflict(Op& op, const Ballot& promised, Instant now) {
  ++stats_.conflicts;
  fast_.erase(op.project);
  std::uint64_t& counter = counters_[op.project];
  counter = std::max(counter, promised.counter);
  op.phase = Phase::kBackoff;
  ++op.attempts;
  // Random, growing wait so two proposers stop overwriting each other's ballots.
  const auto max_us = std::min<std::int64_t>(config_.backoff_max.count(), 5'000LL << std::min(op.attempts, 6));
  op.retry_at = now + Duration(static_cast<std::int64_t>(random_->uniform(static_cast<std::uint64_t>(max_us))) + 1);
}

void Proposer::retransmit(Op& op, Instant now, ProposerOutput& out) {
  op.last_send = now;
  for (const NodeId& to : op.acceptors) {
    if (op.phase == Phase::kPrepare && !op.promises.contains(to)) {
      out.send.push_back({to, Prepare{op.project, op.generation, op.ballot}});
    } else if (op.phase == Phase::kAccept && !op.accepted.contains(to)) {
      out.send.push_back({to, Accept{op.project, op.generation, op.ballot, op.writing,
                                     Ballot{op.ballot.counter + 1, self_}}});
    }
  }
}

void Proposer::on_tick(Instant now, ProposerOutput& out) {
  std::vector<std::string> projects;
  for (const auto& [project, op] : ops_) projects.push_back(project);
  for (const std::string& project : projects) {
    const auto it = ops_.find(project);
    if (it == ops_.end()) continue;
    Op& op = it->second;
    if (now >= op.deadline) {
      const std::size_t got = op.phase == Phase::kAccept ? op.accepted.size() : op.promises.size();
      fast_.erase(project);
      finish(project,
             make_error(Code::kUnavailable, "no majority of project " + project + "'s " +
                                                std::to_string(op.acceptors.size()) + " replicas answered (" +
                                                std::to_string(got) + " did)"),
             out, now);
      continue;
    }
    if (op.phase == Phase::kBackoff) {
      if (now >= op.retry_at) begin_prepare(op, now, out);
    } else if (now - op.last_send >= config_.retransmit) {
      retransmit(op, now, out);
    }
  }
}

std::optional<Instant> Proposer::next_wakeup() const {
  std::optional<Instant> wake;
  for (const auto& [project, op] : ops_) {
    Instant t = op.phase == Phase::kBackoff ? op.retry_at : op.last_send + config_.retransmit;
    t = std::min(t, op.deadline);
    if (!wake || t < *wake) wake = t;
  }
  return wake;
}

// Takes the project by value: callers pass op.project, and op dies here.
void Proposer::finish(std::string project, Result<RegisterValue> result, ProposerOutput& out, Instant now) {
  const auto it = ops_.find(project);
  SHOAL_ASSERT(it != ops_.end());
  out.done.push_back(Outcome{it->second.id, project, std::move(result)});
  ops_.erase(it);
  auto queue = queued_.find(project);
  if (queue == queued_.end()) return;
  Op next = std::move(queue->second.front());
  queue->second.pop_front();
  if (queue->second.empty()) queued_.erase(queue);
  next.deadline = now + config_.deadline;
  Op& running = ops_.emplace(project, std::move(next)).first->second;
  start(running, now, out);
}

}  // namespace shoal::core
