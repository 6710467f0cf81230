#pragma once
// gossip/broadcast_queue.h: the piggyback queue (memberlist's
// TransmitLimitedQueue). Owns encoded broadcasts, each about one member and
// one topic; a newer broadcast about the same (member, topic) replaces the
// older. take() hands out the least-transmitted first (newest first among
// equals), so fresh news spreads before old news is repeated, and retires a
// broadcast once it was sent `limit` times. Bounded: when full, the most
// transmitted broadcast is dropped. No I/O; deterministic.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <tuple>
#include <vector>

#include "base/bytes.h"
#include "base/crypto.h"

namespace shoal::gossip {

enum class Topic : std::uint8_t {
  kMembership = 0,  // alive, suspect, dead, leave
  kState = 1,       // health and catalog version
};

class BroadcastQueue {
 public:
  explicit BroadcastQueue(std::size_t items_max) : items_max_(items_max) {}

  // A `final_verdict` (dead, leave) is sent twice the retransmit limit: a node
  // that misses it keeps probing a dead member until its own probe finds out.
  void push(const NodeId& about, Topic topic, Bytes message, bool final_verdict = false);
  // Appends to `out` broadcasts whose total size fits in budget_bytes (each
  // counted with per_item_bytes of framing) and at most parts_max of them.
  // Each one taken counts as one transmit; those at `limit` are retired.
  void take(std::size_t budget_bytes, std::size_t per_item_bytes, std::size_t parts_max, int limit,
            std::vector<Bytes>& out);
  // Times the broadcast about (member, topic) has been sent; nullopt when none is queued.
  std::optional<int> transmits(const NodeId& about, Topic topic) const;
  bool retired(const NodeId& about, Topic topic) const { return !transmits(about, topic).has_value(); }
  // The fewest transmits of any queued broadcast; nullopt when empty.
  std::optional<int> transmits_min() const;
  std::size_t size() const { return items_.size(); }
  bool empty() const { return items_.empty(); }
  std::uint64_t dropped() const { return dropped_; }

 private:
  using Key = std::pair<NodeId, Topic>;
  struct Item {
    Bytes message;
    int transmits = 0;
    std::uint64_t id = 0;  // Insertion order; newer is larger; unique.
    bool final_verdict = false;
  };
  using Items = std::map<Key, Item>;
  // Ordered by (transmits ascending, id descending); ids are unique, so the
  // iterator (stable in a std::map) is carried along but never compared.
  struct OrderKey {
    int transmits;
    std::uint64_t inverse_id;
    Items::iterator item;
    bool operator<(const OrderKey& o) const {
      return transmits != o.transmits ? transmits < o.transmits : inverse_id < o.inverse_id;
    }
  };
  static OrderKey order_key(Items::iterator it) { return {it->second.transmits, ~it->second.id, it}; }
  // take() stops looking for a smaller broadcast after this many misfits.
  static constexpr int kMisfitsMax = 16;

  std::size_t items_max_;
  std::uint64_t next_id_ = 1;
  std::uint64_t dropped_ = 0;
  Items items_;
  std::set<OrderKey> order_;
};

}  // namespace shoal::gossip
