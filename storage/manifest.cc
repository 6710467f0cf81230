#include "storage/manifest.h"

#include "base/assert.h"
#include "base/codec.h"

namespace shoal::storage {
namespace {

constexpr std::uint64_t kTreeFormat = 1;
constexpr std::uint64_t kCommitFormat = 1;
constexpr std::size_t kProjectBytesMax = 256;

DecodeLimits manifest_limits() {
  return DecodeLimits{.input_bytes_max = kStoredChunkPlainMax,
                      .array_items_max = kTreeEntriesMax,
                      .map_items_max = 0,
                      .str_bytes_max = kProjectBytesMax,
                      .bin_bytes_max = kNameBytesMax,
                      .depth_max = 5};
}

Error corrupt(const char* what, const Error& e) { return Error{Code::kCorruption, std::string(what) + ": " + e.message}; }

}  // namespace

Bytes encode_tree(const std::vector<TreeEntry>& entries) {
  Encoder enc;
  enc.array(2).u64(kTreeFormat).array(static_cast<std::uint32_t>(entries.size()));
  const TreeEntry* previous = nullptr;
  for (const auto& e : entries) {
    SHOAL_ASSERT(previous == nullptr || previous->name < e.name);  // Sorted and unique: ids are canonical.
    previous = &e;
    enc.array(6).bin(as_bytes(e.name)).u64(static_cast<std::uint64_t>(e.kind)).u64(e.mode).i64(e.mtime_ns).u64(e.size);
    switch (e.kind) {
      case EntryKind::kFile:
        enc.array(static_cast<std::uint32_t>(e.chunks.size()));
        for (const auto& id : e.chunks) {
          enc.bin(id);
        }
        break;
      case EntryKind::kDir: enc.bin(e.tree); break;
      case EntryKind::kSymlink: enc.bin(as_bytes(e.target)); break;
    }
  }
  return enc.take();
}

Result<std::vector<TreeEntry>> decode_tree(ByteView plaintext) {
  auto decoded = Decoded::parse(plaintext, manifest_limits());
  if (!decoded) {
    return std::unexpected(corrupt("tree manifest", decoded.error()));
  }
  Reader root = decoded->root(2);
  const std::uint64_t format = root.u64();
  Reader list = root.array(kTreeEntriesMax);
  root.expect_end();
  std::vector<TreeEntry> entries;
  if (root.ok()) {
    if (format != kTreeFormat) {
      return make_error(Code::kCorruption, "tree manifest: unknown format " + std::to_string(format));
    }
    entries.reserve(list.size());
  }
  while (root.ok() && !list.at_end()) {
    Reader item = list.array(6);
    TreeEntry e;
    const Bytes name = item.bin(kNameBytesMax);
    e.name.assign(name.begin(), name.end());
    const std::uint64_t kind = item.u64_max(3);
    e.kind = static_cast<EntryKind>(kind);
    e.mode = static_cast<std::uint32_t>(item.u64_max(07777));
    e.mtime_ns = item.i64();
    e.size = item.u64();
    if (kind == static_cast<std::uint64_t>(EntryKind::kFile)) {
      Reader chunks = item.array(kFileChunksMax);
      e.chunks.resize(chunks.size());
      for (auto& id : e.chunks) {
        chunks.bin_exact(id);
      }
    } else if (kind == static_cast<std::uint64_t>(EntryKind::kDir)) {
      item.bin_exact(e.tree);
    } else if (kind == static_cast<std::uint64_t>(EntryKind::kSymlink)) {
      const Bytes target = item.bin(kSymlinkTargetBytesMax);
      e.target.assign(target.begin(), target.end());
    } else {
      return make_error(Code::kCorruption, "tree manifest: unknown entry kind " + std::to_string(kind));
    }
    item.expect_end();
    if (!root.ok()) {
      break;
    }
    if (e.name.empty() || e.name == "." || e.name == ".." || e.name.find('/') != std::string::npos ||
        e.name.find('\0') != std::string::npos) {
      return make_error(Code::kCorruption, "tree manifest: invalid entry name");
    }
    if (!entries.empty() && !(entries.back().name < e.name)) {
      return make_error(Code::kCorruption, "tree manifest: entries not sorted");
    }
    entries.push_back(std::move(e));
  }
  if (!root.ok()) {
    return std::unexpected(corrupt("tree manifest", root.error()));
  }
  return entries;
}

Bytes encode_commit(const Commit& c) {
  SHOAL_ASSERT(c.project.size() <= kProjectBytesMax);
  Encoder enc;
  enc.array(12).u64(kCommitFormat).str(c.project).i64(c.time_ns);
  if (c.parent) {
    enc.bin(*c.parent);
  } else {
    enc.nil();
  }
  enc.bin(c.tree).u64(c.epoch).u64(c.files).u64(c.dirs).u64(c.symlinks).u64(c.logical_bytes).u64(c.new_bytes);
  enc.u64(0);  // Reserved (flags); keeps the array length stable for a later field.
  return enc.take();
}

Result<Commit> decode_commit(ByteView plaintext) {
  auto decoded = Decoded::parse(plaintext, manifest_limits());
  if (!decoded) {
    return std::unexpected(corrupt("snapshot commit", decoded.error()));
  }
  Reader r = decoded->root(12);
  Commit c;
  const std::uint64_t format = r.u64();
  c.project = r.str(kProjectBytesMax);
  c.time_ns = r.i64();
  if (r.is_nil()) {
    r.skip();
  } else {
    c.parent.emplace();
    r.bin_exact(*c.parent);
  }
  r.bin_exact(c.tree);
  c.epoch = r.u64();
  c.files = r.u64();
  c.dirs = r.u64();
  c.symlinks = r.u64();
  c.logical_bytes = r.u64();
  c.new_bytes = r.u64();
  r.u64();
  r.expect_end();
  if (!r.ok()) {
    return std::unexpected(corrupt("snapshot commit", r.error()));
  }
  if (format != kCommitFormat) {
    return make_error(Code::kCorruption, "snapshot commit: unknown format " + std::to_string(format));
  }
  return c;
}

}  // namespace shoal::storage
