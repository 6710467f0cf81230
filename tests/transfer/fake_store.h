#pragma once
// tests/transfer/fake_store.h: an in-memory chunk store implementing both
// ends of the chunk-sync store interfaces, for transfer tests.

#include <algorithm>
#include <map>
#include <set>
#include <vector>

#include "base/crypto.h"
#include "transfer/chunk_sync.h"

namespace shoal::transfer::test_support {

// A chunk store in memory. Chunk id = BLAKE2b-256 of the stored bytes.
// Manifests are 'M' followed by (kind, id) pairs; data chunks start with 'D'.
class FakeStore final : public SyncSource, public SyncSink {
 public:
  ChunkId Add(const Bytes& bytes) {
    const ChunkId id = blake2b_256(bytes);
    chunks[id] = bytes;
    return id;
  }
  ChunkId AddData(std::size_t size, std::uint8_t fill) {
    Bytes b(size + 1, fill);
    b[0] = 'D';
    return Add(b);
  }
  ChunkId AddManifest(const std::vector<ChunkRef>& refs) {
    Bytes b = {'M'};
    for (const ChunkRef& r : refs) {
      b.push_back(static_cast<std::uint8_t>(r.kind));
      b.insert(b.end(), r.id.begin(), r.id.end());
    }
    return Add(b);
  }
  // Every chunk reachable from root, root included.
  std::set<ChunkId> Closure(const ChunkId& root) const {
    std::set<ChunkId> out;
    std::vector<ChunkId> stack = {root};
    while (!stack.empty()) {
      const ChunkId id = stack.back();
      stack.pop_back();
      if (!out.insert(id).second) {
        continue;
      }
      const Bytes& b = chunks.at(id);
      if (b[0] == 'M') {
        for (const ChunkRef& r : Parse(b)) {
          stack.push_back(r.id);
        }
      }
    }
    return out;
  }

  // SyncSource and SyncSink.
  Result<Bytes> read(const ChunkId& id) override {
    ++reads;
    auto it = chunks.find(id);
    if (it == chunks.end()) {
      return make_error(Code::kNotFound, "no such chunk");
    }
    return it->second;
  }
  Result<bool> has_snapshot(const ChunkId& snapshot) override { return committed.contains(snapshot); }
  Result<std::vector<ChunkId>> missing(std::span<const ChunkId> ids) override {
    std::vector<ChunkId> out;
    std::set<ChunkId> seen;
    for (const ChunkId& id : ids) {
      if (!chunks.contains(id) && seen.insert(id).second) {
        out.push_back(id);
      }
    }
    return out;
  }
  Status put(const ChunkId& id, ByteView bytes) override {
    if (blake2b_256(bytes) != id) {
      ++refused;
      return make_error(Code::kCorruption, "bytes do not hash to the id");
    }
    ++puts;
    chunks[id] = Bytes(bytes.begin(), bytes.end());
    return ok_status();
  }
  Result<std::vector<ChunkRef>> references(const ChunkId& manifest, ByteView bytes) override {
    (void)manifest;
    if (bytes.empty() || bytes[0] != 'M' || (bytes.size() - 1) % 33 != 0) {
      return make_error(Code::kCorruption, "not a manifest");
    }
    return Parse(bytes);
  }
  Status commit(const ChunkId& snapshot) override {
    ++commit_calls;
    for (const ChunkId& id : ClosureIfPresent(snapshot)) {
      if (!chunks.contains(id)) {
        return make_error(Code::kFailedPrecondition, "commit with a chunk missing");
      }
    }
    committed.insert(snapshot);
    return ok_status();
  }

  std::map<ChunkId, Bytes> chunks;
  std::set<ChunkId> committed;
  int reads = 0;
  int puts = 0;
  int refused = 0;
  int commit_calls = 0;

 private:
  static std::vector<ChunkRef> Parse(ByteView b) {
    std::vector<ChunkRef> refs;
    for (std::size_t at = 1; at + 33 <= b.size(); at += 33) {
      ChunkRef r;
      r.kind = static_cast<ChunkKind>(b[at]);
      std::copy(b.begin() + static_cast<std::ptrdiff_t>(at + 1), b.begin() + static_cast<std::ptrdiff_t>(at + 33),
                r.id.begin());
      refs.push_back(r);
    }
    return refs;
  }
  // Like Closure, but stops at what is absent (it cannot be read).
  std::set<ChunkId> ClosureIfPresent(const ChunkId& root) const {
    std::set<ChunkId> out;
    std::vector<ChunkId> stack = {root};
    while (!stack.empty()) {
      const ChunkId id = stack.back();
      stack.pop_back();
      if (!out.insert(id).second) {
        continue;
      }
      auto it = chunks.find(id);
      if (it != chunks.end() && it->second[0] == 'M') {
        for (const ChunkRef& r : Parse(it->second)) {
          stack.push_back(r.id);
        }
      }
    }
    return out;
  }
};

}  // namespace shoal::transfer::test_support
