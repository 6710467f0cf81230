#include "gossip/broadcast_queue.h"

#include "base/assert.h"

namespace shoal::gossip {

void BroadcastQueue::push(const NodeId& about, Topic topic, Bytes message, bool final_verdict) {
  SHOAL_ASSERT(!message.empty());
  const Key key{about, topic};
  if (auto it = items_.find(key); it != items_.end()) {
    order_.erase(order_key(it));
    items_.erase(it);
  }
  while (items_.size() >= items_max_) {
    // Drop the most repeated (and oldest among equals): it has had its chance.
    const auto last = std::prev(order_.end());
    const Items::iterator victim = last->item;
    order_.erase(last);
    items_.erase(victim);
    ++dropped_;
  }
  auto [it, inserted] = items_.emplace(key, Item{std::move(message), 0, next_id_++, final_verdict});
  SHOAL_ASSERT(inserted);
  order_.insert(order_key(it));
  SHOAL_ASSERT(items_.size() == order_.size());
}

void BroadcastQueue::take(std::size_t budget_bytes, std::size_t per_item_bytes, std::size_t parts_max, int limit,
                          std::vector<Bytes>& out) {
  std::vector<Items::iterator> chosen;
  std::size_t used = 0;
  int misfits = 0;
  for (const OrderKey& ok : order_) {
    if (chosen.size() >= parts_max || misfits >= kMisfitsMax) {
      break;
    }
    const std::size_t need = ok.item->second.message.size() + per_item_bytes;
    if (used + need > budget_bytes) {
      ++misfits;  // A smaller one further on may still fit.
      continue;
    }
    used += need;
    chosen.push_back(ok.item);
  }
  for (Items::iterator it : chosen) {
    order_.erase(order_key(it));
    ++it->second.transmits;
    if (it->second.transmits >= (it->second.final_verdict ? 2 * limit : limit)) {
      out.push_back(std::move(it->second.message));
      items_.erase(it);
    } else {
      out.push_back(it->second.message);
      order_.insert(order_key(it));
    }
  }
  SHOAL_ASSERT(items_.size() == order_.size());
}

std::optional<int> BroadcastQueue::transmits(const NodeId& about, Topic topic) const {
  auto it = items_.find(Key{about, topic});
  if (it == items_.end()) {
    return std::nullopt;
  }
  return it->second.transmits;
}

std::optional<int> BroadcastQueue::transmits_min() const {
  if (order_.empty()) {
    return std::nullopt;
  }
  return order_.begin()->transmits;
}

}  // namespace shoal::gossip
