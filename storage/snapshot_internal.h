#pragma once
// storage/snapshot_internal.h: helpers shared by the snapshot_*.cc files
// (key encodings, errno conversion, locks, tree walking). Not a public API.

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "storage/chunk_store.h"
#include "storage/lmdb.h"
#include "storage/manifest.h"

namespace shoal::storage::internal {

// Converts an errno value at the OS boundary, in one place.
Error from_errno(int err, const std::string& what);
// Writes all n bytes at `offset` (pwrite, retried on EINTR and short writes).
Status write_all_at(int fd, const std::uint8_t* p, std::size_t n, std::uint64_t offset, const std::string& path);

Bytes project_prefix(const std::string& project);  // project + '\0'
Bytes catalog_key(const std::string& project, std::int64_t time_ns, const ChunkId& id);
struct CatalogKey {
  std::string project;
  std::int64_t time_ns = 0;
  ChunkId id{};
};
std::optional<CatalogKey> parse_catalog_key(ByteView key);

Result<Commit> load_commit(Txn& txn, ChunkStore& chunks, const ChunkId& id);
Result<std::vector<TreeEntry>> load_tree(Txn& txn, ChunkStore& chunks, const ChunkId& id);

// Depth-first walk of a tree, directories before their contents, entries in
// name order. Paths are relative, '/'-separated, directories without a
// trailing slash. Iterative: deep trees do not grow the C++ stack.
struct WalkVisitor {
  // Before a tree is loaded; return false to skip it (e.g. already seen).
  std::function<bool(const std::string& dir_path, const ChunkId& tree)> enter_tree;
  std::function<void(const std::string& path, const TreeEntry& entry)> entry;
  // A tree that cannot be loaded. Without this callback the walk fails instead.
  std::function<void(const std::string& dir_path, const ChunkId& tree, const Error& error)> tree_error;
};
Status walk_tree(Txn& txn, ChunkStore& chunks, const ChunkId& root, const WalkVisitor& visitor);

// Every chunk reachable from a snapshot (commit, trees, file chunks) into `out`.
// Trees already in `out` are not descended again. Fails on an unreadable manifest.
Status mark_reachable(Txn& txn, ChunkStore& chunks, const ChunkId& snapshot_id, ChunkIdSet& out);

std::string join_path(const std::string& dir, const std::string& name);

// Pack files of a store (pack_gc.cc).
struct PackFileInfo {
  std::uint64_t id = 0;
  std::uint64_t size = 0;       // Apparent size.
  std::uint64_t allocated = 0;  // Disk blocks (holes punched over garbage do not count).
};
Result<std::vector<PackFileInfo>> list_packs(const std::string& store_dir);

struct CompactReport {
  std::uint64_t packs_deleted = 0;    // Held no indexed chunk.
  std::uint64_t packs_rewritten = 0;  // Mostly garbage: live chunks copied to a new pack.
  std::uint64_t bytes_copied = 0;
  std::uint64_t bytes_reclaimed = 0;  // Disk space given back (deleted, rewritten, holes punched).
};
// Reclaims the space of pack bytes the committed index does not point at.
// REQUIRES: the gc lock held exclusively (no save or transfer is writing).
// Packs locked by a writer anyway are left alone.
Result<CompactReport> compact_packs(Env& env, ChunkStore& chunks, const std::function<void(std::string_view)>& fault_point);

// flock(2) helpers over DIR/locks/NAME. Returns the fd holding the lock.
// Unavailable if `blocking` is false and another holder has it.
Result<int> lock_file(const std::string& store_dir, const std::string& name, bool exclusive, bool blocking);
void unlock_file(int fd);

}  // namespace shoal::storage::internal
