#include "storage/snapshot_internal.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/assert.h"

namespace shoal::storage::internal {

Error from_errno(int err, const std::string& what) {
  Code code = Code::kIOError;
  switch (err) {
    case ENOENT: code = Code::kNotFound; break;
    case EEXIST: code = Code::kAlreadyExists; break;
    case EACCES:
    case EPERM:
    case EROFS: code = Code::kPermissionDenied; break;
    case ENOSPC:
    case EDQUOT:
    case EMFILE:
    case ENFILE: code = Code::kResourceExhausted; break;
    case EAGAIN: code = Code::kUnavailable; break;
    default: break;
  }
  return Error{code, what + ": " + std::strerror(err)};
}

Bytes project_prefix(const std::string& project) {
  Bytes out(project.begin(), project.end());
  out.push_back(0);
  return out;
}

Bytes catalog_key(const std::string& project, std::int64_t time_ns, const ChunkId& id) {
  Bytes out = project_prefix(project);
  // Big-endian with the sign bit flipped: byte order equals time order.
  const std::uint64_t t = static_cast<std::uint64_t>(time_ns) ^ (std::uint64_t{1} << 63);
  for (int i = 7; i >= 0; --i) {
    out.push_back(static_cast<std::uint8_t>(t >> (8 * i)));
  }
  out.insert(out.end(), id.begin(), id.end());
  return out;
}

std::optional<CatalogKey> parse_catalog_key(ByteView key) {
  const auto* nul = static_cast<const std::uint8_t*>(std::memchr(key.data(), 0, key.size()));
  if (nul == nullptr) {
    return std::nullopt;
  }
  const std::size_t plen = static_cast<std::size_t>(nul - key.data());
  if (key.size() != plen + 1 + 8 + kHashBytes) {
    return std::nullopt;
  }
  CatalogKey out;
  out.project.assign(reinterpret_cast<const char*>(key.data()), plen);
  std::uint64_t t = 0;
  for (int i = 0; i < 8; ++i) {
    t = (t << 8) | key[plen + 1 + i];
  }
  out.time_ns = static_cast<std::int64_t>(t ^ (std::uint64_t{1} << 63));
  std::memcpy(out.id.data(), key.data() + plen + 9, kHashBytes);
  return out;
}

Result<Commit> load_commit(Txn& txn, ChunkStore& chunks, const ChunkId& id) {
  auto plain = chunks.get(txn, id);
  if (!plain) {
    return std::unexpected(plain.error());
  }
  return decode_commit(*plain);
}

Result<std::vector<TreeEntry>> load_tree(Txn& txn, ChunkStore& chunks, const ChunkId& id) {
  auto plain = chunks.get(txn, id);
  if (!plain) {
    return std::unexpected(plain.error());
  }
  return decode_tree(*plain);
}

std::string join_path(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

Status walk_tree(Txn& txn, ChunkStore& chunks, const ChunkId& root, const WalkVisitor& visitor) {
  std::vector<std::pair<std::string, ChunkId>> stack{{std::string(), root}};
  while (!stack.empty()) {
    auto [dir, tree_id] = std::move(stack.back());
    stack.pop_back();
    if (visitor.enter_tree && !visitor.enter_tree(dir, tree_id)) {
      continue;
    }
    auto tree = load_tree(txn, chunks, tree_id);
    if (!tree) {
      if (!visitor.tree_error) {
        return std::unexpected(Error{tree.error().code, "directory '" + dir + "': " + tree.error().message});
      }
      visitor.tree_error(dir, tree_id, tree.error());
      continue;
    }
    const std::size_t first_child = stack.size();
    for (const auto& e : *tree) {
      std::string path = join_path(dir, e.name);
      if (visitor.entry) {
        visitor.entry(path, e);
      }
      if (e.kind == EntryKind::kDir) {
        stack.emplace_back(std::move(path), e.tree);
      }
    }
    std::reverse(stack.begin() + static_cast<std::ptrdiff_t>(first_child), stack.end());  // Visit in name order.
  }
  return {};
}

Status mark_reachable(Txn& txn, ChunkStore& chunks, const ChunkId& snapshot_id, ChunkIdSet& out) {
  auto commit = load_commit(txn, chunks, snapshot_id);
  if (!commit) {
    return std::unexpected(Error{commit.error().code, "snapshot " + to_hex(snapshot_id).substr(0, 12) + ": " + commit.error().message});
  }
  out.insert(snapshot_id);
  WalkVisitor v;
  v.enter_tree = [&](const std::string&, const ChunkId& tree) { return out.insert(tree).second; };
  v.entry = [&](const std::string&, const TreeEntry& e) {
    if (e.kind == EntryKind::kFile) {
      out.insert(e.chunks.begin(), e.chunks.end());
    }
  };
  return walk_tree(txn, chunks, commit->tree, v);
}

Result<int> lock_file(const std::string& store_dir, const std::string& name, bool exclusive, bool blocking) {
  const std::string dir = store_dir + "/locks";
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return std::unexpected(from_errno(errno, "create " + dir));
  }
  const std::string path = dir + "/" + name;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return std::unexpected(from_errno(errno, "open lock file " + path));
  }
  const int op = (exclusive ? LOCK_EX : LOCK_SH) | (blocking ? 0 : LOCK_NB);
  int rc = 0;
  do {
    rc = ::flock(fd, op);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return make_error(Code::kUnavailable, "lock " + path + " is held");
    }
    return std::unexpected(from_errno(err, "lock " + path));
  }
  return fd;
}

void unlock_file(int fd) {
  if (fd >= 0) {
    ::close(fd);  // Closing the last descriptor releases the flock.
  }
}

}  // namespace shoal::storage::internal
