#pragma once
// base/crypto.h: libsodium wrappers. Owns node identities (Ed25519, node id
// derived from the public key), the cluster keyring (install/use/remove for
// rotation), sealed datagrams (XChaCha20-Poly1305) and BLAKE2b hashing.
// Nonces come from an injected Random so the simulator stays deterministic.

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/bytes.h"
#include "base/random.h"
#include "base/result.h"

namespace shoal {

// Must be called once before any other function here (idempotent, thread-safe).
void crypto_init();

constexpr std::size_t kNodeIdBytes = 16;
constexpr std::size_t kPublicKeyBytes = 32;
constexpr std::size_t kSecretKeyBytes = 64;
constexpr std::size_t kSignatureBytes = 64;
constexpr std::size_t kClusterKeyBytes = 32;
constexpr std::size_t kHashBytes = 32;

// A node's identity on the mesh: BLAKE2b-128 of its Ed25519 public key.
struct NodeId {
  std::array<std::uint8_t, kNodeIdBytes> bytes{};
  std::string to_hex() const;
  std::string short_hex() const { return to_hex().substr(0, 8); }
  static Result<NodeId> parse_hex(std::string_view text);
  auto operator<=>(const NodeId&) const = default;
};

struct NodeIdHash {
  std::size_t operator()(const NodeId& id) const noexcept;
};

using PublicKey = std::array<std::uint8_t, kPublicKeyBytes>;
using Hash256 = std::array<std::uint8_t, kHashBytes>;

NodeId node_id_from_public_key(const PublicKey& key);

// An Ed25519 key pair. The secret key never leaves this object except via secret().
class Identity {
 public:
  static Identity generate(Random& random);
  static Result<Identity> from_secret(ByteView secret_key);  // 64-byte libsodium secret key.

  const PublicKey& public_key() const { return public_key_; }
  NodeId node_id() const { return node_id_from_public_key(public_key_); }
  ByteView secret() const { return secret_key_; }
  std::array<std::uint8_t, kSignatureBytes> sign(ByteView message) const;

 private:
  PublicKey public_key_{};
  std::array<std::uint8_t, kSecretKeyBytes> secret_key_{};
};

bool verify_signature(const PublicKey& key, ByteView message, ByteView signature);

using ClusterKey = std::array<std::uint8_t, kClusterKeyBytes>;

ClusterKey generate_cluster_key(Random& random);
Result<ClusterKey> parse_cluster_key(std::string_view base64);
std::string format_cluster_key(const ClusterKey& key);
// A short, non-secret fingerprint for listing keys (first 8 hex of BLAKE2b).
std::string cluster_key_fingerprint(const ClusterKey& key);

// The cluster keys this node accepts. Exactly one is primary (used to seal);
// all are tried to open, so keys rotate without downtime: install a new key
// everywhere, make it primary everywhere, then remove the old one.
class Keyring {
 public:
  static constexpr std::size_t kKeysMax = 16;

  explicit Keyring(const ClusterKey& primary) : keys_{primary} {}

  const ClusterKey& primary() const { return keys_.front(); }
  const std::vector<ClusterKey>& keys() const { return keys_; }
  Status install(const ClusterKey& key);     // ResourceExhausted when full; no-op when present.
  Status use(const ClusterKey& key);         // NotFound unless installed.
  Status remove(const ClusterKey& key);      // FailedPrecondition for the primary key.
  bool contains(const ClusterKey& key) const;

 private:
  std::vector<ClusterKey> keys_;  // keys_[0] is the primary.
};

constexpr std::size_t kSealNonceBytes = 24;
constexpr std::size_t kSealTagBytes = 16;
constexpr std::size_t kSealOverheadBytes = kSealNonceBytes + kSealTagBytes;

// nonce(24) || XChaCha20-Poly1305(plaintext, associated_data).
Bytes seal(const ClusterKey& key, Random& random, ByteView associated_data, ByteView plaintext);
// Tries every key of the ring. Corruption when none opens it (wrong cluster,
// tampered or truncated); InvalidArgument when shorter than the overhead.
Result<Bytes> open(const Keyring& keyring, ByteView associated_data, ByteView sealed);

Hash256 blake2b_256(ByteView data);

}  // namespace shoal
