#include "storage/file_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/crypto.h"
#include "storage/manifest.h"
#include "storage/snapshot_internal.h"

namespace shoal::storage {
namespace {

constexpr std::string_view kMagic = "shoalfc1";
constexpr std::size_t kHeaderBytes = 8 + 2 * kHashBytes;
constexpr std::size_t kBlockBodyTarget = 64u << 10;
constexpr std::size_t kBlockBodyMax = 16u << 20;  // A record with many chunk ids may exceed the target.
constexpr std::size_t kPathBytesMax = 64u << 10;

void put_varint(Bytes& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<std::uint8_t>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<std::uint8_t>(v));
}
void put_u64(Bytes& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

// Bounds-checked decoding of one block body.
struct Cursor {
  ByteView in;
  std::size_t pos = 0;
  bool ok = true;
  std::uint64_t varint() {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= in.size()) break;
      const std::uint8_t b = in[pos++];
      v |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return v;
    }
    ok = false;
    return 0;
  }
  std::uint64_t u64() {
    if (in.size() - pos < 8) {
      ok = false;
      return 0;
    }
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(in[pos + i]) << (8 * i);
    pos += 8;
    return v;
  }
  ByteView take(std::uint64_t n) {
    if (!ok || in.size() - pos < n) {
      ok = false;
      return {};
    }
    ByteView v = in.subspan(pos, n);
    pos += n;
    return v;
  }
};

Hash256 header_hash(ByteView magic_and_base) { return blake2b_256(magic_and_base); }

bool read_exact(int fd, std::uint8_t* out, std::size_t n) {
  while (n > 0) {
    const ssize_t r = ::read(fd, out, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    out += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

}  // namespace

int compare_walk_order(std::string_view a, std::string_view b) {
  const std::size_t sa = a.rfind('/');
  const std::size_t sb = b.rfind('/');
  std::string_view dir_a = sa == std::string_view::npos ? std::string_view() : a.substr(0, sa);
  std::string_view dir_b = sb == std::string_view::npos ? std::string_view() : b.substr(0, sb);
  if (dir_a == dir_b) {
    const int c = a.substr(sa + 1).compare(b.substr(sb + 1));  // npos + 1 == 0.
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  while (true) {
    if (dir_a.empty()) return 1;   // a's directory is an ancestor of b's: its files come after.
    if (dir_b.empty()) return -1;
    const std::size_t ia = dir_a.find('/');
    const std::size_t ib = dir_b.find('/');
    const std::string_view ca = dir_a.substr(0, ia);
    const std::string_view cb = dir_b.substr(0, ib);
    if (ca != cb) return ca < cb ? -1 : 1;
    dir_a = ia == std::string_view::npos ? std::string_view() : dir_a.substr(ia + 1);
    dir_b = ib == std::string_view::npos ? std::string_view() : dir_b.substr(ib + 1);
  }
}

std::string caches_dir(const std::string& store_dir) { return store_dir + "/caches"; }
std::string file_cache_path(const std::string& store_dir, const std::string& project) {
  return caches_dir(store_dir) + "/" + project + std::string(kCacheSuffix);
}

FileCacheReader FileCacheReader::open(const std::string& path) {
  FileCacheReader r;
  r.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (r.fd_ < 0) {
    return r;
  }
  ::posix_fadvise(r.fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::uint8_t header[kHeaderBytes];
  if (!read_exact(r.fd_, header, sizeof header) || std::memcmp(header, kMagic.data(), kMagic.size()) != 0 ||
      header_hash(ByteView(header, 8 + kHashBytes)) != [&] {
        Hash256 h{};
        std::memcpy(h.data(), header + 8 + kHashBytes, kHashBytes);
        return h;
      }()) {
    r.stop();
    return r;
  }
  ChunkId base{};
  std::memcpy(base.data(), header + 8, kHashBytes);
  r.base_ = base;
  r.next();
  return r;
}

FileCacheReader::FileCacheReader(FileCacheReader&& o) noexcept
    : fd_(o.fd_), base_(o.base_), block_(std::move(o.block_)), pos_(o.pos_), path_(std::move(o.path_)),
      stat_(o.stat_), chunks_(std::move(o.chunks_)), has_(o.has_) {
  o.fd_ = -1;
}

FileCacheReader::~FileCacheReader() {
  if (fd_ >= 0) ::close(fd_);
}

void FileCacheReader::stop() {
  has_ = false;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  block_ = Bytes();
  chunks_ = {};
}

bool FileCacheReader::next_block() {
  std::uint8_t len_bytes[4];
  if (fd_ < 0 || !read_exact(fd_, len_bytes, 4)) {
    return false;
  }
  const std::uint32_t len = static_cast<std::uint32_t>(len_bytes[0]) | static_cast<std::uint32_t>(len_bytes[1]) << 8 |
                            static_cast<std::uint32_t>(len_bytes[2]) << 16 | static_cast<std::uint32_t>(len_bytes[3]) << 24;
  if (len == 0 || len > kBlockBodyMax) {
    return false;
  }
  block_.resize(len + kHashBytes);
  if (!read_exact(fd_, block_.data(), block_.size())) {
    return false;
  }
  const Hash256 h = blake2b_256(ByteView(block_.data(), len));
  if (std::memcmp(h.data(), block_.data() + len, kHashBytes) != 0) {
    return false;
  }
  block_.resize(len);
  pos_ = 0;
  path_.clear();  // Each block starts with a whole path.
  return true;
}

bool FileCacheReader::next() {
  if (pos_ >= block_.size() && !next_block()) {
    stop();
    return false;
  }
  Cursor c{.in = ByteView(block_), .pos = pos_};
  const std::uint64_t shared = c.varint();
  const std::uint64_t suffix_len = c.varint();
  const ByteView suffix = c.take(suffix_len);
  if (!c.ok || shared > path_.size() || shared + suffix_len > kPathBytesMax) {
    stop();
    return false;
  }
  path_.resize(shared);
  path_.append(reinterpret_cast<const char*>(suffix.data()), suffix.size());
  stat_.size = c.varint();
  stat_.mtime_ns = static_cast<std::int64_t>(c.u64());
  stat_.inode = c.varint();
  stat_.ctime_ns = static_cast<std::int64_t>(c.u64());
  const std::uint64_t n = c.varint();
  const ByteView ids = c.ok && n <= kFileChunksMax ? c.take(n * kHashBytes) : ByteView();
  if (!c.ok || n > kFileChunksMax) {
    stop();
    return false;
  }
  chunks_.resize(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    std::memcpy(chunks_[i].data(), ids.data() + i * kHashBytes, kHashBytes);
  }
  pos_ = c.pos;
  has_ = true;
  return true;
}

const std::vector<ChunkId>* FileCacheReader::find(std::string_view path, const CachedStat& stat) {
  while (has_) {
    const int c = compare_walk_order(path_, path);
    if (c > 0) {
      return nullptr;
    }
    if (c == 0) {
      return stat == stat_ ? &chunks_ : nullptr;
    }
    next();
  }
  return nullptr;
}

Result<FileCacheWriter> FileCacheWriter::create(const std::string& store_dir, const std::string& project) {
  const std::string dir = caches_dir(store_dir);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return std::unexpected(internal::from_errno(errno, "create " + dir));
  }
  const std::string final_path = file_cache_path(store_dir, project);
  const std::string tmp = dir + "/" + project + std::string(kCacheTmpSuffix);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return std::unexpected(internal::from_errno(errno, "create " + tmp));
  }
  FileCacheWriter w(tmp, final_path, fd);
  const Bytes placeholder(kHeaderBytes, 0);  // commit() writes the real header.
  SHOAL_TRY_STATUS(w.write_all(placeholder));
  return w;
}

FileCacheWriter::FileCacheWriter(FileCacheWriter&& o) noexcept
    : tmp_(std::move(o.tmp_)), final_(std::move(o.final_)), fd_(o.fd_), body_(std::move(o.body_)),
      prev_(std::move(o.prev_)), committed_(o.committed_) {
  o.fd_ = -1;
  o.committed_ = true;  // The moved-from writer removes nothing.
}

FileCacheWriter::~FileCacheWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_.c_str());
}

Status FileCacheWriter::write_all(ByteView bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd_, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::unexpected(internal::from_errno(errno, "write " + tmp_));
    bytes = bytes.subspan(static_cast<std::size_t>(n));
  }
  return {};
}

Status FileCacheWriter::flush_block() {
  if (body_.empty()) {
    return {};
  }
  const auto len = static_cast<std::uint32_t>(body_.size());
  const std::uint8_t len_bytes[4] = {static_cast<std::uint8_t>(len), static_cast<std::uint8_t>(len >> 8),
                                     static_cast<std::uint8_t>(len >> 16), static_cast<std::uint8_t>(len >> 24)};
  const Hash256 h = blake2b_256(body_);
  SHOAL_TRY_STATUS(write_all(ByteView(len_bytes, 4)));
  SHOAL_TRY_STATUS(write_all(body_));
  SHOAL_TRY_STATUS(write_all(h));
  body_.clear();
  prev_.clear();
  return {};
}

Status FileCacheWriter::add(std::string_view path, const CachedStat& stat, const std::vector<ChunkId>& chunks) {
  if (path.size() > kPathBytesMax || chunks.size() > kFileChunksMax) {
    return {};  // Not cached: read again next time.
  }
  if (body_.size() >= kBlockBodyTarget || body_.size() + chunks.size() * kHashBytes + path.size() + 64 > kBlockBodyMax) {
    SHOAL_TRY_STATUS(flush_block());
  }
  std::size_t shared = 0;
  while (shared < prev_.size() && shared < path.size() && prev_[shared] == path[shared]) ++shared;
  put_varint(body_, shared);
  put_varint(body_, path.size() - shared);
  body_.insert(body_.end(), path.begin() + static_cast<std::ptrdiff_t>(shared), path.end());
  put_varint(body_, stat.size);
  put_u64(body_, static_cast<std::uint64_t>(stat.mtime_ns));
  put_varint(body_, stat.inode);
  put_u64(body_, static_cast<std::uint64_t>(stat.ctime_ns));
  put_varint(body_, chunks.size());
  for (const auto& id : chunks) body_.insert(body_.end(), id.begin(), id.end());
  prev_.assign(path);
  return {};
}

Status FileCacheWriter::commit(const ChunkId& base) {
  SHOAL_TRY_STATUS(flush_block());
  Bytes header(kMagic.begin(), kMagic.end());
  header.insert(header.end(), base.begin(), base.end());
  const Hash256 h = header_hash(header);
  header.insert(header.end(), h.begin(), h.end());
  if (::pwrite(fd_, header.data(), header.size(), 0) != static_cast<ssize_t>(header.size())) {
    return std::unexpected(internal::from_errno(errno, "write " + tmp_));
  }
  if (::fdatasync(fd_) != 0) {
    return std::unexpected(internal::from_errno(errno, "sync " + tmp_));
  }
  ::close(fd_);
  fd_ = -1;
  if (::rename(tmp_.c_str(), final_.c_str()) != 0) {
    return std::unexpected(internal::from_errno(errno, "rename " + tmp_));
  }
  committed_ = true;
  const std::string dir = final_.substr(0, final_.rfind('/'));
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return {};
}

}  // namespace shoal::storage
