#pragma once
// transfer/frame_seal.h: seals one channel frame whose plaintext is given in
// parts, writing the ciphertext straight into the frame. The AEAD is RFC 8439
// ChaCha20-Poly1305 (IETF), byte for byte what
// crypto_aead_chacha20poly1305_ietf_encrypt produces over the concatenated
// parts, composed from libsodium's ChaCha20 stream and Poly1305 primitives so
// that a large part (a chunk) is encrypted from where it lies instead of being
// copied into the frame first and encrypted there.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "base/bytes.h"

namespace shoal::transfer {

inline constexpr std::size_t kSealTagBytes = 16;

// Encrypts parts[0] || parts[1] || ... into `out` (exactly their total size)
// and writes the 16-byte tag to `tag`, with associated data `ad`. Parts of at
// least 64 bytes are read in place; smaller ones and the unaligned edges of
// large ones are copied into `out` first. `out` must not overlap any part.
void seal_parts(std::span<std::uint8_t> out, std::span<std::uint8_t, kSealTagBytes> tag,
                std::span<const ByteView> parts, ByteView ad, const std::array<std::uint8_t, 12>& nonce,
                const std::array<std::uint8_t, 32>& key);

}  // namespace shoal::transfer
