#include "gossip/broadcast_queue.h"

#include "base/assert.h"

namespace shoal::gossip {

void BroadcastQueue::push(const NodeId& about, Topic topic, Bytes message) {
  SHOAL_ASSERT(!message.empty());
  const Key key{about, topic};
  if (auto it = items_.find(key); it != items_.end()) {
    order_.erase(order_key(key, it->second));
    items_.erase(it);
  }
  while (items_.size() >= items_max_) {
    // Drop the most repeated (and oldest among equals): it has had its chance.
    const OrderKey last = *order_.rbegin();
    order_.erase(std::prev(order_.end()));
    items_.erase(std::get<2>(last));
    ++dropped_;
  }
  Item item{std::move(message), 0, next_id_++};
  order_.insert(order_key(key, item));
  items_.emplace(key, std::move(item));
  SHOAL_ASSERT(items_.size() == order_.size());
}

void BroadcastQueue::take(std::size_t budget_bytes, std::size_t per_item_bytes, std::size_t parts_max, int limit,
                          std::vector<Bytes>& out) {
  std::vector<Key> chosen;
  std::size_t used = 0;
  for (const OrderKey& ok : order_) {
    if (chosen.size() >= parts_max) {
      break;
    }
    const Item& item = items_.at(std::get<2>(ok));
    const std::size_t need = item.message.size() + per_item_bytes;
    if (used + need > budget_bytes) {
      continue;  // A smaller one further on may still fit.
    }
    used += need;
    chosen.push_back(std::get<2>(ok));
  }
  for (const Key& key : chosen) {
    auto it = items_.find(key);
    SHOAL_ASSERT(it != items_.end());
    order_.erase(order_key(key, it->second));
    ++it->second.transmits;
    if (it->second.transmits >= limit) {
      out.push_back(std::move(it->second.message));
      items_.erase(it);
    } else {
      out.push_back(it->second.message);
      order_.insert(order_key(key, it->second));
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
  return std::get<0>(*order_.begin());
}

}  // namespace shoal::gossip
