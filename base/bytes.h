#pragma once
// base/bytes.h: byte buffers and views, hex and base64 text forms.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace shoal {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

inline ByteView as_bytes(std::string_view s) {
  return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}
inline std::string_view as_string_view(ByteView b) {
  return std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
}

std::string to_hex(ByteView bytes);
Result<Bytes> from_hex(std::string_view text);
std::string to_base64(ByteView bytes);
Result<Bytes> from_base64(std::string_view text);

}  // namespace shoal
