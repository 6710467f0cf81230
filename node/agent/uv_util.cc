#include "node/agent/uv_util.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <cstring>

namespace shoal::agent {

Error from_uv(int rc, std::string_view what) {
  Code code = Code::kIOError;
  switch (rc) {
    case UV_EADDRINUSE: code = Code::kAlreadyExists; break;
    case UV_EACCES:
    case UV_EPERM: code = Code::kPermissionDenied; break;
    case UV_EINVAL:
    case UV_EADDRNOTAVAIL:
    case UV_EAFNOSUPPORT: code = Code::kInvalidArgument; break;
    case UV_ECONNREFUSED:
    case UV_ECONNRESET:
    case UV_EAGAIN:
    case UV_ENOBUFS:
    case UV_EHOSTUNREACH:
    case UV_ENETUNREACH: code = Code::kUnavailable; break;
    case UV_ETIMEDOUT: code = Code::kDeadlineExceeded; break;
    case UV_EMFILE:
    case UV_ENFILE:
    case UV_ENOMEM: code = Code::kResourceExhausted; break;
    default: break;
  }
  return Error{code, std::string(what) + ": " + uv_strerror(rc)};
}

Result<sockaddr_storage> to_sockaddr(const Address& address) {
  sockaddr_storage out{};
  if (address.is_ipv6()) {
    const int rc = uv_ip6_addr(address.host.c_str(), address.port, reinterpret_cast<sockaddr_in6*>(&out));
    if (rc != 0) {
      return make_error(Code::kInvalidArgument, "not an IPv6 address: " + address.host);
    }
    return out;
  }
  in_addr probe{};
  if (inet_pton(AF_INET, address.host.c_str(), &probe) != 1) {
    return make_error(Code::kInvalidArgument, "not an IP address: " + address.host);
  }
  const int rc = uv_ip4_addr(address.host.c_str(), address.port, reinterpret_cast<sockaddr_in*>(&out));
  if (rc != 0) {
    return make_error(Code::kInvalidArgument, "not an IPv4 address: " + address.host);
  }
  return out;
}

Address from_sockaddr(const sockaddr* address) {
  char text[INET6_ADDRSTRLEN] = {};
  if (address->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(address);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      in_addr v4{};
      std::memcpy(&v4, &in6->sin6_addr.s6_addr[12], 4);
      inet_ntop(AF_INET, &v4, text, sizeof text);
    } else {
      inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof text);
    }
    return Address{text, ntohs(in6->sin6_port)};
  }
  if (address->sa_family == AF_INET) {
    const auto* in4 = reinterpret_cast<const sockaddr_in*>(address);
    inet_ntop(AF_INET, &in4->sin_addr, text, sizeof text);
    return Address{text, ntohs(in4->sin_port)};
  }
  return Address{"unknown", 0};
}

Result<Address> resolve_address(const Address& address) {
  if (to_sockaddr(address)) {
    return address;
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* result = nullptr;
  const int rc = getaddrinfo(address.host.c_str(), nullptr, &hints, &result);
  if (rc != 0 || result == nullptr) {
    return make_error(Code::kNotFound, "cannot resolve " + address.host + ": " + gai_strerror(rc));
  }
  Address resolved = from_sockaddr(result->ai_addr);
  freeaddrinfo(result);
  resolved.port = address.port;
  return resolved;
}

bool is_unspecified(const Address& address) {
  return address.host == "0.0.0.0" || address.host == "::" || address.host == "0:0:0:0:0:0:0:0";
}

Instant monotonic_now() { return instant_from_us(static_cast<std::int64_t>(uv_hrtime() / 1000)); }

void close_handle(uv_handle_t* handle, uv_close_cb cb) {
  if (handle->loop != nullptr && !uv_is_closing(handle)) {
    uv_close(handle, cb);
  }
}

}  // namespace shoal::agent
