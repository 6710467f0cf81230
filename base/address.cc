#include "base/address.h"

#include <charconv>

namespace shoal {

std::string Address::to_string() const {
  if (is_ipv6()) {
    return "[" + host + "]:" + std::to_string(port);
  }
  return host + ":" + std::to_string(port);
}

Result<Address> parse_address(std::string_view text) {
  const std::string shown(text);
  std::string_view host;
  std::string_view port_text;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) {
      return make_error(Code::kInvalidArgument, "address '" + shown + "': missing ']' after IPv6 host");
    }
    host = text.substr(1, close - 1);
    const auto rest = text.substr(close + 1);
    if (!rest.starts_with(':')) {
      return make_error(Code::kInvalidArgument, "address '" + shown + "': missing port (use [HOST]:PORT)");
    }
    port_text = rest.substr(1);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return make_error(Code::kInvalidArgument, "address '" + shown + "': missing port (use HOST:PORT)");
    }
    host = text.substr(0, colon);
    if (host.find(':') != std::string_view::npos) {
      return make_error(Code::kInvalidArgument,
                        "address '" + shown + "': IPv6 hosts must be bracketed, as in [::1]:7946");
    }
    port_text = text.substr(colon + 1);
  }
  if (host.empty()) {
    return make_error(Code::kInvalidArgument, "address '" + shown + "': empty host");
  }
  unsigned port = 0;
  const auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || ptr != port_text.data() + port_text.size() || port > 65535) {
    return make_error(Code::kInvalidArgument, "address '" + shown + "': port must be a number 0-65535");
  }
  return Address{std::string(host), static_cast<std::uint16_t>(port)};
}

}  // namespace shoal
