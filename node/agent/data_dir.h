#pragma once
// node/agent/data_dir.h: the agent's durable state and its start-up checks.
// Owns one LMDB environment in the data directory (created mode 0700) with a
// single table "agent" holding the node identity (Ed25519 secret, created at
// first start), the cluster keyring, the highest incarnation used and the
// addresses of members last seen. An exclusive lock file keeps a second agent
// off the same directory. Every failure is one line saying what to fix.
// Single-threaded: call from the loop thread only.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/address.h"
#include "base/crypto.h"
#include "base/random.h"
#include "base/result.h"
#include "storage/lmdb.h"

namespace shoal::agent {

// Reads a base64 cluster key file. PermissionDenied (with the chmod to run)
// when group or others may read or write it, NotFound when missing,
// InvalidArgument when it does not hold one key.
Result<ClusterKey> read_cluster_key_file(const std::string& path);

// Creates the directory (mode 0700) if missing and proves it writable by
// creating and removing a probe file.
Status check_data_dir(const std::string& path);

class DataDir {
 public:
  // Checks, locks and opens the data directory. At first start the identity
  // is generated and the keyring seeded with key_file_key; later the stored
  // keyring wins, except that a key file holding a key the ring lacks (the
  // operator handed an agent that missed a rotation the new key) installs it
  // as primary.
  static Result<std::unique_ptr<DataDir>> open(const std::string& path, const ClusterKey& key_file_key,
                                               Random& random);
  ~DataDir();
  DataDir(const DataDir&) = delete;
  DataDir& operator=(const DataDir&) = delete;

  const std::string& path() const { return path_; }
  bool first_start() const { return first_start_; }
  const Identity& identity() const { return identity_; }
  const Keyring& keyring() const { return keyring_; }
  // Replaces the keyring and persists it; the in-memory ring changes only if
  // the write committed.
  Status save_keyring(const Keyring& keyring);

  std::uint64_t incarnation() const { return incarnation_; }
  // Persists the highest incarnation used; lower values are ignored.
  Status save_incarnation(std::uint64_t incarnation);

  const std::vector<Address>& known_members() const { return known_members_; }
  // The environment, for other tables of the agent's durable state (placement).
  storage::Env& env() { return *env_; }
  // Keeps at most kKnownMembersMax addresses.
  Status save_known_members(std::vector<Address> members);

 private:
  DataDir() = default;
  Status load_or_create(const ClusterKey& key_file_key, Random& random);
  Status put(std::string_view key, ByteView value);

  std::string path_;
  int lock_fd_ = -1;
  std::unique_ptr<storage::Env> env_;
  MDB_dbi table_ = 0;
  bool first_start_ = false;
  Identity identity_;
  Keyring keyring_{ClusterKey{}};
  std::uint64_t incarnation_ = 0;
  std::vector<Address> known_members_;
};

}  // namespace shoal::agent
