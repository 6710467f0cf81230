#pragma once
// gossip/member_table.h: compact storage of the member entries one node
// knows. Owns the entries, an open-addressing index by NodeId and interned
// strings (data centers, software versions, non-IPv4 hosts). Member (types.h)
// is only the public view, built on demand. Remote local_health values are
// clamped to 255 when stored.
//
// Why compact: the simulator runs 10,000 nodes that each hold 10,000 entries,
// so an entry must stay near 150 bytes (static_assert below). Slots are
// stable until compact() (reaping), which keeps relative order, so slot 0 is
// always this node. No I/O; single-threaded.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/assert.h"
#include "gossip/types.h"

namespace shoal::gossip {

// Interns short strings that many entries share. Bounded: past items_max new
// strings map to the empty string (index 0) and are counted as overflow.
class StringPool {
 public:
  explicit StringPool(std::size_t items_max);
  std::uint32_t intern(std::string_view text);  // No allocation when `text` is already interned.
  const std::string& get(std::uint32_t index) const { return strings_.at(index); }
  std::size_t size() const { return strings_.size(); }
  std::uint64_t overflow() const { return overflow_; }

 private:
  std::size_t items_max_;
  std::uint64_t overflow_ = 0;
  std::vector<std::string> strings_;
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
  };
  // Lookup only; never iterated. Transparent, so lookups take a string_view.
  std::unordered_map<std::string, std::uint32_t, Hash, std::equal_to<>> index_;
};

struct Entry {
  // Status changes are kept in 1/16 s ticks of driver time: 8.5 years of
  // uptime in 4 bytes, plenty for "since" displays and reaping.
  static constexpr std::int64_t kSinceTickUs = 62'500;

  NodeId id;
  PublicKey public_key{};
  std::uint64_t incarnation = 0;
  std::uint64_t state_seq = 0;
  std::uint64_t catalog_version = 0;
  std::uint64_t free_disk_bytes = 0;
  std::uint32_t name_at = 0;  // Offset in the table's name arena (MemberTable::name()).
  std::uint32_t status_since_ticks = 0;
  std::uint32_t load_milli = 0;
  std::uint32_t projects_hosted = 0;
  std::uint32_t host = 0;  // IPv4 address when host_is_ipv4, else a StringPool index.
  std::uint16_t port = 0;
  std::uint16_t dc = 0;       // StringPool index.
  std::uint16_t version = 0;  // StringPool index.
  std::uint8_t name_len = 0;  // Names are at most wire::kNameBytesMax (128) bytes.
  std::uint8_t local_health = 0;  // Awareness scores are small; clamped at 255.
  MemberStatus status : 2 = MemberStatus::kAlive;
  bool stalled : 1 = false;
  bool host_is_ipv4 : 1 = false;

  Instant status_since() const { return instant_from_us(static_cast<std::int64_t>(status_since_ticks) * kSinceTickUs); }
  void set_status_since(Instant t) {
    const std::int64_t ticks = std::clamp<std::int64_t>(to_us(t) / kSinceTickUs, 0, UINT32_MAX);
    status_since_ticks = static_cast<std::uint32_t>(ticks);
  }
};
// 16 id + 32 key + 4 x 8 counters + 5 x 4 + 3 x 2 + 3 x 1 = 109, padded to 112.
static_assert(sizeof(Entry) <= 112, "keep entries compact: 10,000 x 10,000 in the simulator");

// A vector of Entry in fixed chunks: growing never copies or over-allocates
// by more than one chunk (std::vector's doubling would cost up to 2x, which
// at 10,000 x 10,000 entries is the difference between fitting and not).
class EntryChunks {
 public:
  static constexpr std::size_t kChunkEntries = 256;

  Entry& operator[](std::size_t i) { return chunks_[i / kChunkEntries][i % kChunkEntries]; }
  const Entry& operator[](std::size_t i) const { return chunks_[i / kChunkEntries][i % kChunkEntries]; }
  Entry& at(std::size_t i) {
    SHOAL_ASSERT(i < size_);
    return (*this)[i];
  }
  const Entry& at(std::size_t i) const {
    SHOAL_ASSERT(i < size_);
    return (*this)[i];
  }
  std::size_t size() const { return size_; }
  Entry& back() { return (*this)[size_ - 1]; }
  void push_back(Entry entry) {
    if (size_ == chunks_.size() * kChunkEntries) {
      chunks_.push_back(std::make_unique<Entry[]>(kChunkEntries));
    }
    (*this)[size_++] = std::move(entry);
  }
  // Shrinks to n entries, freeing whole chunks past the end.
  void truncate(std::size_t n) {
    SHOAL_ASSERT(n <= size_);
    for (std::size_t i = n; i < size_; ++i) {
      (*this)[i] = Entry{};
    }
    size_ = n;
    chunks_.resize((n + kChunkEntries - 1) / kChunkEntries);
  }

 private:
  std::vector<std::unique_ptr<Entry[]>> chunks_;
  std::size_t size_ = 0;
};

class MemberTable {
 public:
  static constexpr std::uint32_t kNone = std::numeric_limits<std::uint32_t>::max();

  MemberTable();

  std::uint32_t find(const NodeId& id) const;
  // REQUIRES: find(entry.id) == kNone, name.size() <= 255. Sets entry.name_*.
  std::uint32_t insert(Entry entry, std::string_view name);
  // Room for `entries` more entries with `name_bytes` of names in all, so a
  // bulk insert (restore) grows each structure once, to size.
  void reserve(std::size_t entries, std::size_t name_bytes);
  Entry& at(std::uint32_t slot) { return entries_.at(slot); }
  const Entry& at(std::uint32_t slot) const { return entries_.at(slot); }
  std::size_t size() const { return entries_.size(); }

  // Status changes go through here so count() stays exact.
  void set_status(std::uint32_t slot, MemberStatus status, Instant now);
  std::size_t count(MemberStatus status) const { return counts_[static_cast<int>(status)]; }

  std::string_view name(const Entry& entry) const { return {names_.data() + entry.name_at, entry.name_len}; }
  // Renames the entry in `slot`; the old bytes become garbage in the arena,
  // reclaimed once garbage outweighs live names.
  void set_name(std::uint32_t slot, std::string_view name);
  std::size_t name_arena_bytes() const { return names_.size(); }

  void set_addr(Entry& entry, const Address& addr);
  Address addr(const Entry& entry) const;
  void set_dc(Entry& entry, std::string_view dc) { entry.dc = static_cast<std::uint16_t>(dcs_.intern(dc)); }
  const std::string& dc(const Entry& entry) const { return dcs_.get(entry.dc); }
  void set_health(Entry& entry, const Health& health);
  Health health(const Entry& entry) const;
  Member view(std::uint32_t slot) const;

  // Removes every entry for which remove(entry) is true, keeping order.
  // Invalidates slots. REQUIRES: never removes slot 0 (self).
  template <class Pred>
  std::size_t compact(Pred remove) {
    std::size_t kept = 0;
    std::size_t removed = 0;
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (i != 0 && remove(entries_[i])) {
        --counts_[static_cast<int>(entries_[i].status)];
        ++removed;
        continue;
      }
      if (kept != i) {
        entries_[kept] = std::move(entries_[i]);
      }
      ++kept;
    }
    if (removed == 0) {
      return 0;  // Nothing moved: the index and the name arena still hold.
    }
    entries_.truncate(kept);
    rebuild_index();
    rebuild_names();
    return removed;
  }

 private:
  static constexpr std::size_t kPoolMax = 65535;
  std::size_t bucket_of(const NodeId& id) const;
  void rebuild_index();
  void reindex();  // Fills index_ (already sized and cleared) from entries_.
  void rebuild_names();  // Drops garbage from the name arena.
  std::uint32_t append_name(std::string_view name);

  EntryChunks entries_;
  std::string names_;            // Every entry's name, back to back (not NUL-terminated).
  std::size_t names_garbage_ = 0;  // Arena bytes no entry refers to any more.
  std::vector<std::uint32_t> index_;  // Open addressing, linear probing; kNone = empty.
  std::size_t counts_[4] = {0, 0, 0, 0};
  StringPool dcs_{kPoolMax};
  StringPool versions_{kPoolMax};
  StringPool hosts_{std::numeric_limits<std::uint32_t>::max() - 1};
};

}  // namespace shoal::gossip
