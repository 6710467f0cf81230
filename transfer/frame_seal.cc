// transfer/frame_seal.cc
//
// The construction (RFC 8439 section 2.8, as libsodium's
// crypto_aead_chacha20poly1305_ietf_encrypt_detached computes it): the
// Poly1305 key is the first 32 bytes of ChaCha20 block 0; the plaintext is
// XORed with the keystream from block 1 on; the tag is Poly1305 over
// ad || pad16 || ciphertext || pad16 || le64(|ad|) || le64(|ciphertext|).
// A keystream may be resumed at any 64-byte block boundary
// (crypto_stream_chacha20_ietf_xor_ic), so a part read in place must start on
// one: the bytes before the boundary and the tail after the last whole block
// are copied into the frame and encrypted there with their neighbours. The
// MAC runs over each stretch of ciphertext right after it is written, while
// it is still in the cache (libsodium makes a second pass over the whole
// message).

#include "transfer/frame_seal.h"

#include <sodium.h>

#include <cstring>

#include "base/assert.h"

namespace shoal::transfer {

namespace {

constexpr std::size_t kBlock = 64;
// Stretch encrypted and then authenticated while it is in the L1/L2 cache.
constexpr std::size_t kStretch = 16 * 1024;

static_assert(crypto_onetimeauth_poly1305_BYTES == kSealTagBytes);
static_assert(crypto_stream_chacha20_ietf_NONCEBYTES == 12);
static_assert(crypto_stream_chacha20_ietf_KEYBYTES == 32);

struct Sealer {
  std::uint8_t* out;
  const std::array<std::uint8_t, 12>& nonce;
  const std::array<std::uint8_t, 32>& key;
  crypto_onetimeauth_poly1305_state mac;
  std::size_t done = 0;  // Bytes of `out` encrypted and authenticated; a multiple of kBlock except at the end.

  // Encrypts out[done, done + n) from src (src == nullptr: in place).
  void encrypt(const std::uint8_t* src, std::size_t n) {
    SHOAL_ASSERT(done % kBlock == 0);
    while (n > 0) {
      const std::size_t step = n < kStretch ? n : kStretch;
      std::uint8_t* dst = out + done;
      SHOAL_ASSERT(crypto_stream_chacha20_ietf_xor_ic(dst, src ? src : dst, step, nonce.data(),
                                                      static_cast<std::uint32_t>(1 + done / kBlock),
                                                      key.data()) == 0);
      SHOAL_ASSERT(crypto_onetimeauth_poly1305_update(&mac, dst, step) == 0);
      done += step;
      n -= step;
      if (src) src += step;
    }
  }
};

void put_le64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

}  // namespace

void seal_parts(std::span<std::uint8_t> out, std::span<std::uint8_t, kSealTagBytes> tag,
                std::span<const ByteView> parts, ByteView ad, const std::array<std::uint8_t, 12>& nonce,
                const std::array<std::uint8_t, 32>& key) {
  static constexpr std::uint8_t kZeros[16] = {};
  // The keystream counter is 32 bits: at most 2^32 - 1 blocks after block 0.
  SHOAL_ASSERT(out.size() / kBlock < (std::uint64_t{1} << 32) - 1);

  Sealer s{out.data(), nonce, key, {}};
  std::uint8_t block0[kBlock];
  SHOAL_ASSERT(crypto_stream_chacha20_ietf(block0, sizeof block0, nonce.data(), key.data()) == 0);
  SHOAL_ASSERT(crypto_onetimeauth_poly1305_init(&s.mac, block0) == 0);
  sodium_memzero(block0, sizeof block0);
  SHOAL_ASSERT(crypto_onetimeauth_poly1305_update(&s.mac, ad.data(), ad.size()) == 0);
  SHOAL_ASSERT(crypto_onetimeauth_poly1305_update(&s.mac, kZeros, (16 - ad.size() % 16) % 16) == 0);

  std::size_t filled = 0;  // Plaintext bytes placed in `out` (copied, or pending in place from `done`).
  for (const ByteView part : parts) {
    SHOAL_ASSERT(filled + part.size() <= out.size());
    const std::uint8_t* src = part.data();
    std::size_t n = part.size();
    // Copy up to the next block boundary; then, if whole blocks remain, flush
    // what is copied and encrypt those blocks from the source.
    const std::size_t lead = std::min(n, (kBlock - filled % kBlock) % kBlock);
    if (lead > 0) std::memcpy(out.data() + filled, src, lead);
    filled += lead;
    src += lead;
    n -= lead;
    const std::size_t whole = n - n % kBlock;
    if (whole > 0) {
      s.encrypt(nullptr, filled - s.done);
      s.encrypt(src, whole);
      filled += whole;
      src += whole;
      n -= whole;
    }
    if (n > 0) std::memcpy(out.data() + filled, src, n);
    filled += n;
  }
  SHOAL_ASSERT(filled == out.size());
  s.encrypt(nullptr, filled - s.done);

  SHOAL_ASSERT(crypto_onetimeauth_poly1305_update(&s.mac, kZeros, (16 - out.size() % 16) % 16) == 0);
  std::uint8_t lengths[16];
  put_le64(lengths, ad.size());
  put_le64(lengths + 8, out.size());
  SHOAL_ASSERT(crypto_onetimeauth_poly1305_update(&s.mac, lengths, sizeof lengths) == 0);
  SHOAL_ASSERT(crypto_onetimeauth_poly1305_final(&s.mac, tag.data()) == 0);
}

}  // namespace shoal::transfer
