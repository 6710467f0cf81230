// transfer/secure_channel.cc
//
// Design note. The handshake is a SIGMA-I exchange written in the Noise
// framework's vocabulary (symmetric state ck/h/k, MixHash, MixKey,
// EncryptAndHash), pattern "psk0 + e, ee + signatures":
//
//   -> psk, e                      tag = EncryptAndHash("")       message 1
//   <- e, ee, {s_r, sig_r(h)}      sig over the transcript hash   message 2
//   -> {s_i, sig_i(h)}                                            message 3
//
// Why signatures and not Noise XX's es/se DH: a node's identity is an Ed25519
// signing key whose hash is its node id, gossiped by the mesh. Signing the
// transcript with it authenticates that key directly, without converting it to
// X25519 and using one key for two algorithms. Why psk0: the cluster key is
// mixed before anything else, so message 1's tag already proves possession of
// it; a responder answers nobody who lacks it, and every later key (handshake
// and traffic) depends on it. Forward secrecy comes from ee alone: the
// ephemeral secrets are wiped at split(), after which neither the cluster key
// nor both static keys recover the traffic keys. docs/protocol.md has the
// message-by-message reasoning and the comparison with Noise XXpsk0 and IKpsk2.
//
// Frames: record = u32 length || u64 counter || ChaCha20-Poly1305(type ||
// payload), associated data = the 12 header bytes, nonce = the counter. The
// counter is explicit so that a replay or a reordering is named as such
// before decryption; the AEAD would refuse it anyway because the nonce is the
// counter the receiver expects. Each direction's key is replaced by a one-way
// function of itself on a schedule both ends compute (frames or bytes), so no
// rekey message exists to be attacked.

#include "transfer/secure_channel.h"

#include <sodium.h>

#include <algorithm>
#include <cstring>

#include "base/assert.h"
#include "base/codec.h"
#include "transfer/frame_seal.h"

namespace shoal::transfer {

namespace {

using Key = std::array<std::uint8_t, 32>;

static_assert(crypto_aead_chacha20poly1305_ietf_KEYBYTES == 32);
static_assert(crypto_aead_chacha20poly1305_ietf_ABYTES == kFrameTagBytes);
static_assert(crypto_aead_chacha20poly1305_ietf_NPUBBYTES == 12);
static_assert(crypto_scalarmult_BYTES == 32);
static_assert(crypto_scalarmult_SCALARBYTES == 32);

constexpr std::string_view kProtocolName = "shoal-channel-v1 psk0+e,ee+sig X25519 Ed25519 ChaChaPoly BLAKE2b";
constexpr std::string_view kResponderLabel = "shoal-channel-v1 responder signature";
constexpr std::string_view kInitiatorLabel = "shoal-channel-v1 initiator signature";
constexpr std::string_view kRekeyLabel = "shoal-channel-v1 rekey";

constexpr std::uint8_t kFrameData = 0;
constexpr std::uint8_t kFrameKeepalive = 1;
constexpr std::uint8_t kFrameClose = 2;

constexpr std::size_t kHandshakeCiphertextMax = 256;  // [pub, sig] msgpack + tag is about 120 bytes.
constexpr std::size_t kCompactThreshold = 64 * 1024;

// BLAKE2b-256 keyed with `key` over a || b: the PRF under our HKDF.
Key keyed_hash(const Key& key, ByteView a, ByteView b = {}) {
  crypto_generichash_state state;
  SHOAL_ASSERT(crypto_generichash_init(&state, key.data(), key.size(), 32) == 0);
  SHOAL_ASSERT(crypto_generichash_update(&state, a.data(), a.size()) == 0);
  SHOAL_ASSERT(crypto_generichash_update(&state, b.data(), b.size()) == 0);
  Key out{};
  SHOAL_ASSERT(crypto_generichash_final(&state, out.data(), out.size()) == 0);
  return out;
}

Hash256 hash_two(ByteView a, ByteView b) {
  crypto_generichash_state state;
  SHOAL_ASSERT(crypto_generichash_init(&state, nullptr, 0, 32) == 0);
  SHOAL_ASSERT(crypto_generichash_update(&state, a.data(), a.size()) == 0);
  SHOAL_ASSERT(crypto_generichash_update(&state, b.data(), b.size()) == 0);
  Hash256 out{};
  SHOAL_ASSERT(crypto_generichash_final(&state, out.data(), out.size()) == 0);
  return out;
}

std::array<std::uint8_t, 12> nonce_for(std::uint64_t counter) {
  std::array<std::uint8_t, 12> nonce{};
  for (int i = 0; i < 8; ++i) {
    nonce[4 + i] = static_cast<std::uint8_t>(counter >> (8 * i));
  }
  return nonce;
}

// Writes the low `bytes` bytes of v big-endian at p.
void put_be(std::uint8_t* p, std::uint64_t v, std::size_t bytes) {
  for (std::size_t i = 0; i < bytes; ++i) {
    p[i] = static_cast<std::uint8_t>(v >> (8 * (bytes - 1 - i)));
  }
}
std::uint64_t get_be(const std::uint8_t* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) {
    v = (v << 8) | p[i];
  }
  return v;
}

const std::uint8_t kOne[1] = {1};
const std::uint8_t kTwo[1] = {2};
const std::uint8_t kThree[1] = {3};

}  // namespace

// ---- Symmetric state (Noise section 5.2, with keyed BLAKE2b as the HKDF PRF) ----

namespace {

struct SymmetricOps {
  static void mix_hash(Hash256& h, ByteView data) { h = hash_two(h, data); }

  // HKDF(ck, ikm) -> (ck, k).
  static void mix_key(Key& ck, Key& k, std::uint64_t& n, ByteView ikm) {
    Key temp = keyed_hash(ck, ikm);
    ck = keyed_hash(temp, kOne);
    k = keyed_hash(temp, ck, kTwo);
    n = 0;
    sodium_memzero(temp.data(), temp.size());
  }

  // HKDF(ck, ikm) -> (ck, temp_h, k); MixHash(temp_h).
  static void mix_key_and_hash(Key& ck, Hash256& h, Key& k, std::uint64_t& n, ByteView ikm) {
    Key temp = keyed_hash(ck, ikm);
    ck = keyed_hash(temp, kOne);
    Key temp_h = keyed_hash(temp, ck, kTwo);
    k = keyed_hash(temp, temp_h, kThree);
    mix_hash(h, temp_h);
    n = 0;
    sodium_memzero(temp.data(), temp.size());
  }

  static Bytes encrypt_and_hash(const Key& k, Hash256& h, std::uint64_t& n, ByteView plaintext) {
    Bytes out(plaintext.size() + kFrameTagBytes);
    const auto nonce = nonce_for(n++);
    unsigned long long written = 0;
    SHOAL_ASSERT(crypto_aead_chacha20poly1305_ietf_encrypt(out.data(), &written, plaintext.data(), plaintext.size(),
                                                           h.data(), h.size(), nullptr, nonce.data(), k.data()) == 0);
    SHOAL_ASSERT(written == out.size());
    mix_hash(h, out);
    return out;
  }

  static std::optional<Bytes> decrypt_and_hash(const Key& k, Hash256& h, std::uint64_t& n, ByteView ciphertext) {
    if (ciphertext.size() < kFrameTagBytes) {
      return std::nullopt;
    }
    Bytes out(ciphertext.size() - kFrameTagBytes);
    const auto nonce = nonce_for(n);
    unsigned long long written = 0;
    if (crypto_aead_chacha20poly1305_ietf_decrypt(out.data(), &written, nullptr, ciphertext.data(), ciphertext.size(),
                                                  h.data(), h.size(), nonce.data(), k.data()) != 0) {
      return std::nullopt;
    }
    SHOAL_ASSERT(written == out.size());
    ++n;
    mix_hash(h, ciphertext);
    return out;
  }
};

}  // namespace

std::string_view fail_reason_name(FailReason reason) {
  switch (reason) {
    case FailReason::kNone: return "none";
    case FailReason::kMalformed: return "malformed";
    case FailReason::kVersion: return "version";
    case FailReason::kWrongClusterKey: return "wrong_cluster_key";
    case FailReason::kPeerKeyRejected: return "peer_key_rejected";
    case FailReason::kBadSignature: return "bad_signature";
    case FailReason::kBadDh: return "bad_dh";
    case FailReason::kDecryptFailed: return "decrypt_failed";
    case FailReason::kReplayed: return "replayed";
    case FailReason::kReordered: return "reordered";
    case FailReason::kOversize: return "oversize";
    case FailReason::kTruncated: return "truncated";
    case FailReason::kUnexpectedFrame: return "unexpected_frame";
    case FailReason::kHandshakeTimeout: return "handshake_timeout";
    case FailReason::kIdleTimeout: return "idle_timeout";
    case FailReason::kCount: break;
  }
  return "unknown";
}

SecureChannel::SecureChannel(const ChannelConfig& config, const Identity& identity, Random& random, Instant now,
                             ChannelMetrics* metrics)
    : config_(config), identity_(identity), random_(random), metrics_(metrics) {
  SHOAL_ASSERT(config_.expected_peer_key.has_value() || static_cast<bool>(config_.authorize_peer));
  SHOAL_ASSERT(config_.rekey_frames > 0);
  SHOAL_ASSERT(config_.rekey_bytes > 0);
  SHOAL_ASSERT(config_.handshake_timeout.count() > 0);
  SHOAL_ASSERT(config_.keyring.primary() != ClusterKey{});  // The default-constructed config is not a key.
  crypto_init();
  handshake_deadline_ = now + config_.handshake_timeout;
  last_received_ = now;
  last_sent_ = now;
  if (config_.role == ChannelRole::kInitiator) {
    start_initiator();
  }
}

SecureChannel::~SecureChannel() {
  wipe_ephemeral();
  sodium_memzero(send_.key.data(), send_.key.size());
  sodium_memzero(receive_.key.data(), receive_.key.size());
  sodium_memzero(sym_.ck.data(), sym_.ck.size());
  sodium_memzero(sym_.k.data(), sym_.k.size());
}

namespace {

// The state both ends reach before message 1: protocol name, prologue, cluster key.
void initial_state(Key& ck, Hash256& h, Key& k, std::uint64_t& n, const ClusterKey& psk) {
  h = blake2b_256(as_bytes(kProtocolName));
  ck = h;
  const std::uint8_t prologue[6] = {'s', 'h', 'o', 'a', 'l', kChannelVersion};
  SymmetricOps::mix_hash(h, prologue);
  SymmetricOps::mix_key_and_hash(ck, h, k, n, psk);
}

}  // namespace

void SecureChannel::start_initiator() {
  random_.fill(ephemeral_secret_);
  SHOAL_ASSERT(crypto_scalarmult_base(ephemeral_public_.data(), ephemeral_secret_.data()) == 0);
  initial_state(sym_.ck, sym_.h, sym_.k, sym_.n, config_.keyring.primary());
  SymmetricOps::mix_hash(sym_.h, ephemeral_public_);
  SymmetricOps::mix_key(sym_.ck, sym_.k, sym_.n, ephemeral_public_);
  const Bytes tag = SymmetricOps::encrypt_and_hash(sym_.k, sym_.h, sym_.n, {});
  Encoder e;
  e.array(3).u64(kChannelVersion).bin(ephemeral_public_).bin(tag);
  std::memcpy(transmit_room(kChannelPreamble.size()), kChannelPreamble.data(), kChannelPreamble.size());
  queue_record(e.take());
  handshake_step_ = 1;
}

void SecureChannel::queue_record(ByteView body) {
  SHOAL_ASSERT(body.size() <= kFrameBytesMax);
  std::uint8_t* record = transmit_room(kRecordHeaderBytes + body.size());
  put_be(record, body.size(), kRecordHeaderBytes);
  std::memcpy(record + kRecordHeaderBytes, body.data(), body.size());
}

std::uint8_t* SecureChannel::transmit_room(std::size_t bytes) {
  if (transmit_.size() < transmit_used_ + bytes) {
    transmit_.resize(transmit_used_ + bytes);
  }
  std::uint8_t* room = transmit_.data() + transmit_used_;
  transmit_used_ += bytes;
  return room;
}

void SecureChannel::on_bytes(Instant now, ByteView bytes) {
  if (state_ == ChannelState::kFailed || state_ == ChannelState::kClosed || bytes.empty()) {
    return;
  }
  const std::span<std::uint8_t> space = receive_space(bytes.size());
  std::memcpy(space.data(), bytes.data(), bytes.size());
  on_received(now, bytes.size());
}

void SecureChannel::compact_receive_buffer() {
  // Only while no delivered message points into the buffer. What moves is at
  // most one partial record (the loop in process() consumed the rest), so this
  // costs at most one frame's copy per call.
  if (!inbox_.empty()) {
    return;
  }
  if (receive_offset_ == receive_end_) {
    receive_offset_ = 0;
    receive_end_ = 0;
    return;
  }
  if (receive_offset_ > 0) {
    std::memmove(receive_buffer_.data(), receive_buffer_.data() + receive_offset_, receive_end_ - receive_offset_);
    receive_end_ -= receive_offset_;
    receive_offset_ = 0;
  }
}

std::span<std::uint8_t> SecureChannel::receive_space(std::size_t bytes_min) {
  if (receive_buffer_.size() - receive_end_ < bytes_min) {
    compact_receive_buffer();
  }
  if (receive_buffer_.size() - receive_end_ < bytes_min) {
    // Grown once to what the driver reads at a time plus a frame; zero-filled
    // only then. resize() keeps the bytes and the inbox's offsets valid.
    receive_buffer_.resize(std::max(receive_end_ + bytes_min, 2 * receive_buffer_.size()));
  }
  return std::span<std::uint8_t>(receive_buffer_.data() + receive_end_, receive_buffer_.size() - receive_end_);
}

void SecureChannel::on_received(Instant now, std::size_t bytes) {
  SHOAL_ASSERT(bytes <= receive_buffer_.size() - receive_end_);
  if (state_ == ChannelState::kFailed || state_ == ChannelState::kClosed || bytes == 0) {
    return;
  }
  receive_end_ += bytes;
  process(now);
}

bool SecureChannel::check_preamble() {
  const std::size_t available = receive_end_ - receive_offset_;
  const std::size_t n = std::min(available, kChannelPreamble.size());
  const std::uint8_t* p = receive_buffer_.data() + receive_offset_;
  // Compare what has arrived so far, so a stranger is refused at its first wrong byte.
  if (!std::equal(p, p + std::min(n, kChannelPreamble.size() - 1), kChannelPreamble.begin())) {
    fail(FailReason::kMalformed, "stream does not start with the shoal channel preamble");
    return false;
  }
  if (n < kChannelPreamble.size()) {
    return false;
  }
  if (p[kChannelPreamble.size() - 1] != kChannelVersion) {
    fail(FailReason::kVersion, "peer speaks channel version " + std::to_string(p[kChannelPreamble.size() - 1]));
    return false;
  }
  receive_offset_ += kChannelPreamble.size();
  preamble_seen_ = true;
  return true;
}

void SecureChannel::process(Instant now) {
  if (config_.role == ChannelRole::kResponder && !preamble_seen_ && state_ == ChannelState::kHandshaking) {
    (void)check_preamble();
  }
  while ((state_ == ChannelState::kHandshaking && (preamble_seen_ || config_.role == ChannelRole::kInitiator)) ||
         state_ == ChannelState::kEstablished) {
    const std::size_t available = receive_end_ - receive_offset_;
    if (available < kRecordHeaderBytes) {
      break;
    }
    std::uint8_t* head = receive_buffer_.data() + receive_offset_;
    const auto length = static_cast<std::size_t>(get_be(head, 4));
    const bool handshaking = state_ == ChannelState::kHandshaking;
    const std::size_t limit = handshaking ? kHandshakeBytesMax : kFrameBytesMax;
    if (length > limit) {
      fail(FailReason::kOversize, "record of " + std::to_string(length) + " bytes, limit " + std::to_string(limit));
      break;
    }
    if (handshaking ? length == 0 : length < kFrameBytesMin) {
      fail(FailReason::kMalformed, "record of " + std::to_string(length) + " bytes is too short");
      break;
    }
    if (!handshaking && inbox_bytes_ >= config_.inbox_bytes_max) {
      break;  // Backpressure: the frame stays encrypted until poll_message() makes room.
    }
    if (available < kRecordHeaderBytes + length) {
      break;
    }
    receive_offset_ += kRecordHeaderBytes + length;
    handle_record(now, std::span<std::uint8_t>(head + kRecordHeaderBytes, length));
  }
  if (state_ == ChannelState::kFailed) {
    receive_offset_ = receive_end_;  // Nothing after the failure is parsed; delivered messages stay readable.
  }
  if (receive_offset_ == receive_end_ || receive_offset_ >= kCompactThreshold) {
    compact_receive_buffer();
  }
}

void SecureChannel::handle_record(Instant now, std::span<std::uint8_t> body) {
  if (state_ == ChannelState::kEstablished) {
    handle_frame(now, body);
    return;
  }
  SHOAL_ASSERT(state_ == ChannelState::kHandshaking);
  const bool responder = config_.role == ChannelRole::kResponder;
  if (responder && handshake_step_ == 0) {
    handle_message1(body);
  } else if (!responder && handshake_step_ == 1) {
    handle_message2(body);
  } else if (responder && handshake_step_ == 2) {
    handle_message3(body);
  } else {
    fail(FailReason::kMalformed, "unexpected handshake record");
  }
  if (state_ == ChannelState::kEstablished) {
    last_received_ = now;
    last_sent_ = now;
  }
}

void SecureChannel::handle_message1(ByteView body) {
  auto decoded = Decoded::parse(body, DecodeLimits{.input_bytes_max = kHandshakeBytesMax});
  if (!decoded) {
    fail(FailReason::kMalformed, "message 1: " + decoded.error().message);
    return;
  }
  Reader r = decoded->root(3);
  const std::uint64_t version = r.u64();
  if (r.ok() && version != kChannelVersion) {
    fail(FailReason::kVersion, "peer speaks channel version " + std::to_string(version));
    return;
  }
  r.bin_exact(peer_ephemeral_);
  std::array<std::uint8_t, kFrameTagBytes> tag{};
  r.bin_exact(tag);
  r.expect_end();
  if (!r.ok()) {
    fail(FailReason::kMalformed, "message 1: " + r.error().message);
    return;
  }
  // Try every installed cluster key: this is how keys rotate without downtime.
  bool opened = false;
  for (const ClusterKey& key : config_.keyring.keys()) {
    Symmetric s;
    initial_state(s.ck, s.h, s.k, s.n, key);
    SymmetricOps::mix_hash(s.h, peer_ephemeral_);
    SymmetricOps::mix_key(s.ck, s.k, s.n, peer_ephemeral_);
    const bool match = SymmetricOps::decrypt_and_hash(s.k, s.h, s.n, tag).has_value();
    if (match) {
      sym_ = s;
      opened = true;
    }
    sodium_memzero(s.ck.data(), s.ck.size());
    sodium_memzero(s.k.data(), s.k.size());
    if (match) {
      break;
    }
  }
  if (!opened) {
    // Say nothing: a peer without the cluster key learns nothing, not even our identity.
    fail(FailReason::kWrongClusterKey, "message 1 opens under none of our cluster keys");
    return;
  }

  random_.fill(ephemeral_secret_);
  SHOAL_ASSERT(crypto_scalarmult_base(ephemeral_public_.data(), ephemeral_secret_.data()) == 0);
  SymmetricOps::mix_hash(sym_.h, ephemeral_public_);
  SymmetricOps::mix_key(sym_.ck, sym_.k, sym_.n, ephemeral_public_);
  Key dh{};
  if (crypto_scalarmult(dh.data(), ephemeral_secret_.data(), peer_ephemeral_.data()) != 0) {
    fail(FailReason::kBadDh, "peer ephemeral key is a low-order point");
    return;
  }
  SymmetricOps::mix_key(sym_.ck, sym_.k, sym_.n, dh);
  sodium_memzero(dh.data(), dh.size());

  Bytes to_sign(kResponderLabel.begin(), kResponderLabel.end());
  to_sign.insert(to_sign.end(), sym_.h.begin(), sym_.h.end());
  const auto signature = identity_.sign(to_sign);
  Encoder payload;
  payload.array(2).bin(identity_.public_key()).bin(signature);
  const Bytes ciphertext = SymmetricOps::encrypt_and_hash(sym_.k, sym_.h, sym_.n, payload.take());
  Encoder e;
  e.array(2).bin(ephemeral_public_).bin(ciphertext);
  queue_record(e.take());
  handshake_step_ = 2;
}

namespace {

struct StaticPayload {
  PublicKey key{};
  std::array<std::uint8_t, kSignatureBytes> signature{};
};

std::optional<StaticPayload> parse_static_payload(ByteView plaintext) {
  auto decoded = Decoded::parse(plaintext, DecodeLimits{.input_bytes_max = kHandshakeCiphertextMax});
  if (!decoded) {
    return std::nullopt;
  }
  Reader r = decoded->root(2);
  StaticPayload out;
  r.bin_exact(out.key);
  r.bin_exact(out.signature);
  r.expect_end();
  if (!r.ok()) {
    return std::nullopt;
  }
  return out;
}

Bytes labelled(std::string_view label, const Hash256& h) {
  Bytes out(label.begin(), label.end());
  out.insert(out.end(), h.begin(), h.end());
  return out;
}

}  // namespace

void SecureChannel::handle_message2(ByteView body) {
  auto decoded = Decoded::parse(body, DecodeLimits{.input_bytes_max = kHandshakeBytesMax});
  if (!decoded) {
    fail(FailReason::kMalformed, "message 2: " + decoded.error().message);
    return;
  }
  Reader r = decoded->root(2);
  r.bin_exact(peer_ephemeral_);
  const Bytes ciphertext = r.bin(kHandshakeCiphertextMax);
  r.expect_end();
  if (!r.ok()) {
    fail(FailReason::kMalformed, "message 2: " + r.error().message);
    return;
  }
  SymmetricOps::mix_hash(sym_.h, peer_ephemeral_);
  SymmetricOps::mix_key(sym_.ck, sym_.k, sym_.n, peer_ephemeral_);
  Key dh{};
  if (crypto_scalarmult(dh.data(), ephemeral_secret_.data(), peer_ephemeral_.data()) != 0) {
    fail(FailReason::kBadDh, "peer ephemeral key is a low-order point");
    return;
  }
  SymmetricOps::mix_key(sym_.ck, sym_.k, sym_.n, dh);
  sodium_memzero(dh.data(), dh.size());
  const Hash256 signed_hash = sym_.h;
  auto plaintext = SymmetricOps::decrypt_and_hash(sym_.k, sym_.h, sym_.n, ciphertext);
  if (!plaintext) {
    fail(FailReason::kDecryptFailed, "message 2 does not authenticate");
    return;
  }
  auto payload = parse_static_payload(*plaintext);
  if (!payload) {
    fail(FailReason::kMalformed, "message 2 payload does not parse");
    return;
  }
  if (!verify_signature(payload->key, labelled(kResponderLabel, signed_hash), payload->signature)) {
    fail(FailReason::kBadSignature, "responder signature does not verify");
    return;
  }
  if (auto pinned = check_peer(payload->key); !pinned) {
    fail(FailReason::kPeerKeyRejected, "responder key refused: " + pinned.error().message);
    return;
  }
  peer_key_ = payload->key;

  const auto signature = identity_.sign(labelled(kInitiatorLabel, sym_.h));
  Encoder inner;
  inner.array(2).bin(identity_.public_key()).bin(signature);
  const Bytes sealed = SymmetricOps::encrypt_and_hash(sym_.k, sym_.h, sym_.n, inner.take());
  Encoder e;
  e.array(1).bin(sealed);
  queue_record(e.take());
  handshake_step_ = 3;
  split(sym_);
}

void SecureChannel::handle_message3(ByteView body) {
  auto decoded = Decoded::parse(body, DecodeLimits{.input_bytes_max = kHandshakeBytesMax});
  if (!decoded) {
    fail(FailReason::kMalformed, "message 3: " + decoded.error().message);
    return;
  }
  Reader r = decoded->root(1);
  const Bytes ciphertext = r.bin(kHandshakeCiphertextMax);
  r.expect_end();
  if (!r.ok()) {
    fail(FailReason::kMalformed, "message 3: " + r.error().message);
    return;
  }
  const Hash256 signed_hash = sym_.h;
  auto plaintext = SymmetricOps::decrypt_and_hash(sym_.k, sym_.h, sym_.n, ciphertext);
  if (!plaintext) {
    fail(FailReason::kDecryptFailed, "message 3 does not authenticate");
    return;
  }
  auto payload = parse_static_payload(*plaintext);
  if (!payload) {
    fail(FailReason::kMalformed, "message 3 payload does not parse");
    return;
  }
  if (!verify_signature(payload->key, labelled(kInitiatorLabel, signed_hash), payload->signature)) {
    fail(FailReason::kBadSignature, "initiator signature does not verify");
    return;
  }
  if (auto pinned = check_peer(payload->key); !pinned) {
    fail(FailReason::kPeerKeyRejected, "initiator key refused: " + pinned.error().message);
    return;
  }
  peer_key_ = payload->key;
  handshake_step_ = 3;
  split(sym_);
}

Status SecureChannel::check_peer(const PublicKey& key) {
  if (config_.expected_peer_key) {
    if (key != *config_.expected_peer_key) {
      return make_error(Code::kPermissionDenied, "node " + node_id_from_public_key(key).short_hex() +
                                                     " is not the node dialed (" +
                                                     node_id_from_public_key(*config_.expected_peer_key).short_hex() +
                                                     ")");
    }
    return ok_status();
  }
  return config_.authorize_peer(node_id_from_public_key(key), key);
}

void SecureChannel::split(const Symmetric& s) {
  Key temp = keyed_hash(s.ck, {});
  const Key initiator_to_responder = keyed_hash(temp, kOne);
  const Key responder_to_initiator = keyed_hash(temp, initiator_to_responder, kTwo);
  sodium_memzero(temp.data(), temp.size());
  const bool initiator = config_.role == ChannelRole::kInitiator;
  send_.key = initiator ? initiator_to_responder : responder_to_initiator;
  receive_.key = initiator ? responder_to_initiator : initiator_to_responder;
  SHOAL_ASSERT(send_.key != receive_.key);
  h_ = s.h;
  wipe_ephemeral();
  sodium_memzero(sym_.ck.data(), sym_.ck.size());
  sodium_memzero(sym_.k.data(), sym_.k.size());
  state_ = ChannelState::kEstablished;
  if (metrics_) {
    ++metrics_->handshakes_completed;
  }
}

void SecureChannel::wipe_ephemeral() {
  sodium_memzero(ephemeral_secret_.data(), ephemeral_secret_.size());
}

void SecureChannel::rekey_if_due(Direction& d) {
  if (d.frames_this_key < config_.rekey_frames && d.bytes_this_key < config_.rekey_bytes) {
    return;
  }
  // One-way: a key captured later does not decrypt frames sent under earlier keys.
  d.key = keyed_hash(d.key, as_bytes(kRekeyLabel));
  d.frames_this_key = 0;
  d.bytes_this_key = 0;
  ++d.rekeys;
  if (metrics_) {
    ++metrics_->rekeys;
  }
}

void SecureChannel::send_frame(Instant now, std::uint8_t type, std::span<const ByteView> parts) {
  SHOAL_ASSERT(state_ == ChannelState::kEstablished);
  std::size_t payload_bytes = 0;
  for (const ByteView part : parts) {
    payload_bytes += part.size();
  }
  SHOAL_ASSERT(payload_bytes <= kMessageBytesMax);
  SHOAL_ASSERT(send_.counter < UINT64_MAX);  // 2^64 frames: unreachable, but never reuse a nonce.
  const std::size_t plaintext_bytes = kFrameTypeBytes + payload_bytes;
  const std::size_t body_bytes = kFrameCounterBytes + plaintext_bytes + kFrameTagBytes;
  SHOAL_ASSERT(body_bytes <= kFrameBytesMax);

  std::uint8_t* record = transmit_room(kRecordHeaderBytes + body_bytes);
  put_be(record, body_bytes, kRecordHeaderBytes);
  put_be(record + kRecordHeaderBytes, send_.counter, kFrameCounterBytes);
  const ByteView header(record, kRecordHeaderBytes + kFrameCounterBytes);
  const std::span<std::uint8_t> text(record + header.size(), plaintext_bytes);
  const std::span<std::uint8_t, kFrameTagBytes> tag(record + header.size() + plaintext_bytes, kFrameTagBytes);
  // The payload is encrypted from where it lies into the frame: no copy first.
  ByteView all[1 + kSendPartsMax];
  SHOAL_ASSERT(parts.size() <= kSendPartsMax);
  all[0] = ByteView(&type, 1);
  std::copy(parts.begin(), parts.end(), all + 1);
  seal_parts(text, tag, std::span<const ByteView>(all, 1 + parts.size()), header, nonce_for(send_.counter),
             send_.key);
  ++send_.counter;
  ++send_.frames_this_key;
  send_.bytes_this_key += plaintext_bytes;
  last_sent_ = now;
  if (metrics_) {
    ++metrics_->frames_sent;
  }
  rekey_if_due(send_);
}

void SecureChannel::handle_frame(Instant now, std::span<std::uint8_t> body) {
  SHOAL_ASSERT(body.size() >= kFrameBytesMin);
  SHOAL_ASSERT(body.size() <= kFrameBytesMax);
  const std::uint64_t counter = get_be(body.data(), 8);
  if (counter < receive_.counter) {
    fail(FailReason::kReplayed, "frame " + std::to_string(counter) + " already received (expected " +
                                    std::to_string(receive_.counter) + ")");
    return;
  }
  if (counter > receive_.counter) {
    fail(FailReason::kReordered, "frame " + std::to_string(counter) + " arrived while expecting " +
                                     std::to_string(receive_.counter));
    return;
  }
  std::uint8_t header[kRecordHeaderBytes + kFrameCounterBytes];
  for (int i = 0; i < 4; ++i) {
    header[i] = static_cast<std::uint8_t>(body.size() >> (8 * (3 - i)));
  }
  std::memcpy(header + kRecordHeaderBytes, body.data(), kFrameCounterBytes);
  // Decrypt in place: the record lives in our own receive buffer, and the
  // payload is then copied once, into the message handed to the caller.
  std::uint8_t* text = body.data() + kFrameCounterBytes;
  const std::size_t ciphertext_bytes = body.size() - kFrameCounterBytes;
  const std::size_t plaintext_bytes = ciphertext_bytes - kFrameTagBytes;
  const auto nonce = nonce_for(counter);
  unsigned long long written = 0;
  if (crypto_aead_chacha20poly1305_ietf_decrypt(text, &written, nullptr, text, ciphertext_bytes, header,
                                                sizeof header, nonce.data(), receive_.key.data()) != 0) {
    fail(FailReason::kDecryptFailed, "frame " + std::to_string(counter) + " does not authenticate");
    return;
  }
  SHOAL_ASSERT(written == plaintext_bytes);
  const ByteView plaintext(text, plaintext_bytes);
  ++receive_.counter;
  ++receive_.frames_this_key;
  receive_.bytes_this_key += plaintext.size();
  last_received_ = now;
  if (metrics_) {
    ++metrics_->frames_received;
  }
  rekey_if_due(receive_);

  const std::uint8_t type = plaintext[0];
  if (peer_closed_) {
    fail(FailReason::kUnexpectedFrame, "frame after the peer's close");
    return;
  }
  switch (type) {
    case kFrameData:
      // Delivered where it was decrypted: no copy until the caller wants one.
      inbox_.push_back(Delivered{.offset = static_cast<std::size_t>(text + kFrameTypeBytes - receive_buffer_.data()),
                                 .size = plaintext_bytes - kFrameTypeBytes});
      inbox_bytes_ += inbox_.back().size;
      return;
    case kFrameKeepalive:
      if (plaintext.size() != 1) {
        fail(FailReason::kUnexpectedFrame, "keepalive with a payload");
      }
      return;
    case kFrameClose:
      if (plaintext.size() != 1) {
        fail(FailReason::kUnexpectedFrame, "close with a payload");
        return;
      }
      peer_closed_ = true;
      if (closed_by_us_) {
        state_ = ChannelState::kClosed;
      }
      return;
    default:
      fail(FailReason::kUnexpectedFrame, "unknown frame type " + std::to_string(type));
      return;
  }
}

void SecureChannel::on_eof(Instant now) {
  (void)now;
  if (state_ == ChannelState::kFailed || state_ == ChannelState::kClosed) {
    return;
  }
  const bool partial = receive_offset_ != receive_end_;
  if (peer_closed_ && !partial) {
    if (closed_by_us_) {
      state_ = ChannelState::kClosed;
    }
    return;
  }
  fail(FailReason::kTruncated, partial ? "stream ended inside a record" : "stream ended without a close frame");
}

void SecureChannel::on_timer(Instant now) {
  if (state_ == ChannelState::kHandshaking) {
    if (now >= handshake_deadline_) {
      fail(FailReason::kHandshakeTimeout, "handshake not complete after " +
                                              std::to_string(to_ms(config_.handshake_timeout)) + " ms");
    }
    return;
  }
  if (state_ != ChannelState::kEstablished) {
    return;
  }
  if (!peer_closed_ && now - last_received_ >= config_.idle_timeout) {
    fail(FailReason::kIdleTimeout, "no frame from the peer for " + std::to_string(to_ms(config_.idle_timeout)) + " ms");
    return;
  }
  if (!closed_by_us_ && now - last_sent_ >= config_.keepalive_interval) {
    send_frame(now, kFrameKeepalive, {});
  }
}

Status SecureChannel::send(Instant now, ByteView message) {
  const ByteView parts[1] = {message};
  return send_parts(now, parts);
}

Status SecureChannel::send_parts(Instant now, std::span<const ByteView> parts) {
  std::size_t bytes = 0;
  for (const ByteView part : parts) {
    bytes += part.size();
  }
  if (state_ != ChannelState::kEstablished || closed_by_us_) {
    return make_error(Code::kFailedPrecondition, "channel is not open for sending");
  }
  if (bytes > kMessageBytesMax) {
    return make_error(Code::kInvalidArgument, "message of " + std::to_string(bytes) + " bytes, limit " +
                                                  std::to_string(kMessageBytesMax));
  }
  if (parts.size() > kSendPartsMax) {
    return make_error(Code::kInvalidArgument, "message in " + std::to_string(parts.size()) + " parts, limit " +
                                                  std::to_string(kSendPartsMax));
  }
  if (transmit_used_ >= config_.transmit_bytes_max) {
    return make_error(Code::kResourceExhausted, "transmit buffer full; drain poll_transmit() first");
  }
  send_frame(now, kFrameData, parts);
  return ok_status();
}

void SecureChannel::close(Instant now) {
  if (state_ != ChannelState::kEstablished || closed_by_us_) {
    return;
  }
  send_frame(now, kFrameClose, {});
  closed_by_us_ = true;
  if (peer_closed_) {
    state_ = ChannelState::kClosed;
  }
}

std::optional<Bytes> SecureChannel::poll_transmit() {
  if (transmit_used_ == 0 || state_ == ChannelState::kFailed) {
    return std::nullopt;
  }
  Bytes out;
  transmit_.resize(transmit_used_);
  out.swap(transmit_);
  transmit_used_ = 0;
  if (transmit_spare_.capacity() >= out.size()) {
    // A buffer the driver wrote and handed back: sealing into it costs no
    // allocation and no page faults, and, as it keeps its size, no zero-fill.
    transmit_.swap(transmit_spare_);
  } else {
    // The next frames go into a buffer as large as what this one carried, so
    // that a steady sender does not regrow (copy, and fault in) a fresh buffer
    // frame by frame: fewer page faults by ~60x in bench/transfer/channel_bench.
    // Sized by use, not capacity, so a small message after a big one stays small.
    transmit_.reserve(out.size());
  }
  return out;
}

void SecureChannel::recycle_transmit(Bytes&& buffer) {
  if (state_ == ChannelState::kFailed) {
    return;
  }
  // Not cleared: its size is room transmit_room() need not zero-fill again
  // (what it holds is ciphertext already sent).
  if (transmit_used_ == 0 && buffer.capacity() > transmit_.capacity()) {
    transmit_.swap(buffer);  // The next frames go straight into it.
  }
  // Keep the larger of what is left; one spare bounds what an idle channel holds.
  if (buffer.capacity() > transmit_spare_.capacity()) {
    transmit_spare_ = std::move(buffer);
  }
}

std::optional<ByteView> SecureChannel::peek_message() const {
  if (inbox_.empty()) {
    return std::nullopt;
  }
  return ByteView(receive_buffer_.data() + inbox_.front().offset, inbox_.front().size);
}

void SecureChannel::pop_message() {
  SHOAL_ASSERT(!inbox_.empty());
  SHOAL_ASSERT(inbox_bytes_ >= inbox_.front().size);
  inbox_bytes_ -= inbox_.front().size;
  inbox_.pop_front();
  if (state_ == ChannelState::kEstablished && receive_offset_ != receive_end_) {
    process(last_received_);  // Frames held back by backpressure; no new time has passed for them.
  } else if (inbox_.empty()) {
    compact_receive_buffer();
  }
}

std::optional<Bytes> SecureChannel::poll_message() {
  auto view = peek_message();
  if (!view) {
    return std::nullopt;
  }
  Bytes out(view->begin(), view->end());
  pop_message();
  return out;
}

std::optional<Instant> SecureChannel::next_deadline() const {
  if (state_ == ChannelState::kHandshaking) {
    return handshake_deadline_;
  }
  if (state_ != ChannelState::kEstablished) {
    return std::nullopt;
  }
  std::optional<Instant> deadline;
  if (!peer_closed_) {
    deadline = last_received_ + config_.idle_timeout;
  }
  if (!closed_by_us_) {
    const Instant keepalive = last_sent_ + config_.keepalive_interval;
    deadline = deadline ? std::min(*deadline, keepalive) : keepalive;
  }
  return deadline;
}

bool SecureChannel::wants_bytes() const {
  if (state_ != ChannelState::kHandshaking && state_ != ChannelState::kEstablished) {
    return false;
  }
  return inbox_bytes_ < config_.inbox_bytes_max;
}

Hash256 SecureChannel::send_key_fingerprint() const { return blake2b_256(send_.key); }
Hash256 SecureChannel::receive_key_fingerprint() const { return blake2b_256(receive_.key); }

void SecureChannel::fail(FailReason reason, std::string message) {
  if (state_ == ChannelState::kFailed) {
    return;
  }
  SHOAL_ASSERT(reason != FailReason::kNone);
  state_ = ChannelState::kFailed;
  fail_reason_ = reason;
  Code code = Code::kAborted;
  switch (reason) {
    case FailReason::kWrongClusterKey:
    case FailReason::kPeerKeyRejected:
    case FailReason::kBadSignature:
      code = Code::kPermissionDenied;
      break;
    case FailReason::kHandshakeTimeout:
    case FailReason::kIdleTimeout:
      code = Code::kDeadlineExceeded;
      break;
    default:
      break;
  }
  error_ = Error{code, std::string(fail_reason_name(reason)) + ": " + message};
  transmit_.clear();
  transmit_used_ = 0;
  transmit_spare_ = Bytes();
  wipe_ephemeral();
  if (metrics_) {
    ++metrics_->failures[static_cast<std::size_t>(reason)];
  }
}

}  // namespace shoal::transfer
