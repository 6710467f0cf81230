#include "node/agent/data_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "base/assert.h"
#include "base/codec.h"
#include "node/agent/limits.h"

namespace shoal::agent {
namespace {

constexpr std::string_view kIdentityKey = "identity";
constexpr std::string_view kKeyringKey = "keyring";
constexpr std::string_view kIncarnationKey = "incarnation";
constexpr std::string_view kMembersKey = "members";
constexpr std::size_t kKeyFileBytesMax = 4096;
constexpr std::size_t kAddressTextBytesMax = 300;

std::string errno_text() { return std::strerror(errno); }

Bytes encode_u64(std::uint64_t v) {
  Encoder e;
  e.array(1).u64(v);
  return e.take();
}

}  // namespace

Result<ClusterKey> read_cluster_key_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return make_error(Code::kNotFound, "cluster key file " + path +
                                             " does not exist; create it with `shoal keygen > " + path +
                                             " && chmod 600 " + path + "`");
    }
    return make_error(Code::kIOError, "cannot stat cluster key file " + path + ": " + errno_text());
  }
  if (!S_ISREG(st.st_mode)) {
    return make_error(Code::kInvalidArgument, "cluster key file " + path + " is not a regular file");
  }
  // Like ssh with private keys: a secret others can read is no longer a secret.
  if ((st.st_mode & 077) != 0) {
    return make_error(Code::kPermissionDenied, "cluster key file " + path +
                                                   " is accessible by group or others; run `chmod 600 " + path + "`");
  }
  if (st.st_size > static_cast<off_t>(kKeyFileBytesMax)) {
    return make_error(Code::kInvalidArgument, "cluster key file " + path + " is too large to hold one key; put the " +
                                                  "output of `shoal keygen` in it");
  }
  std::ifstream in(path);
  if (!in) {
    return make_error(Code::kPermissionDenied, "cannot read cluster key file " + path + ": " + errno_text());
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  auto key = parse_cluster_key(text);
  if (!key) {
    return make_error(Code::kInvalidArgument, "cluster key file " + path + " does not hold a valid key (" +
                                                  key.error().message + "); put the output of `shoal keygen` in it");
  }
  return *key;
}

Status check_data_dir(const std::string& path) {
  if (path.empty()) {
    return make_error(Code::kInvalidArgument, "the data directory path is empty; pass --data-dir DIR");
  }
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return make_error(errno == ENOENT ? Code::kNotFound : Code::kPermissionDenied,
                      "cannot create data directory " + path + " (" + errno_text() +
                          "); make sure its parent exists and is writable, or choose another --data-dir");
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return make_error(Code::kInvalidArgument, "data directory " + path +
                                                  " exists but is not a directory; choose another --data-dir");
  }
  // access() lies for root and on read-only mounts; only a real write proves it.
  const std::string probe = path + "/.write-probe";
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return make_error(Code::kPermissionDenied, "data directory " + path + " is not writable (" + errno_text() +
                                                   "); fix its permissions or choose another --data-dir");
  }
  const char byte = 0;
  const bool wrote = ::write(fd, &byte, 1) == 1 && ::fsync(fd) == 0;
  const std::string why = errno_text();
  ::close(fd);
  ::unlink(probe.c_str());
  if (!wrote) {
    return make_error(Code::kIOError, "data directory " + path + " is not writable (" + why +
                                          "); check the disk (full? read-only?) or choose another --data-dir");
  }
  return ok_status();
}

Result<std::unique_ptr<DataDir>> DataDir::open(const std::string& path, const ClusterKey& key_file_key,
                                               Random& random) {
  SHOAL_TRY_STATUS(check_data_dir(path));
  std::unique_ptr<DataDir> dir(new DataDir());
  dir->path_ = path;
  const std::string lock_path = path + "/agent.lock";
  dir->lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (dir->lock_fd_ < 0) {
    return make_error(Code::kIOError, "cannot create " + lock_path + ": " + errno_text());
  }
  if (::flock(dir->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return make_error(Code::kFailedPrecondition, "data directory " + path +
                                                     " is in use by another running agent; stop it or choose " +
                                                     "another --data-dir");
  }
  auto env = storage::Env::open(path);
  if (!env) {
    return make_error(env.error().code, "LMDB failed to open in " + path + " (" + env.error().message +
                                            "); move the damaged data directory aside or choose another --data-dir");
  }
  dir->env_ = std::move(*env);
  auto table = dir->env_->table("agent");
  if (!table) {
    return make_error(table.error().code, "LMDB failed to open table in " + path + " (" + table.error().message + ")");
  }
  dir->table_ = *table;
  SHOAL_TRY_STATUS(dir->load_or_create(key_file_key, random));
  return dir;
}

DataDir::~DataDir() {
  env_.reset();  // Close LMDB before releasing the lock that keeps others out.
  if (lock_fd_ >= 0) {
    ::close(lock_fd_);
  }
}

Status DataDir::put(std::string_view key, ByteView value) {
  auto txn = storage::Txn::begin_write(*env_);
  if (!txn) {
    return std::unexpected(txn.error());
  }
  SHOAL_TRY_STATUS(txn->put(table_, as_bytes(key), value));
  return txn->commit();
}

Status DataDir::load_or_create(const ClusterKey& key_file_key, Random& random) {
  std::optional<Bytes> identity_bytes, keyring_bytes, incarnation_bytes, members_bytes;
  {
    auto txn = storage::Txn::begin_read(*env_);
    if (!txn) {
      return std::unexpected(txn.error());
    }
    auto read = [&](std::string_view key, std::optional<Bytes>& out) -> Status {
      auto value = txn->get(table_, as_bytes(key));
      if (!value) {
        return std::unexpected(value.error());
      }
      out = std::move(*value);
      return ok_status();
    };
    SHOAL_TRY_STATUS(read(kIdentityKey, identity_bytes));
    SHOAL_TRY_STATUS(read(kKeyringKey, keyring_bytes));
    SHOAL_TRY_STATUS(read(kIncarnationKey, incarnation_bytes));
    SHOAL_TRY_STATUS(read(kMembersKey, members_bytes));
  }
  const std::string damaged = " in " + path_ + " is damaged; move the data directory aside to start as a new node";

  if (identity_bytes) {
    auto identity = Identity::from_secret(*identity_bytes);
    if (!identity) {
      return make_error(Code::kCorruption, "the node identity" + damaged);
    }
    identity_ = std::move(*identity);
  } else {
    first_start_ = true;
    identity_ = Identity::generate(random);
    SHOAL_TRY_STATUS(put(kIdentityKey, identity_.secret()));
  }

  if (keyring_bytes) {
    auto decoded = Decoded::parse(*keyring_bytes);
    if (!decoded) {
      return make_error(Code::kCorruption, "the keyring" + damaged);
    }
    Reader root = decoded->root(Keyring::kKeysMax);
    std::vector<ClusterKey> keys(root.size());
    for (auto& key : keys) {
      root.bin_exact(key);
    }
    if (!root.ok() || keys.empty()) {
      return make_error(Code::kCorruption, "the keyring" + damaged);
    }
    Keyring ring(keys.front());
    for (std::size_t i = 1; i < keys.size(); ++i) {
      SHOAL_TRY_STATUS(ring.install(keys[i]));
    }
    keyring_ = ring;
    if (!keyring_.contains(key_file_key)) {
      // The agent missed a rotation and the operator gave it the current key.
      SHOAL_TRY_STATUS(ring.install(key_file_key));
      SHOAL_TRY_STATUS(ring.use(key_file_key));
      SHOAL_TRY_STATUS(save_keyring(ring));
    }
  } else {
    SHOAL_TRY_STATUS(save_keyring(Keyring(key_file_key)));
  }

  if (incarnation_bytes) {
    auto decoded = Decoded::parse(*incarnation_bytes);
    if (!decoded) {
      return make_error(Code::kCorruption, "the stored incarnation" + damaged);
    }
    Reader root = decoded->root(1);
    incarnation_ = root.u64();
    root.expect_end();
    if (!root.ok()) {
      return make_error(Code::kCorruption, "the stored incarnation" + damaged);
    }
  }

  if (members_bytes) {
    auto decoded = Decoded::parse(*members_bytes);
    if (decoded) {
      Reader root = decoded->root(kKnownMembersMax);
      const std::size_t n = root.size();
      for (std::size_t i = 0; i < n && root.ok(); ++i) {
        auto addr = parse_address(root.str(kAddressTextBytesMax));
        if (root.ok() && addr) {
          known_members_.push_back(std::move(*addr));
        }
      }
    }
    // A damaged member list only costs the automatic rejoin; it is not fatal.
  }
  return ok_status();
}

Status DataDir::save_keyring(const Keyring& keyring) {
  Encoder e;
  e.array(static_cast<std::uint32_t>(keyring.keys().size()));
  for (const auto& key : keyring.keys()) {
    e.bin(key);
  }
  SHOAL_TRY_STATUS(put(kKeyringKey, e.take()));
  keyring_ = keyring;
  return ok_status();
}

Status DataDir::save_incarnation(std::uint64_t incarnation) {
  if (incarnation <= incarnation_) {
    return ok_status();
  }
  SHOAL_TRY_STATUS(put(kIncarnationKey, encode_u64(incarnation)));
  incarnation_ = incarnation;
  return ok_status();
}

Status DataDir::save_known_members(std::vector<Address> members) {
  if (members.size() > kKnownMembersMax) {
    members.resize(kKnownMembersMax);
  }
  if (members == known_members_) {
    return ok_status();
  }
  Encoder e;
  e.array(static_cast<std::uint32_t>(members.size()));
  for (const auto& m : members) {
    e.str(m.to_string());
  }
  SHOAL_TRY_STATUS(put(kMembersKey, e.take()));
  known_members_ = std::move(members);
  return ok_status();
}

}  // namespace shoal::agent
