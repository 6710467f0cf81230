#pragma once
// tests/gossip/fake_network.h: many gossip cores on a virtual network and
// clock, for unit tests. A priority queue of deliveries with latency and
// seeded loss; TCP stream requests are answered from the target's state:
// reachability gives kConnected (up or paused), kRefused (crashed, host up)
// or kTimeout (crashed silently, or partitioned); push-pull calls the
// target's on_stream_request. Nodes can be paused (inputs buffered, timers
// frozen), crashed, restarted and partitioned. No sleeps: time is a number.

#include <functional>
#include <memory>
#include <queue>
#include <set>
#include <string>
#include <vector>

#include "base/crypto.h"
#include "base/random.h"
#include "gossip/membership.h"

namespace shoal::gossip::testing {

struct NetOptions {
  std::uint64_t seed = 1;
  Duration latency_min = std::chrono::microseconds(200);
  Duration latency_jitter = std::chrono::microseconds(300);
  double loss = 0.0;  // Per datagram.
  Duration stream_timeout = seconds(1);  // The driver's connect/read timeout.
  Config base = Config{};
};

enum class NodeState { kUp, kPaused, kCrashedRefused, kCrashedSilent, kRemoved };

struct RecordedEvent {
  Event event;
};

class FakeNetwork {
 public:
  explicit FakeNetwork(NetOptions options = {});
  ~FakeNetwork();

  // Adds a node (not yet joined). Returns its index.
  int add_node(std::function<void(Config&)> tweak = {});
  void join(int node, std::vector<int> seeds);
  // Adds n nodes that all join node `seed` (which must exist) at once.
  std::vector<int> add_and_join(int n, int seed);

  void crash(int node, bool refused);  // refused: the host answers RST; else silence.
  void pause(int node);
  void resume(int node);
  // A new core for a crashed node, same identity, incarnation restored as from disk.
  void restart(int node, std::vector<int> seeds);
  void leave(int node);
  // Runs a command on a node's core (set_health, set_catalog_version, ...)
  // and then drains it, as a driver does: outputs sent, timer re-armed.
  void command(int node, const std::function<void(Membership&, Instant)>& fn);

  // Datagrams and streams between a and b are dropped / time out.
  void block(int a, int b);
  void unblock(int a, int b);
  void partition(const std::vector<int>& side_a, const std::vector<int>& side_b);
  void heal();
  // Drop every datagram to this node (its acks and nacks never arrive).
  void drop_inbound(int node, bool drop);

  void run_for(Duration d);
  // Runs until pred() or `limit` of virtual time passed; returns whether pred held.
  bool run_until(const std::function<bool()>& pred, Duration limit, Duration check_every = milliseconds(5));

  Instant now() const { return now_; }
  Membership& node(int i) { return *nodes_.at(static_cast<std::size_t>(i))->core; }
  NodeState state(int i) const { return nodes_.at(static_cast<std::size_t>(i))->state; }
  NodeId id(int i) const { return nodes_.at(static_cast<std::size_t>(i))->identity.node_id(); }
  const Address& addr(int i) const { return nodes_.at(static_cast<std::size_t>(i))->addr; }
  const std::vector<Event>& events(int i) const { return nodes_.at(static_cast<std::size_t>(i))->events; }
  int size() const { return static_cast<int>(nodes_.size()); }
  std::vector<int> up_nodes() const;

  // Status of `subject` as seen by `viewer` (nullopt when unknown).
  std::optional<MemberStatus> status(int viewer, int subject);
  // Every up node sees every up node alive, and knows exactly `expected` alive.
  bool converged();
  // Every up node other than subject sees it with this status.
  bool all_see(int subject, MemberStatus status);
  // Counts events of this kind about subject across all nodes.
  int count_events(EventKind kind, int subject) const;
  int count_events(EventKind kind) const;

  // Delivers raw bytes to a node as a datagram from `from`.
  void inject(int node, const Address& from, ByteView bytes);

  std::uint64_t datagrams_sent() const { return datagrams_sent_; }

 private:
  struct Node {
    int index = 0;
    Identity identity;
    Address addr;
    Config config;
    std::unique_ptr<Prng> random;
    std::unique_ptr<Membership> core;
    NodeState state = NodeState::kUp;
    std::optional<Instant> deadline;
    std::vector<Event> events;
    std::vector<std::function<void()>> paused_inbox;  // Replayed on resume.
    bool drop_inbound = false;
  };
  struct Delivery {
    Instant at;
    std::uint64_t seq;
    std::function<void()> run;
    bool operator>(const Delivery& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };

  void schedule(Instant at, std::function<void()> run);
  Duration latency();
  bool blocked(int a, int b) const;
  int index_of(const Address& addr) const;
  void drain(int i);
  void deliver_datagram(int to, Address from, Bytes bytes);
  void start_stream(int from, StreamRequest request);
  void step(Instant until);

  NetOptions options_;
  Prng random_;
  Instant now_{};
  std::uint64_t seq_ = 0;
  std::uint64_t datagrams_sent_ = 0;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::priority_queue<Delivery, std::vector<Delivery>, std::greater<>> queue_;
  std::set<std::pair<int, int>> blocked_;
};

}  // namespace shoal::gossip::testing
