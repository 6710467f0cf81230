// Tests for transfer/frame_seal.h: sealing from parts gives exactly the bytes
// libsodium's ChaCha20-Poly1305-IETF gives over the joined plaintext, for
// every way of cutting it (parts below, at and across 64-byte blocks), and
// libsodium opens it.

#include "transfer/frame_seal.h"

#include <gtest/gtest.h>
#include <sodium.h>

#include <algorithm>
#include <vector>

#include "base/crypto.h"
#include "base/random.h"

namespace shoal::transfer {
namespace {

struct Sealed {
  Bytes text;
  std::array<std::uint8_t, kSealTagBytes> tag{};
};

Sealed SealWithParts(const Bytes& plaintext, const std::vector<std::size_t>& cuts, ByteView ad,
                     const std::array<std::uint8_t, 12>& nonce, const std::array<std::uint8_t, 32>& key) {
  std::vector<ByteView> parts;
  std::size_t at = 0;
  for (const std::size_t cut : cuts) {
    parts.push_back(ByteView(plaintext).subspan(at, cut - at));
    at = cut;
  }
  parts.push_back(ByteView(plaintext).subspan(at));
  Sealed s;
  s.text.assign(plaintext.size(), 0xEE);  // Garbage where the ciphertext goes: all of it must be written.
  seal_parts(s.text, s.tag, parts, ad, nonce, key);
  return s;
}

Bytes Reference(const Bytes& plaintext, ByteView ad, const std::array<std::uint8_t, 12>& nonce,
                const std::array<std::uint8_t, 32>& key) {
  Bytes out(plaintext.size() + kSealTagBytes);
  unsigned long long written = 0;
  EXPECT_EQ(crypto_aead_chacha20poly1305_ietf_encrypt(out.data(), &written, plaintext.data(), plaintext.size(),
                                                      ad.data(), ad.size(), nullptr, nonce.data(), key.data()),
            0);
  EXPECT_EQ(written, out.size());
  return out;
}

TEST(FrameSealTest, EqualsLibsodiumForEveryKindOfCut) {
  crypto_init();
  Prng rng(42);
  std::array<std::uint8_t, 32> key{};
  std::array<std::uint8_t, 12> nonce{};
  rng.fill(key);
  rng.fill(nonce);
  const std::vector<std::size_t> sizes = {0, 1, 63, 64, 65, 127, 128, 1000, 16 * 1024, 16 * 1024 + 1,
                                          40000, 256 * 1024 + 1};
  int checked = 0;
  for (const std::size_t size : sizes) {
    Bytes plaintext(size);
    rng.fill(plaintext);
    for (const std::size_t ad_size : {std::size_t{0}, std::size_t{12}, std::size_t{17}}) {
      Bytes ad(ad_size);
      rng.fill(ad);
      const Bytes expected = Reference(plaintext, ad, nonce, key);
      // One part; a one-byte head then the rest (the channel's type byte); cuts
      // at and around block edges; many small parts; random cuts, empty parts included.
      std::vector<std::vector<std::size_t>> cut_sets = {{}};
      if (size >= 1) cut_sets.push_back({1});
      if (size >= 130) cut_sets.push_back({1, 64, 65, 129});
      if (size >= 200) cut_sets.push_back({63, 63, 128, 191});
      if (size >= 1000) {
        std::vector<std::size_t> small;
        for (std::size_t c = 7; c < 1000; c += 7) small.push_back(c);
        cut_sets.push_back(small);
      }
      for (int r = 0; r < 6; ++r) {
        std::vector<std::size_t> cuts;
        for (int i = 0; i < 1 + r; ++i) cuts.push_back(size == 0 ? 0 : rng.uniform(size + 1));
        std::sort(cuts.begin(), cuts.end());
        cut_sets.push_back(cuts);
      }
      for (const auto& cuts : cut_sets) {
        const Sealed s = SealWithParts(plaintext, cuts, ad, nonce, key);
        ASSERT_EQ(s.text, Bytes(expected.begin(), expected.begin() + static_cast<std::ptrdiff_t>(size)))
            << "size " << size << " ad " << ad_size;
        ASSERT_EQ(Bytes(s.tag.begin(), s.tag.end()),
                  Bytes(expected.begin() + static_cast<std::ptrdiff_t>(size), expected.end()))
            << "size " << size << " ad " << ad_size;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 300);
}

TEST(FrameSealTest, LibsodiumOpensItAndRefusesAFlippedBit) {
  crypto_init();
  Prng rng(7);
  std::array<std::uint8_t, 32> key{};
  std::array<std::uint8_t, 12> nonce{};
  rng.fill(key);
  Bytes plaintext(100000);
  rng.fill(plaintext);
  const std::uint8_t ad[12] = {1, 2, 3};
  const Sealed s = SealWithParts(plaintext, {1, 50001}, ByteView(ad, 12), nonce, key);
  Bytes opened(plaintext.size());
  EXPECT_EQ(crypto_aead_chacha20poly1305_ietf_decrypt_detached(opened.data(), nullptr, s.text.data(), s.text.size(),
                                                               s.tag.data(), ad, 12, nonce.data(), key.data()),
            0);
  EXPECT_EQ(opened, plaintext);
  Bytes flipped = s.text;
  flipped[77777] ^= 0x10;
  EXPECT_NE(crypto_aead_chacha20poly1305_ietf_decrypt_detached(opened.data(), nullptr, flipped.data(),
                                                               flipped.size(), s.tag.data(), ad, 12, nonce.data(),
                                                               key.data()),
            0);
}

}  // namespace
}  // namespace shoal::transfer
