#include "gossip/member_table.h"

#include <cstring>

#include "base/assert.h"

namespace shoal::gossip {

StringPool::StringPool(std::size_t items_max) : items_max_(items_max) {
  SHOAL_ASSERT(items_max >= 1);
  strings_.emplace_back();
  index_.emplace(std::string(), 0);
}

std::uint32_t StringPool::intern(std::string_view text) {
  if (auto it = index_.find(text); it != index_.end()) {
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

std::uint32_t MemberTable::append_name(std::string_view name) {
  SHOAL_ASSERT(name.size() <= std::numeric_limits<std::uint8_t>::max());
  SHOAL_ASSERT(names_.size() + name.size() <= std::numeric_limits<std::uint32_t>::max());
  const auto at = static_cast<std::uint32_t>(names_.size());
  names_.append(name);
  return at;
}

void MemberTable::reserve(std::size_t entries, std::size_t name_bytes) {
  names_.reserve(names_.size() + name_bytes);
  const std::size_t total = entries_.size() + entries;
  if (total * 4 > index_.size() * 3) {
    std::size_t buckets = index_.size();
    while (total * 4 > buckets * 3) {
      buckets *= 2;
    }
    index_.assign(buckets, kNone);
    reindex();
  }
}

std::uint32_t MemberTable::insert(Entry entry, std::string_view name) {
  SHOAL_ASSERT(find(entry.id) == kNone);
  SHOAL_ASSERT(entries_.size() < kNone - 1);
  entry.name_at = append_name(name);
  entry.name_len = static_cast<std::uint8_t>(name.size());
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
  reindex();
}

void MemberTable::reindex() {
  for (std::uint32_t slot = 0; slot < entries_.size(); ++slot) {
    std::size_t b = bucket_of(entries_[slot].id);
    while (index_[b] != kNone) {
      b = (b + 1) & (index_.size() - 1);
    }
    index_[b] = slot;
  }
}

void MemberTable::set_name(std::uint32_t slot, std::string_view name) {
  Entry& e = entries_.at(slot);
  if (this->name(e) == name) {
    return;
  }
  names_garbage_ += e.name_len;
  e.name_at = append_name(name);
  e.name_len = static_cast<std::uint8_t>(name.size());
  if (names_garbage_ > 4096 && names_garbage_ * 2 > names_.size()) {
    rebuild_names();
  }
}

void MemberTable::rebuild_names() {
  std::string live;
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    bytes += entries_[i].name_len;
  }
  live.reserve(bytes);
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    Entry& e = entries_[i];
    const auto at = static_cast<std::uint32_t>(live.size());
    live.append(names_, e.name_at, e.name_len);
    e.name_at = at;
  }
  names_ = std::move(live);
  names_garbage_ = 0;
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

namespace {

// The address of a canonical dotted quad ("10.0.0.1": four decimal parts
// 0-255, no leading zeros, what inet_ntop writes), in network byte order.
// Anything else is not stored as IPv4, so the view gives back the same text.
bool parse_canonical_ipv4(std::string_view text, std::uint32_t& out) {
  std::uint8_t octets[4] = {};
  std::size_t pos = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (pos >= text.size() || text[pos] != '.') {
        return false;
      }
      ++pos;
    }
    const std::size_t start = pos;
    unsigned value = 0;
    while (pos < text.size() && pos - start < 3 && text[pos] >= '0' && text[pos] <= '9') {
      value = value * 10 + static_cast<unsigned>(text[pos] - '0');
      ++pos;
    }
    const std::size_t digits = pos - start;
    if (digits == 0 || value > 255 || (digits > 1 && text[start] == '0')) {
      return false;
    }
    octets[part] = static_cast<std::uint8_t>(value);
  }
  if (pos != text.size()) {
    return false;
  }
  std::memcpy(&out, octets, sizeof out);
  return true;
}

}  // namespace

void MemberTable::set_addr(Entry& entry, const Address& addr) {
  entry.port = addr.port;
  std::uint32_t v4 = 0;
  if (parse_canonical_ipv4(addr.host, v4)) {
    entry.host_is_ipv4 = true;
    entry.host = v4;
    return;
  }
  entry.host_is_ipv4 = false;
  entry.host = hosts_.intern(addr.host);
}

Address MemberTable::addr(const Entry& entry) const {
  Address out;
  out.port = entry.port;
  if (entry.host_is_ipv4) {
    std::uint8_t octets[4];
    std::memcpy(octets, &entry.host, sizeof octets);
    char text[16];
    std::size_t n = 0;
    for (int part = 0; part < 4; ++part) {
      if (part > 0) {
        text[n++] = '.';
      }
      const unsigned v = octets[part];
      if (v >= 100) {
        text[n++] = static_cast<char>('0' + v / 100);
      }
      if (v >= 10) {
        text[n++] = static_cast<char>('0' + v / 10 % 10);
      }
      text[n++] = static_cast<char>('0' + v % 10);
    }
    out.host.assign(text, n);
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
  m.name = name(e);
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
