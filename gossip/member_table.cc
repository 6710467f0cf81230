#include "gossip/member_table.h"

#include <arpa/inet.h>

#include <cstring>

#include "base/assert.h"

namespace shoal::gossip {

StringPool::StringPool(std::size_t items_max) : items_max_(items_max) {
  SHOAL_ASSERT(items_max >= 1);
  strings_.emplace_back();
  index_.emplace(std::string(), 0);
}

std::uint32_t StringPool::intern(std::string_view text) {
  if (auto it = index_.find(std::string(text)); it != index_.end()) {
    return it->second;
  }
  if (strings_.size() >= items_max_) {
    ++overflow_;
    return 0;
  }
  const auto index = static_cast<std::uint32_t>(strings_.size());
  strings_.emplace_back(text);
  index_.emplace(std::string(text), index);
  return index;
}

MemberTable::MemberTable() { index_.assign(16, kNone); }

std::size_t MemberTable::bucket_of(const NodeId& id) const {
  // Node ids are BLAKE2b output: any 8 bytes are uniformly distributed.
  std::uint64_t h = 0;
  std::memcpy(&h, id.bytes.data(), sizeof h);
  return static_cast<std::size_t>(h) & (index_.size() - 1);
}

std::uint32_t MemberTable::find(const NodeId& id) const {
  for (std::size_t b = bucket_of(id);; b = (b + 1) & (index_.size() - 1)) {
    const std::uint32_t slot = index_[b];
    if (slot == kNone) {
      return kNone;
    }
    if (entries_[slot].id == id) {
      return slot;
    }
  }
}

std::uint32_t MemberTable::insert(Entry entry) {
  SHOAL_ASSERT(find(entry.id) == kNone);
  SHOAL_ASSERT(entries_.size() < kNone - 1);
  const auto slot = static_cast<std::uint32_t>(entries_.size());
  ++counts_[static_cast<int>(entry.status)];
  entries_.push_back(std::move(entry));
  if (entries_.size() * 4 > index_.size() * 3) {
    rebuild_index();  // Keeps the load factor at or below three quarters.
  } else {
    std::size_t b = bucket_of(entries_.back().id);
    while (index_[b] != kNone) {
      b = (b + 1) & (index_.size() - 1);
    }
    index_[b] = slot;
  }
  return slot;
}

void MemberTable::rebuild_index() {
  std::size_t buckets = 16;
  while (buckets < entries_.size() * 2) {  // Rebuilt at half load: room to grow.
    buckets *= 2;
  }
  index_.assign(buckets, kNone);
  for (std::uint32_t slot = 0; slot < entries_.size(); ++slot) {
    std::size_t b = bucket_of(entries_[slot].id);
    while (index_[b] != kNone) {
      b = (b + 1) & (index_.size() - 1);
    }
    index_[b] = slot;
  }
}

void MemberTable::set_status(std::uint32_t slot, MemberStatus status, Instant now) {
  Entry& e = entries_.at(slot);
  if (e.status == status) {
    return;
  }
  SHOAL_ASSERT(counts_[static_cast<int>(e.status)] > 0);
  --counts_[static_cast<int>(e.status)];
  ++counts_[static_cast<int>(status)];
  e.status = status;
  e.set_status_since(now);
}

void MemberTable::set_addr(Entry& entry, const Address& addr) {
  entry.port = addr.port;
  in_addr v4{};
  if (inet_pton(AF_INET, addr.host.c_str(), &v4) == 1) {
    char text[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &v4, text, sizeof text);
    if (addr.host == text) {  // Only canonical forms, so the view gives back the same text.
      entry.host_is_ipv4 = true;
      std::memcpy(&entry.host, &v4, sizeof entry.host);
      return;
    }
  }
  entry.host_is_ipv4 = false;
  entry.host = hosts_.intern(addr.host);
}

Address MemberTable::addr(const Entry& entry) const {
  Address out;
  out.port = entry.port;
  if (entry.host_is_ipv4) {
    in_addr v4{};
    std::memcpy(&v4, &entry.host, sizeof entry.host);
    char text[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &v4, text, sizeof text);
    out.host = text;
  } else {
    out.host = hosts_.get(entry.host);
  }
  return out;
}

void MemberTable::set_health(Entry& entry, const Health& health) {
  entry.load_milli = health.load_milli;
  entry.free_disk_bytes = health.free_disk_bytes;
  entry.local_health = static_cast<std::uint8_t>(std::min<std::uint32_t>(health.local_health, 0xff));
  entry.projects_hosted = health.projects_hosted;
  entry.version = static_cast<std::uint16_t>(versions_.intern(health.version));
}

Health MemberTable::health(const Entry& entry) const {
  Health h;
  h.load_milli = entry.load_milli;
  h.free_disk_bytes = entry.free_disk_bytes;
  h.local_health = entry.local_health;
  h.projects_hosted = entry.projects_hosted;
  h.version = versions_.get(entry.version);
  return h;
}

Member MemberTable::view(std::uint32_t slot) const {
  const Entry& e = entries_.at(slot);
  Member m;
  m.id = e.id;
  m.name = e.name;
  m.dc = dc(e);
  m.addr = addr(e);
  m.public_key = e.public_key;
  m.incarnation = e.incarnation;
  m.status = e.status;
  m.stalled = e.stalled;
  m.health = health(e);
  m.catalog_version = e.catalog_version;
  m.status_since = e.status_since();
  return m;
}

}  // namespace shoal::gossip
