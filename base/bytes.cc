#include "base/bytes.h"

#include <sodium.h>

namespace shoal {

std::string to_hex(ByteView bytes) {
  std::string out(bytes.size() * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), bytes.data(), bytes.size());
  out.pop_back();
  return out;
}

Result<Bytes> from_hex(std::string_view text) {
  Bytes out(text.size() / 2 + 1);
  size_t len = 0;
  const char* end = nullptr;
  if (sodium_hex2bin(out.data(), out.size(), text.data(), text.size(), nullptr, &len, &end) != 0 ||
      end != text.data() + text.size()) {
    return make_error(Code::kInvalidArgument, "not a hex string");
  }
  out.resize(len);
  return out;
}

std::string to_base64(ByteView bytes) {
  const int variant = sodium_base64_VARIANT_ORIGINAL;
  std::string out(sodium_base64_encoded_len(bytes.size(), variant), '\0');
  sodium_bin2base64(out.data(), out.size(), bytes.data(), bytes.size(), variant);
  out.resize(out.size() - 1);  // Drop the terminating NUL libsodium writes.
  return out;
}

Result<Bytes> from_base64(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.remove_suffix(1);
  }
  Bytes out(text.size() / 4 * 3 + 3);
  size_t len = 0;
  const char* end = nullptr;
  if (sodium_base642bin(out.data(), out.size(), text.data(), text.size(), nullptr, &len, &end,
                        sodium_base64_VARIANT_ORIGINAL) != 0 ||
      end != text.data() + text.size()) {
    return make_error(Code::kInvalidArgument, "not valid base64");
  }
  out.resize(len);
  return out;
}

}  // namespace shoal
