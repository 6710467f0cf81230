// node/agent/placement_service.cc: acceptor table, placement datagrams,
// locating a register, and the proposer's outcomes.
#include "node/agent/placement_service.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "base/assert.h"
#include "node/agent/uv_util.h"

namespace shoal::agent {
namespace {

// Acceptor records are keyed project || 0x00 || generation (big-endian), so
// one project's generations are adjacent and in order.
Bytes record_key(const std::string& project, std::uint64_t generation) {
  Bytes key(project.begin(), project.end());
  key.push_back(0);
  for (int shift = 56; shift >= 0; shift -= 8) key.push_back(static_cast<std::uint8_t>(generation >> shift));
  return key;
}

bool split_key(ByteView key, std::string& project, std::uint64_t& generation) {
  if (key.size() < 9 || key[key.size() - 9] != 0) return false;
  project.assign(key.begin(), key.end() - 9);
  generation = 0;
  for (std::size_t i = key.size() - 8; i < key.size(); ++i) generation = (generation << 8) | key[i];
  return true;
}

}  // namespace

Result<std::unique_ptr<PlacementService>> PlacementService::open(storage::Env& env, NodeId self,
                                                                 std::uint64_t counter_floor, Random& random,
                                                                 SendFn send) {
  std::unique_ptr<PlacementService> service(new PlacementService());
  auto table = env.table("placement");
  if (!table) return std::unexpected(table.error());
  service->env_ = &env;
  service->table_ = *table;
  service->self_ = self;
  service->send_ = std::move(send);
  // Forward ids, like ballots, start above every id an earlier run of this
  // node used: a receiver keeps replies by (sender, id) for a minute, and a
  // restarted sender must not be answered with its previous run's reply.
  service->next_forward_ = counter_floor + 1;
  core::ProposerConfig config;
  config.counter_floor = counter_floor;
  service->proposer_ = std::make_unique<core::Proposer>(self, random, config);
  return service;
}

void PlacementService::send(const NodeId& to, const core::Message& message) {
  // tag || sender id || message, as on_datagram expects it.
  const Bytes wire = core::encode_message(message);
  Bytes plain;
  plain.reserve(1 + kNodeIdBytes + wire.size());
  plain.push_back(kPlacementDatagramTag);
  plain.insert(plain.end(), self_.bytes.begin(), self_.bytes.end());
  plain.insert(plain.end(), wire.begin(), wire.end());
  if (to == self_) {
    // Our own acceptor answers in-line; the reply goes to our own proposer.
    on_datagram(plain, monotonic_now());
    return;
  }
  ++counters_.messages_out;
  send_(to, std::move(plain));
}

void PlacementService::flush(core::ProposerOutput& out) {
  // Sends may loop back to our own acceptor and then our proposer, which
  // appends more output; take the batch first.
  while (!out.send.empty() || !out.done.empty()) {
    std::vector<core::Envelope> sends = std::move(out.send);
    std::vector<core::Outcome> done = std::move(out.done);
    out.send.clear();
    out.done.clear();
    for (const core::Envelope& e : sends) send(e.to, e.message);
    for (core::Outcome& o : done) {
      auto it = waiting_.find(o.op);
      if (it == waiting_.end()) continue;
      Done callback = std::move(it->second);
      waiting_.erase(it);
      if (o.result) {
        ++counters_.changes_ok;
      } else {
        ++counters_.changes_failed;
      }
      callback(std::move(o.result));
    }
  }
}

void PlacementService::on_datagram(ByteView plaintext, Instant now) {
  ++counters_.messages_in;
  if (plaintext.size() < 1 + kNodeIdBytes) {
    ++counters_.malformed;
    return;
  }
  NodeId from;
  std::copy(plaintext.begin() + 1, plaintext.begin() + 1 + kNodeIdBytes, from.bytes.begin());
  auto message = core::decode_message(plaintext.subspan(1 + kNodeIdBytes));
  if (!message) {
    ++counters_.malformed;
    spdlog::debug("placement datagram from {} dropped: {}", from.short_hex(), message.error().message);
    return;
  }
  if (std::holds_alternative<core::Prepare>(*message) || std::holds_alternative<core::Accept>(*message) ||
      std::holds_alternative<core::Locate>(*message)) {
    on_acceptor_request(from, *message);
    return;
  }
  if (const auto* forward = std::get_if<core::Forward>(&*message)) {
    on_forward(from, *forward, now);
    return;
  }
  if (const auto* reply = std::get_if<core::ForwardReply>(&*message)) {
    on_forward_reply(from, *reply);
    return;
  }
  if (const auto* inquire = std::get_if<core::Inquire>(&*message)) {
    core::Inquired reply{inquire->project, 0, false, 0, {}};
    if (holdings_) reply = holdings_(*inquire);
    send(from, reply);
    return;
  }
  if (const auto* inquired = std::get_if<core::Inquired>(&*message)) {
    for (auto& [id, pending] : inquiries_) {
      if (pending.project != inquired->project || !pending.waiting.erase(from)) continue;
      pending.answers[from] = *inquired;
      if (pending.waiting.empty()) finish_inquiry(id);
      return;
    }
    return;
  }
  if (const auto* located = std::get_if<core::Located>(&*message)) {
    for (auto& [id, pending] : locates_) {
      if (pending.project != located->project || pending.waiting == 0) continue;
      --pending.waiting;
      if (located->known && !located->acceptors.empty() &&
          (!pending.best || located->generation > pending.best->generation)) {
        pending.best = core::Hint{located->generation, located->acceptors};
      }
      if (pending.waiting == 0) {
        finish_locate(id);
        return;
      }
    }
    return;
  }
  core::ProposerOutput out;
  proposer_->on_message(from, *message, now, out);
  flush(out);
}

void PlacementService::on_acceptor_request(const NodeId& from, const core::Message& message) {
  const std::string& project = core::message_project(message);
  if (std::holds_alternative<core::Locate>(message)) {
    core::Located reply{project, 0, false, {}};
    if (auto own = own_hint(project)) {
      reply = core::Located{project, own->generation, true, own->acceptors};
    }
    send(from, reply);
    return;
  }
  const std::uint64_t generation = core::message_generation(message);
  const Bytes key = record_key(project, generation);
  auto txn = storage::Txn::begin_write(*env_);
  if (!txn) {
    spdlog::error("placement: cannot open a write transaction: {}", txn.error().message);
    return;  // No reply: the proposer retries or times out. Never answer without durability.
  }
  core::AcceptorRecord record;
  auto stored = txn->get(table_, key);
  if (!stored) {
    spdlog::error("placement: cannot read record of {}: {}", project, stored.error().message);
    return;
  }
  if (*stored) {
    auto decoded = core::decode_acceptor_record(**stored);
    if (!decoded) {
      // A damaged record must not be treated as empty: that could let a
      // promise be broken. Refuse to take part for this project.
      spdlog::error("placement: acceptor record of {} generation {} is damaged ({}); not answering",
                    project, generation, decoded.error().message);
      return;
    }
    record = *decoded;
  }
  core::AcceptorStep step = core::acceptor_step(record, message);
  if (step.write) {
    const Bytes value = core::encode_acceptor_record(*step.write);
    if (auto put = txn->put(table_, key, value); !put) {
      spdlog::error("placement: cannot store record of {}: {}", project, put.error().message);
      return;
    }
    if (auto committed = txn->commit(); !committed) {
      spdlog::error("placement: cannot commit record of {}: {}", project, committed.error().message);
      return;
    }
    ++counters_.durable_writes;
  } else {
    txn->abort();
  }
  send(from, step.reply);
}

std::optional<core::Hint> PlacementService::own_hint(const std::string& project) {
  auto value = local_value(project);
  if (!value || !*value) return std::nullopt;
  return core::Hint{(*value)->generation, (*value)->acceptors};
}

Result<std::optional<core::RegisterValue>> PlacementService::local_value(const std::string& project) {
  auto txn = storage::Txn::begin_read(*env_);
  if (!txn) return std::unexpected(txn.error());
  std::optional<core::RegisterValue> newest;
  Bytes start(project.begin(), project.end());
  start.push_back(0);
  Status scanned = txn->scan(table_, start, [&](ByteView key, ByteView bytes) {
    std::string p;
    std::uint64_t generation = 0;
    if (!split_key(key, p, generation) || p != project) return false;
    auto record = core::decode_acceptor_record(bytes);
    if (record && record->value) newest = record->value;  // Keys ascend: the last is the newest.
    return true;
  });
  if (!scanned) return std::unexpected(scanned.error());
  return newest;
}

Result<std::vector<core::RegisterValue>> PlacementService::local_values() {
  auto txn = storage::Txn::begin_read(*env_);
  if (!txn) return std::unexpected(txn.error());
  std::map<std::string, core::RegisterValue> newest;
  Status scanned = txn->scan(table_, {}, [&](ByteView key, ByteView bytes) {
    std::string project;
    std::uint64_t generation = 0;
    if (!split_key(key, project, generation)) return true;
    auto record = core::decode_acceptor_record(bytes);
    if (record && record->value) newest[project] = *record->value;
    return true;
  });
  if (!scanned) return std::unexpected(scanned.error());
  std::vector<core::RegisterValue> out;
  for (auto& [project, value] : newest) out.push_back(std::move(value));
  return out;
}

void PlacementService::locate(const std::string& project, std::vector<NodeId> among, Instant now,
                              std::function<void(std::optional<core::Hint>)> done) {
  const std::uint64_t id = next_locate_++;
  PendingLocate& pending = locates_[id];
  pending.project = project;
  pending.deadline = now + kLocateTimeout;
  pending.best = own_hint(project);
  pending.done = std::move(done);
  among.erase(std::remove(among.begin(), among.end(), self_), among.end());
  pending.waiting = among.size();
  if (among.empty()) {
    finish_locate(id);
    return;
  }
  for (const NodeId& to : among) send(to, core::Locate{project, 0});
}

void PlacementService::inquire(const std::string& project, const Hash256& snapshot, const std::vector<NodeId>& nodes,
                               Instant now, std::function<void(Answers)> done) {
  const std::uint64_t id = next_locate_++;
  PendingInquiry& pending = inquiries_[id];
  pending.project = project;
  pending.deadline = now + kLocateTimeout;
  pending.done = std::move(done);
  pending.waiting.insert(nodes.begin(), nodes.end());
  if (pending.waiting.empty()) {
    finish_inquiry(id);
    return;
  }
  for (const NodeId& to : nodes) send(to, core::Inquire{project, 0, snapshot});  // Self answers in-line.
}

void PlacementService::finish_inquiry(std::uint64_t id) {
  auto it = inquiries_.find(id);
  if (it == inquiries_.end()) return;
  auto done = std::move(it->second.done);
  Answers answers = std::move(it->second.answers);
  inquiries_.erase(it);
  done(std::move(answers));
}

void PlacementService::finish_locate(std::uint64_t id) {
  auto it = locates_.find(id);
  if (it == locates_.end()) return;
  auto done = std::move(it->second.done);
  auto best = std::move(it->second.best);
  locates_.erase(it);
  done(std::move(best));
}

void PlacementService::change(const std::string& project, std::optional<core::Hint> hint,
                              std::vector<NodeId> locate_among, core::ChangeFn change, Instant now, Done done) {
  auto run = [this, project, change = std::move(change)](core::Hint start, Done callback) {
    core::ProposerOutput out;
    const std::uint64_t op = proposer_->propose(project, std::move(start), change, monotonic_now(), out);
    waiting_[op] = std::move(callback);
    flush(out);
  };
  if (!hint) hint = own_hint(project);
  if (hint) {
    run(std::move(*hint), std::move(done));
    return;
  }
  locate(project, std::move(locate_among), now,
         [this, run = std::move(run), project, done = std::move(done)](std::optional<core::Hint> found) mutable {
           if (!found) {
             ++counters_.changes_failed;
             done(make_error(Code::kNotFound, "project " + project + " is not known to this node or any reachable member"));
             return;
           }
           run(std::move(*found), std::move(done));
         });
}

void PlacementService::forward(const NodeId& to, const std::string& project, std::string method, std::string path,
                               std::string body, Instant now, std::function<void(Result<ForwardAnswer>)> done) {
  core::Forward request{project, 0, next_forward_++, std::move(method), std::move(path), std::move(body)};
  if (Status fits = core::check_forward(request); !fits) return done(std::unexpected(fits.error()));
  ++counters_.forwards_sent;
  // Pending before the send: a forward to this node is answered in-line.
  const std::uint64_t id = request.request_id;
  forwards_[id] = PendingForward{to, request, now + kForwardRetry, now + kForwardTimeout, std::move(done)};
  send(to, request);
}

void PlacementService::on_forward(const NodeId& from, const core::Forward& request, Instant now) {
  const auto key = std::make_pair(from, request.request_id);
  if (auto kept = forward_replies_.find(key); kept != forward_replies_.end()) {
    // A retry: our reply was lost or is still on its way. Never run it twice.
    ++counters_.forwards_repeated;
    send(from, kept->second.reply);
    return;
  }
  ForwardAnswer answer{503, R"({"error":"this agent does not serve forwarded requests"})"};
  if (forward_handler_) answer = forward_handler_(from, request);
  core::ForwardReply reply{request.project, 0, request.request_id, answer.status, std::move(answer.body)};
  if (Status fits = core::check_forward_reply(reply); !fits) {
    // The request ran; only its answer cannot travel. Say so rather than drop it.
    reply.status = 502;
    reply.body = nlohmann::json{{"error", "the answer of " + request.method + " " + request.path +
                                              " on the primary cannot be forwarded: " + fits.error().message}}
                     .dump();
  }
  ++counters_.forwards_served;
  if (forward_replies_.size() >= kForwardRepliesMax) {
    // Full (a peer retrying far more than ours do): drop the entry closest to expiry.
    auto oldest = std::min_element(forward_replies_.begin(), forward_replies_.end(), [](const auto& a, const auto& b) {
      return a.second.expires < b.second.expires;
    });
    forward_replies_.erase(oldest);
  }
  forward_replies_[key] = KeptReply{reply, now + kForwardReplyKept};
  send(from, reply);
}

void PlacementService::on_forward_reply(const NodeId& from, const core::ForwardReply& reply) {
  auto it = forwards_.find(reply.request_id);
  if (it == forwards_.end() || it->second.to != from) return;  // A late duplicate, or not ours.
  auto done = std::move(it->second.done);
  forwards_.erase(it);
  done(ForwardAnswer{reply.status, reply.body});
}

void PlacementService::retry_forwards(Instant now) {
  std::vector<std::uint64_t> expired;
  for (auto& [id, pending] : forwards_) {
    if (now >= pending.deadline) {
      expired.push_back(id);
    } else if (now >= pending.next_send) {
      pending.next_send = now + kForwardRetry;
      send(pending.to, pending.request);
    }
  }
  for (std::uint64_t id : expired) {
    auto it = forwards_.find(id);
    if (it == forwards_.end()) continue;
    auto done = std::move(it->second.done);
    forwards_.erase(it);
    const auto waited = std::chrono::duration_cast<std::chrono::seconds>(kForwardTimeout).count();
    done(make_error(Code::kUnavailable, "no answer to a forwarded request in " + std::to_string(waited) + " s"));
  }
  std::erase_if(forward_replies_, [now](const auto& entry) { return now >= entry.second.expires; });
}

void PlacementService::tick(Instant now) {
  retry_forwards(now);
  std::vector<std::uint64_t> expired;
  for (const auto& [id, pending] : locates_) {
    if (now >= pending.deadline) expired.push_back(id);
  }
  for (std::uint64_t id : expired) finish_locate(id);
  std::vector<std::uint64_t> late;
  for (const auto& [id, pending] : inquiries_) {
    if (now >= pending.deadline) late.push_back(id);
  }
  for (std::uint64_t id : late) finish_inquiry(id);
  core::ProposerOutput out;
  proposer_->on_tick(now, out);
  flush(out);
}

std::optional<Instant> PlacementService::next_wakeup() const {
  std::optional<Instant> wake = proposer_->next_wakeup();
  for (const auto& [id, pending] : locates_) {
    if (!wake || pending.deadline < *wake) wake = pending.deadline;
  }
  for (const auto& [id, pending] : inquiries_) {
    if (!wake || pending.deadline < *wake) wake = pending.deadline;
  }
  for (const auto& [id, pending] : forwards_) {
    const Instant at = std::min(pending.next_send, pending.deadline);
    if (!wake || at < *wake) wake = at;
  }
  return wake;
}

}  // namespace shoal::agent
