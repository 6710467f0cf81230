#pragma once
// storage/manifest.h: the two object formats of a snapshot's Merkle DAG, both
// stored as ordinary chunks (chunk_store.h) and encoded with base/codec.h:
//  - a Tree lists one directory: entries sorted by name (bytes), each a file
//    (its chunk ids in order), a directory (the id of its Tree) or a symlink
//    (its target), with mode bits, mtime (ns) and size;
//  - a Commit is a snapshot: project, time, parent, root tree, epoch and
//    counters. The snapshot id is the chunk id of its Commit, so two nodes
//    hold the same snapshot exactly when the ids match.
// Pure functions; thread-safe. Decoders are strict and bounded: a damaged
// manifest is Corruption, never a crash.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/result.h"
#include "storage/chunk_store.h"

namespace shoal::storage {

enum class EntryKind : std::uint8_t { kFile = 1, kDir = 2, kSymlink = 3 };

inline constexpr std::size_t kNameBytesMax = 4096;         // Linux NAME_MAX is 255; leave room.
inline constexpr std::size_t kSymlinkTargetBytesMax = 4096;  // PATH_MAX.
inline constexpr std::size_t kTreeEntriesMax = 1u << 22;    // Entries per directory.
inline constexpr std::size_t kFileChunksMax = 1u << 22;     // 4M chunks: 64 TiB at the 16 KiB minimum.

struct TreeEntry {
  std::string name;  // Raw bytes: may hold newlines or invalid UTF-8; never '/' or NUL.
  EntryKind kind = EntryKind::kFile;
  std::uint32_t mode = 0;     // Permission bits incl. setuid/setgid/sticky (07777).
  std::int64_t mtime_ns = 0;  // Nanoseconds since the Unix epoch.
  std::uint64_t size = 0;     // File: bytes. Dir and symlink: 0.
  std::vector<ChunkId> chunks;  // kFile: content in order.
  ChunkId tree{};               // kDir: the child Tree.
  std::string target;           // kSymlink.

  bool operator==(const TreeEntry&) const = default;
};

// REQUIRES: entries sorted by name, names unique.
Bytes encode_tree(const std::vector<TreeEntry>& entries);
Result<std::vector<TreeEntry>> decode_tree(ByteView plaintext);

struct Commit {
  std::string project;
  std::int64_t time_ns = 0;  // Wall-clock time of the save (Unix epoch, ns).
  std::optional<ChunkId> parent;
  ChunkId tree{};
  std::uint64_t epoch = 0;  // Placement epoch of the writer (fencing, node/core).
  std::uint64_t files = 0;
  std::uint64_t dirs = 0;
  std::uint64_t symlinks = 0;
  std::uint64_t logical_bytes = 0;  // Sum of file sizes.
  std::uint64_t new_bytes = 0;      // Stored bytes this save added on the node that made it.

  bool operator==(const Commit&) const = default;
};

Bytes encode_commit(const Commit& commit);
Result<Commit> decode_commit(ByteView plaintext);

}  // namespace shoal::storage
