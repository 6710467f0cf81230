#pragma once
// node/agent/uv_util.h: the boundary between libuv and shoal's vocabulary.
// Converts libuv's negative error ints to Error in one place (from_uv), socket
// addresses to and from Address, and the loop's clock to Instant.

#include <sys/socket.h>
#include <uv.h>

#include <string_view>

#include "base/address.h"
#include "base/result.h"
#include "base/time.h"

namespace shoal::agent {

Error from_uv(int rc, std::string_view what);

// REQUIRES: host is an IPv4 or IPv6 literal; InvalidArgument otherwise.
Result<sockaddr_storage> to_sockaddr(const Address& address);
// IPv4-mapped IPv6 addresses (from dual-stack sockets) come back as IPv4.
Address from_sockaddr(const sockaddr* address);
// Resolves a host name to a literal address (blocking getaddrinfo); literals
// are returned unchanged. Used for operator-given join addresses only.
Result<Address> resolve_address(const Address& address);
// True for 0.0.0.0 and ::, which cannot be advertised to peers.
bool is_unspecified(const Address& address);

// The monotonic time of the loop as an Instant (microseconds, uv_hrtime).
Instant monotonic_now();

// Closes a handle if it is open and not already closing; cb may be null.
void close_handle(uv_handle_t* handle, uv_close_cb cb);

}  // namespace shoal::agent
