#include "node/agent/datagram.h"

#include "base/assert.h"
#include "node/agent/limits.h"

namespace shoal::agent {

std::string_view drop_reason_name(DropReason reason) {
  switch (reason) {
    case DropReason::kTooShort: return "too_short";
    case DropReason::kOversized: return "oversized";
    case DropReason::kNoKey: return "no_key";
    case DropReason::kDecodeError: return "decode_error";
    case DropReason::kFiltered: return "filtered";
    case DropReason::kSendFailed: return "send_failed";
    case DropReason::kStreamNoKey: return "stream_no_key";
  }
  return "unknown";
}

Bytes seal_datagram(const Keyring& keyring, Random& random, ByteView plaintext) {
  SHOAL_ASSERT(plaintext.size() <= kDatagramPlaintextBytesMax);
  Bytes sealed = seal(keyring.primary(), random, as_bytes(kDatagramAad), plaintext);
  SHOAL_ASSERT(sealed.size() == plaintext.size() + kSealOverheadBytes);
  return sealed;
}

std::expected<Bytes, DropReason> open_datagram(const Keyring& keyring, ByteView sealed) {
  // Size checks come first so that no work is spent on bytes we would refuse anyway.
  if (sealed.size() > kDatagramBytesMax) {
    return std::unexpected(DropReason::kOversized);
  }
  if (sealed.size() < kSealOverheadBytes) {
    return std::unexpected(DropReason::kTooShort);
  }
  auto opened = open(keyring, as_bytes(kDatagramAad), sealed);
  if (!opened) {
    return std::unexpected(DropReason::kNoKey);
  }
  SHOAL_ASSERT(opened->size() + kSealOverheadBytes == sealed.size());
  return std::move(*opened);
}

}  // namespace shoal::agent
