#include "base/crypto.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>

#include "base/assert.h"

namespace shoal {

static_assert(kPublicKeyBytes == crypto_sign_PUBLICKEYBYTES);
static_assert(kSecretKeyBytes == crypto_sign_SECRETKEYBYTES);
static_assert(kSignatureBytes == crypto_sign_BYTES);
static_assert(kClusterKeyBytes == crypto_aead_xchacha20poly1305_ietf_KEYBYTES);
static_assert(kSealNonceBytes == crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
static_assert(kSealTagBytes == crypto_aead_xchacha20poly1305_ietf_ABYTES);

void crypto_init() { SHOAL_ASSERT(sodium_init() >= 0); }

std::string NodeId::to_hex() const { return shoal::to_hex(bytes); }

Result<NodeId> NodeId::parse_hex(std::string_view text) {
  auto raw = from_hex(text);
  if (!raw || raw->size() != kNodeIdBytes) {
    return make_error(Code::kInvalidArgument, "node id must be " + std::to_string(kNodeIdBytes * 2) + " hex digits");
  }
  NodeId id;
  std::copy(raw->begin(), raw->end(), id.bytes.begin());
  return id;
}

std::size_t NodeIdHash::operator()(const NodeId& id) const noexcept {
  std::size_t h = 0;
  std::memcpy(&h, id.bytes.data(), sizeof h);
  return h;
}

NodeId node_id_from_public_key(const PublicKey& key) {
  NodeId id;
  crypto_generichash(id.bytes.data(), id.bytes.size(), key.data(), key.size(), nullptr, 0);
  return id;
}

Identity Identity::generate(Random& random) {
  std::array<std::uint8_t, crypto_sign_SEEDBYTES> seed{};
  random.fill(seed);
  Identity id;
  SHOAL_ASSERT(crypto_sign_seed_keypair(id.public_key_.data(), id.secret_key_.data(), seed.data()) == 0);
  sodium_memzero(seed.data(), seed.size());
  return id;
}

Result<Identity> Identity::from_secret(ByteView secret_key) {
  if (secret_key.size() != kSecretKeyBytes) {
    return make_error(Code::kCorruption, "identity secret key has " + std::to_string(secret_key.size()) +
                                             " bytes, expected " + std::to_string(kSecretKeyBytes));
  }
  Identity id;
  std::copy(secret_key.begin(), secret_key.end(), id.secret_key_.begin());
  SHOAL_ASSERT(crypto_sign_ed25519_sk_to_pk(id.public_key_.data(), id.secret_key_.data()) == 0);
  return id;
}

std::array<std::uint8_t, kSignatureBytes> Identity::sign(ByteView message) const {
  std::array<std::uint8_t, kSignatureBytes> sig{};
  SHOAL_ASSERT(crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(), secret_key_.data()) == 0);
  return sig;
}

bool verify_signature(const PublicKey& key, ByteView message, ByteView signature) {
  if (signature.size() != kSignatureBytes) {
    return false;
  }
  return crypto_sign_verify_detached(signature.data(), message.data(), message.size(), key.data()) == 0;
}

ClusterKey generate_cluster_key(Random& random) {
  ClusterKey key{};
  random.fill(key);
  return key;
}

Result<ClusterKey> parse_cluster_key(std::string_view base64) {
  auto raw = from_base64(base64);
  if (!raw || raw->size() != kClusterKeyBytes) {
    return make_error(Code::kInvalidArgument, "cluster key must be " + std::to_string(kClusterKeyBytes) +
                                                  " bytes in base64 (make one with `shoal keygen`)");
  }
  ClusterKey key{};
  std::copy(raw->begin(), raw->end(), key.begin());
  return key;
}

std::string format_cluster_key(const ClusterKey& key) { return to_base64(key); }

std::string cluster_key_fingerprint(const ClusterKey& key) { return to_hex(blake2b_256(key)).substr(0, 8); }

Status Keyring::install(const ClusterKey& key) {
  if (contains(key)) {
    return {};
  }
  if (keys_.size() >= kKeysMax) {
    return make_error(Code::kResourceExhausted, "keyring holds " + std::to_string(kKeysMax) + " keys; remove one first");
  }
  keys_.push_back(key);
  return {};
}

Status Keyring::use(const ClusterKey& key) {
  auto it = std::find(keys_.begin(), keys_.end(), key);
  if (it == keys_.end()) {
    return make_error(Code::kNotFound, "key " + cluster_key_fingerprint(key) + " is not installed; install it first");
  }
  std::iter_swap(keys_.begin(), it);
  return {};
}

Status Keyring::remove(const ClusterKey& key) {
  auto it = std::find(keys_.begin(), keys_.end(), key);
  if (it == keys_.end()) {
    return make_error(Code::kNotFound, "key " + cluster_key_fingerprint(key) + " is not installed");
  }
  if (it == keys_.begin()) {
    return make_error(Code::kFailedPrecondition, "key " + cluster_key_fingerprint(key) +
                                                     " is the primary key; `use` another key before removing it");
  }
  keys_.erase(it);
  return {};
}

bool Keyring::contains(const ClusterKey& key) const {
  return std::find(keys_.begin(), keys_.end(), key) != keys_.end();
}

Bytes seal(const ClusterKey& key, Random& random, ByteView associated_data, ByteView plaintext) {
  Bytes out(kSealNonceBytes + plaintext.size() + kSealTagBytes);
  random.fill(std::span(out.data(), kSealNonceBytes));
  unsigned long long written = 0;
  SHOAL_ASSERT(crypto_aead_xchacha20poly1305_ietf_encrypt(out.data() + kSealNonceBytes, &written, plaintext.data(),
                                                          plaintext.size(), associated_data.data(),
                                                          associated_data.size(), nullptr, out.data(), key.data()) == 0);
  SHOAL_ASSERT(written == plaintext.size() + kSealTagBytes);
  return out;
}

Result<Bytes> open(const Keyring& keyring, ByteView associated_data, ByteView sealed) {
  if (sealed.size() < kSealOverheadBytes) {
    return make_error(Code::kInvalidArgument, "sealed message shorter than its overhead");
  }
  Bytes out(sealed.size() - kSealOverheadBytes);
  for (const auto& key : keyring.keys()) {
    unsigned long long written = 0;
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(out.data(), &written, nullptr, sealed.data() + kSealNonceBytes,
                                                   sealed.size() - kSealNonceBytes, associated_data.data(),
                                                   associated_data.size(), sealed.data(), key.data()) == 0) {
      SHOAL_ASSERT(written == out.size());
      return out;
    }
  }
  return make_error(Code::kCorruption, "no installed cluster key opens this message");
}

Hash256 blake2b_256(ByteView data) {
  Hash256 h{};
  crypto_generichash(h.data(), h.size(), data.data(), data.size(), nullptr, 0);
  return h;
}

}  // namespace shoal
