#include "tests/gossip/fake_network.h"

#include <algorithm>
#include <map>

namespace shoal::gossip::testing {

FakeNetwork::FakeNetwork(NetOptions options) : options_(std::move(options)), random_(options_.seed) {
  crypto_init();
  now_ = instant_from_us(1'000'000);
}

FakeNetwork::~FakeNetwork() = default;

int FakeNetwork::add_node(std::function<void(Config&)> tweak) {
  auto n = std::make_unique<Node>();
  n->index = static_cast<int>(nodes_.size());
  n->random = std::make_unique<Prng>(random_.fork());
  n->identity = Identity::generate(*n->random);
  n->addr = Address{"10.0." + std::to_string(n->index / 200) + "." + std::to_string(n->index % 200 + 1), 7946};
  Config c = options_.base;
  char name[32];
  std::snprintf(name, sizeof name, "node-%03d", n->index);
  c.name = name;
  c.dc = "dc" + std::to_string(n->index % 3);
  c.public_key = n->identity.public_key();
  c.advertise = n->addr;
  c.health.version = "0.1.0";
  if (tweak) {
    tweak(c);
  }
  n->config = c;
  n->core = std::make_unique<Membership>(c, *n->random, now_);
  nodes_.push_back(std::move(n));
  const int i = static_cast<int>(nodes_.size()) - 1;
  drain(i);
  return i;
}

void FakeNetwork::join(int node, std::vector<int> seeds) {
  std::vector<Address> addrs;
  for (int s : seeds) {
    addrs.push_back(addr(s));
  }
  this->node(node).join(now_, addrs);
  drain(node);
}

std::vector<int> FakeNetwork::add_and_join(int n, int seed) {
  std::vector<int> added;
  for (int k = 0; k < n; ++k) {
    added.push_back(add_node());
  }
  for (int i : added) {
    if (i != seed) {
      join(i, {seed});
    }
  }
  return added;
}

void FakeNetwork::crash(int node, bool refused) {
  nodes_.at(static_cast<std::size_t>(node))->state = refused ? NodeState::kCrashedRefused : NodeState::kCrashedSilent;
  nodes_.at(static_cast<std::size_t>(node))->paused_inbox.clear();
}

void FakeNetwork::pause(int node) { nodes_.at(static_cast<std::size_t>(node))->state = NodeState::kPaused; }

void FakeNetwork::resume(int node) {
  Node& n = *nodes_.at(static_cast<std::size_t>(node));
  SHOAL_ASSERT(n.state == NodeState::kPaused);
  n.state = NodeState::kUp;
  // libuv runs expired timers before polling sockets; do the same.
  if (n.deadline && *n.deadline <= now_) {
    n.core->on_tick(now_);
    drain(node);
  }
  auto inbox = std::move(n.paused_inbox);
  n.paused_inbox.clear();
  for (auto& run : inbox) {
    run();
  }
}

void FakeNetwork::restart(int node, std::vector<int> seeds) {
  Node& n = *nodes_.at(static_cast<std::size_t>(node));
  // What the agent would have persisted: the last incarnation it used.
  n.config.initial_incarnation = n.core->self().incarnation;
  n.core = std::make_unique<Membership>(n.config, *n.random, now_);
  n.state = NodeState::kUp;
  n.paused_inbox.clear();
  drain(node);
  join(node, std::move(seeds));
}

void FakeNetwork::command(int node, const std::function<void(Membership&, Instant)>& fn) {
  fn(this->node(node), now_);
  drain(node);
}

void FakeNetwork::leave(int node) {
  this->node(node).leave(now_);
  drain(node);
}

void FakeNetwork::block(int a, int b) {
  blocked_.insert({std::min(a, b), std::max(a, b)});
}

void FakeNetwork::unblock(int a, int b) { blocked_.erase({std::min(a, b), std::max(a, b)}); }

void FakeNetwork::partition(const std::vector<int>& side_a, const std::vector<int>& side_b) {
  for (int a : side_a) {
    for (int b : side_b) {
      block(a, b);
    }
  }
}

void FakeNetwork::heal() { blocked_.clear(); }

void FakeNetwork::drop_inbound(int node, bool drop) { nodes_.at(static_cast<std::size_t>(node))->drop_inbound = drop; }

bool FakeNetwork::blocked(int a, int b) const { return blocked_.contains({std::min(a, b), std::max(a, b)}); }

int FakeNetwork::index_of(const Address& a) const {
  for (const auto& n : nodes_) {
    if (n->addr == a) {
      return n->index;
    }
  }
  return -1;
}

Duration FakeNetwork::latency() {
  return options_.latency_min + Duration(static_cast<std::int64_t>(
                                    random_.uniform(static_cast<std::uint64_t>(options_.latency_jitter.count()) + 1)));
}

void FakeNetwork::schedule(Instant at, std::function<void()> run) {
  queue_.push(Delivery{at, seq_++, std::move(run)});
}

void FakeNetwork::drain(int i) {
  Node& n = *nodes_.at(static_cast<std::size_t>(i));
  while (auto d = n.core->poll_transmit()) {
    ++datagrams_sent_;
    const int to = index_of(d->to);
    if (to < 0 || blocked(i, to) || (options_.loss > 0 && random_.chance(options_.loss))) {
      continue;
    }
    schedule(now_ + latency(), [this, to, from = n.addr, bytes = std::move(d->payload)]() mutable {
      deliver_datagram(to, from, std::move(bytes));
    });
  }
  while (auto s = n.core->poll_stream()) {
    start_stream(i, std::move(*s));
  }
  while (auto e = n.core->poll_event()) {
    n.events.push_back(std::move(*e));
  }
  n.deadline = n.core->next_deadline();
}

void FakeNetwork::deliver_datagram(int to, Address from, Bytes bytes) {
  Node& n = *nodes_.at(static_cast<std::size_t>(to));
  switch (n.state) {
    case NodeState::kUp:
      if (!n.drop_inbound) {
        n.core->on_datagram(now_, from, bytes);
        drain(to);
      }
      return;
    case NodeState::kPaused:
      n.paused_inbox.push_back([this, to, from, bytes = std::move(bytes)]() mutable {
        deliver_datagram(to, from, std::move(bytes));
      });
      return;
    default:
      return;
  }
}

void FakeNetwork::start_stream(int from, StreamRequest request) {
  const Instant started = now_;
  const std::uint64_t from_generation =
      reinterpret_cast<std::uintptr_t>(nodes_.at(static_cast<std::size_t>(from))->core.get());
  auto finish = [this, from, from_generation, id = request.id](Instant at, StreamOutcome outcome, Bytes reply) {
    schedule(at, [this, from, from_generation, id, outcome, reply = std::move(reply)]() {
      Node& n = *nodes_.at(static_cast<std::size_t>(from));
      if (reinterpret_cast<std::uintptr_t>(n.core.get()) != from_generation) {
        return;  // Restarted since: the connection died with the old process.
      }
      if (n.state == NodeState::kUp) {
        n.core->on_stream_result(now_, id, outcome, reply);
        drain(from);
      } else if (n.state == NodeState::kPaused) {
        n.paused_inbox.push_back([this, from, id, outcome, reply]() {
          nodes_.at(static_cast<std::size_t>(from))->core->on_stream_result(now_, id, outcome, reply);
          drain(from);
        });
      }
    });
  };
  const int to = index_of(request.to);
  schedule(now_ + latency(), [this, from, to, started, finish, request = std::move(request)]() {
    const Instant timeout_at = started + options_.stream_timeout;
    if (to < 0 || blocked(from, to)) {
      finish(timeout_at, StreamOutcome::kTimeout, {});
      return;
    }
    Node& target = *nodes_.at(static_cast<std::size_t>(to));
    const Instant back = now_ + latency();
    switch (target.state) {
      case NodeState::kCrashedRefused:
      case NodeState::kRemoved:
        finish(back, StreamOutcome::kRefused, {});
        return;
      case NodeState::kCrashedSilent:
        finish(timeout_at, StreamOutcome::kTimeout, {});
        return;
      case NodeState::kPaused:
        // The kernel completes the handshake; the process never answers.
        if (request.kind == StreamKind::kReachability) {
          finish(back, StreamOutcome::kConnected, {});
        } else {
          finish(timeout_at, StreamOutcome::kTimeout, {});
        }
        return;
      case NodeState::kUp:
        break;
    }
    if (request.kind == StreamKind::kReachability) {
      finish(back, StreamOutcome::kConnected, {});
      return;
    }
    auto reply = target.core->on_stream_request(now_, nodes_.at(static_cast<std::size_t>(from))->addr, request.payload);
    drain(to);
    if (reply) {
      finish(back, StreamOutcome::kReplied, std::move(*reply));
    } else {
      finish(back, StreamOutcome::kFailed, {});
    }
  });
}

void FakeNetwork::step(Instant until) {
  int same_instant = 0;
  Instant last{};
  while (true) {
    Instant next = until;
    int timer_node = -1;
    for (const auto& n : nodes_) {
      if (n->state == NodeState::kUp && n->deadline && *n->deadline < next) {
        next = std::max(*n->deadline, now_);
        timer_node = n->index;
      }
    }
    const bool queued = !queue_.empty() && queue_.top().at <= next;
    if (!queued && timer_node < 0) {
      now_ = until;
      return;
    }
    if (queued) {
      next = std::max(queue_.top().at, now_);
    }
    same_instant = (next == last) ? same_instant + 1 : 0;
    SHOAL_ASSERT(same_instant < 100000);  // A core that never moves its deadline forward.
    last = next;
    now_ = next;
    if (queued) {
      Delivery d = queue_.top();
      queue_.pop();
      d.run();
    } else {
      nodes_.at(static_cast<std::size_t>(timer_node))->core->on_tick(now_);
      drain(timer_node);
    }
  }
}

void FakeNetwork::run_for(Duration d) { step(now_ + d); }

bool FakeNetwork::run_until(const std::function<bool()>& pred, Duration limit, Duration slice) {
  const Instant end = now_ + limit;
  while (!pred()) {
    if (now_ >= end) {
      return false;
    }
    step(std::min(end, now_ + slice));
  }
  return true;
}

std::vector<int> FakeNetwork::up_nodes() const {
  std::vector<int> out;
  for (const auto& n : nodes_) {
    if (n->state == NodeState::kUp) {
      out.push_back(n->index);
    }
  }
  return out;
}

std::optional<MemberStatus> FakeNetwork::status(int viewer, int subject) {
  auto m = node(viewer).find(id(subject));
  if (!m) {
    return std::nullopt;
  }
  return m->status;
}

bool FakeNetwork::converged() {
  const std::vector<int> up = up_nodes();
  for (int v : up) {
    if (node(v).count(MemberStatus::kAlive) != up.size()) {
      return false;
    }
    for (int s : up) {
      if (status(v, s) != MemberStatus::kAlive) {
        return false;
      }
    }
  }
  return true;
}

bool FakeNetwork::all_see(int subject, MemberStatus st) {
  for (int v : up_nodes()) {
    if (v != subject && status(v, subject) != st) {
      return false;
    }
  }
  return true;
}

int FakeNetwork::count_events(EventKind kind, int subject) const {
  int c = 0;
  const NodeId who = id(subject);
  for (const auto& n : nodes_) {
    for (const Event& e : n->events) {
      c += (e.kind == kind && e.member.id == who) ? 1 : 0;
    }
  }
  return c;
}

int FakeNetwork::count_events(EventKind kind) const {
  int c = 0;
  for (const auto& n : nodes_) {
    for (const Event& e : n->events) {
      c += e.kind == kind ? 1 : 0;
    }
  }
  return c;
}

void FakeNetwork::inject(int node, const Address& from, ByteView bytes) {
  this->node(node).on_datagram(now_, from, bytes);
  drain(node);
}

}  // namespace shoal::gossip::testing
