#pragma once
// base/address.h: a network endpoint as text host plus port. Parses
// "host:port", "1.2.3.4:port" and "[v6::addr]:port"; a missing port is an
// error, never a silent default. No name resolution happens here.

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"

namespace shoal {

struct Address {
  std::string host;  // IPv4/IPv6 literal or name, without brackets.
  std::uint16_t port = 0;

  bool is_ipv6() const { return host.find(':') != std::string::npos; }
  std::string to_string() const;  // Brackets IPv6 hosts.
  auto operator<=>(const Address&) const = default;
};

// REQUIRES nothing; returns InvalidArgument naming what is wrong.
Result<Address> parse_address(std::string_view text);

}  // namespace shoal
