#include "storage/pack_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/assert.h"
#include "storage/snapshot_internal.h"

namespace shoal::storage {
namespace {

using internal::from_errno;
using internal::write_all_at;

constexpr std::size_t kWriteBufferBytes = 1u << 20;
// Above this many cached descriptors the cache starts over (readers holding
// one keep it alive until their read is done).
constexpr std::size_t kReaderFdsMax = 256;

void put_le(std::uint8_t* out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) {
    out[i] = static_cast<std::uint8_t>(v >> (8 * i));
  }
}
std::uint64_t get_le(const std::uint8_t* in, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v |= static_cast<std::uint64_t>(in[i]) << (8 * i);
  }
  return v;
}


Status sync_fd(int fd, const std::string& what) {
  if (::fdatasync(fd) != 0) {
    return std::unexpected(from_errno(errno, "sync " + what));
  }
  return {};
}

std::string pack_name(std::uint64_t pack) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i) {
    out[static_cast<std::size_t>(i)] = kHex[pack & 15];
    pack >>= 4;
  }
  return out + ".pack";
}

}  // namespace

Bytes encode_location(const ChunkLocation& loc) {
  Bytes out(kLocationBytes);
  put_le(out.data(), loc.pack, 8);
  put_le(out.data() + 8, loc.offset, 4);
  put_le(out.data() + 12, loc.length, 4);
  put_le(out.data() + 16, loc.plain, 4);
  return out;
}

std::optional<ChunkLocation> decode_location(ByteView value) {
  if (value.size() != kLocationBytes) {
    return std::nullopt;
  }
  return ChunkLocation{.pack = get_le(value.data(), 8),
                       .offset = static_cast<std::uint32_t>(get_le(value.data() + 8, 4)),
                       .length = static_cast<std::uint32_t>(get_le(value.data() + 12, 4)),
                       .plain = static_cast<std::uint32_t>(get_le(value.data() + 16, 4))};
}

std::string packs_dir(const std::string& store_dir) { return store_dir + "/packs"; }

std::string pack_path(const std::string& store_dir, std::uint64_t pack) {
  return packs_dir(store_dir) + "/" + pack_name(pack);
}

std::optional<std::uint64_t> parse_pack_name(std::string_view name) {
  if (name.size() != 21 || !name.ends_with(".pack")) {
    return std::nullopt;
  }
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 16; ++i) {
    const char c = name[i];
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) {
      return std::nullopt;
    }
    v = (v << 4) | static_cast<std::uint64_t>(d);
  }
  return v;
}

PackWriter::~PackWriter() {
  for (int fd : rolled_) {
    ::close(fd);
  }
  if (fd_ >= 0) {
    ::close(fd_);  // Also releases the flock.
  }
}

Status PackWriter::open_new_pack() {
  const std::string dir = packs_dir(dir_);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return std::unexpected(from_errno(errno, "create " + dir));
  }
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::uint64_t id = 0;
    if (::getrandom(&id, sizeof id, 0) != sizeof id) {
      return std::unexpected(from_errno(errno, "getrandom"));
    }
    if (id == 0) {
      continue;
    }
    const std::string path = pack_path(dir_, id);
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
      continue;
    }
    if (fd < 0) {
      return std::unexpected(from_errno(errno, "create pack " + path));
    }
    // Held while this writer may append; gc leaves locked packs alone.
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd);
      return std::unexpected(from_errno(err, "lock new pack " + path));
    }
    if (fd_ >= 0) {
      rolled_.push_back(fd_);  // Synced (then closed) by the next sync().
    }
    fd_ = fd;
    pack_ = id;
    size_ = 0;
    buffer_.assign(kPackMagic.begin(), kPackMagic.end());
    size_ = buffer_.size();
    new_file_ = true;
    return {};
  }
  return make_error(Code::kInternal, "could not find an unused pack name in " + dir);
}

Status PackWriter::flush_buffer() {
  if (buffer_.empty()) {
    return {};
  }
  auto s = write_all_at(fd_, buffer_.data(), buffer_.size(), size_ - buffer_.size(), pack_path(dir_, pack_));
  buffer_.clear();
  return s;
}

Result<ChunkLocation> PackWriter::append(ByteView stored, std::uint32_t plain) {
  if (failed_) {
    return std::unexpected(*failed_);
  }
  if (fd_ < 0 || size_ >= kPackBytesTarget) {
    if (fd_ >= 0) {
      if (auto s = flush_buffer(); !s) {
        failed_ = s.error();
        return std::unexpected(s.error());
      }
    }
    if (auto s = open_new_pack(); !s) {
      failed_ = s.error();
      return std::unexpected(s.error());
    }
  }
  SHOAL_ASSERT(size_ + stored.size() <= UINT32_MAX);  // target 64 MiB + one chunk of at most 256 MiB.
  const ChunkLocation loc{.pack = pack_, .offset = static_cast<std::uint32_t>(size_),
                          .length = static_cast<std::uint32_t>(stored.size()), .plain = plain};
  if (buffer_.size() + stored.size() > kWriteBufferBytes) {
    if (auto s = flush_buffer(); !s) {
      failed_ = s.error();
      return std::unexpected(s.error());
    }
  }
  if (stored.size() >= kWriteBufferBytes) {
    if (auto s = write_all_at(fd_, stored.data(), stored.size(), size_, pack_path(dir_, pack_)); !s) {
      failed_ = s.error();
      return std::unexpected(s.error());
    }
  } else {
    buffer_.insert(buffer_.end(), stored.begin(), stored.end());
  }
  size_ += stored.size();
  dirty_ = true;
  return loc;
}

Status PackWriter::sync() {
  if (failed_) {
    return std::unexpected(*failed_);
  }
  if (!dirty_) {
    return {};
  }
  auto fail = [&](Status s) {
    failed_ = s.error();
    return s;
  };
  if (auto s = flush_buffer(); !s) {
    return fail(s);
  }
  for (int fd : rolled_) {
    if (auto s = sync_fd(fd, "pack in " + packs_dir(dir_)); !s) {
      return fail(s);
    }
    ::close(fd);
  }
  rolled_.clear();
  if (auto s = sync_fd(fd_, pack_path(dir_, pack_)); !s) {
    return fail(s);
  }
  if (new_file_) {
    // The new packs' directory entries must be durable before an index entry
    // names them, or a power loss could keep the entry and lose the file.
    const std::string dir = packs_dir(dir_);
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
      return fail(std::unexpected(from_errno(errno, "open " + dir)));
    }
    const int rc = ::fsync(dfd);
    const int err = errno;
    ::close(dfd);
    if (rc != 0) {
      return fail(std::unexpected(from_errno(err, "sync " + dir)));
    }
    new_file_ = false;
  }
  dirty_ = false;
  return {};
}

PackReader::Fd::~Fd() {
  if (fd >= 0) {
    ::close(fd);
  }
}

Result<std::shared_ptr<PackReader::Fd>> PackReader::fd_of(std::uint64_t pack) {
  {
    std::lock_guard lock(mutex_);
    if (auto it = fds_.find(pack); it != fds_.end()) {
      return it->second;
    }
  }
  const std::string path = pack_path(dir_, pack);
  auto fd = std::make_shared<Fd>();
  fd->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd->fd < 0) {
    if (errno == ENOENT) {
      return make_error(Code::kCorruption, "pack file " + path + " is missing");
    }
    return std::unexpected(from_errno(errno, "open pack " + path));
  }
  std::lock_guard lock(mutex_);
  if (fds_.size() >= kReaderFdsMax) {
    fds_.clear();
  }
  return fds_.emplace(pack, std::move(fd)).first->second;
}

void PackReader::forget(std::uint64_t pack) {
  std::lock_guard lock(mutex_);
  fds_.erase(pack);
}

Result<Bytes> PackReader::read(const ChunkLocation& loc) {
  auto fd = fd_of(loc.pack);
  if (!fd) {
    return std::unexpected(fd.error());
  }
  Bytes out(loc.length);
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::pread((*fd)->fd, out.data() + done, out.size() - done, static_cast<off_t>(loc.offset + done));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return std::unexpected(from_errno(errno, "read pack " + pack_path(dir_, loc.pack)));
    }
    if (n == 0) {
      return make_error(Code::kCorruption, "pack " + pack_path(dir_, loc.pack) + " is truncated: " +
                                               std::to_string(loc.length) + " bytes at offset " +
                                               std::to_string(loc.offset) + " are not all there");
    }
    done += static_cast<std::size_t>(n);
  }
  return out;
}

namespace internal {

Status write_all_at(int fd, const std::uint8_t* p, std::size_t n, std::uint64_t offset, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) {
      continue;
    }
    if (w < 0) {
      return std::unexpected(from_errno(errno, "write " + path));
    }
    p += w;
    n -= static_cast<std::size_t>(w);
    offset += static_cast<std::uint64_t>(w);
  }
  return {};
}

}  // namespace internal
}  // namespace shoal::storage
