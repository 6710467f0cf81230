#pragma once
// node/agent/gossip_net.h: the gossip core's network, over libuv. Owns one UDP
// socket and one TCP listener on the same bind address, the inbound push-pull
// connections and the outbound stream requests. Seals everything it sends and
// drops (and counts) whatever does not open; the core only ever sees
// plaintext that passed the cluster key. Also owns the fault-injection filter
// that drops traffic to and from chosen peers for partition tests.
// Single-threaded: every method and callback runs on the loop thread.

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "base/address.h"
#include "base/crypto.h"
#include "base/random.h"
#include "base/result.h"
#include "gossip/types.h"
#include "node/agent/datagram.h"
#include "node/agent/limits.h"

namespace shoal::agent {

// Where GossipNet delivers what it received. Called from libuv callbacks.
class GossipNetHandler {
 public:
  virtual ~GossipNetHandler() = default;
  virtual void on_net_datagram(const Address& from, ByteView plaintext) = 0;
  // Returns the reply to send back, or an error to close the connection.
  virtual Result<Bytes> on_net_stream_request(const Address& from, ByteView payload) = 0;
  virtual void on_net_stream_result(std::uint64_t id, gossip::StreamOutcome outcome, ByteView reply) = 0;
};

struct NetCounters {
  DropCounters drops;
  std::uint64_t packets_in = 0;
  std::uint64_t packets_out = 0;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  std::uint64_t streams_in = 0;
  std::uint64_t streams_out = 0;
  std::uint64_t streams_failed = 0;
};

class GossipNet {
 public:
  // keyring must outlive this object; changes to it apply to the next packet.
  GossipNet(uv_loop_t* loop, const Keyring& keyring, Random& random, GossipNetHandler& handler);
  ~GossipNet();
  GossipNet(const GossipNet&) = delete;
  GossipNet& operator=(const GossipNet&) = delete;

  // Binds UDP and TCP on `bind` and starts receiving. `advertise` is sent
  // inside stream requests so peers know who is talking. On error nothing
  // is left listening; the message names the port and protocol in use.
  // Port 0 lets the kernel choose (tests); bound_address() then tells which,
  // and an advertise port of 0 is replaced by it.
  Status listen(const Address& bind, const Address& advertise);
  const Address& bound_address() const { return bound_; }
  const Address& advertise_address() const { return advertise_; }

  // Seals and sends; failures are counted, never reported (UDP is lossy anyway).
  void send(const gossip::Datagram& datagram);
  // Starts a TCP exchange; its outcome arrives via on_net_stream_result.
  // kReachability gives up after reachability_timeout, kPushPull after kPushPullTimeout.
  void start_stream(const gossip::StreamRequest& request, std::chrono::milliseconds reachability_timeout);

  // Fault injection: drop all traffic to and from these peers (empty = none).
  void set_dropped_peers(const std::vector<Address>& peers);
  // Accepted connections whose first byte is 'S' (the transfer channel's
  // preamble; gossip frames start with a 0x00 length byte) are handed over:
  // the callback owns a duplicate of the socket and gets the bytes read so far.
  void set_transfer_handoff(std::function<void(uv_os_sock_t fd, ByteView first_bytes)> handoff) {
    transfer_handoff_ = std::move(handoff);
  }
  // Closes every handle. Streams in flight report nothing after this.
  void close();
  const NetCounters& counters() const { return counters_; }

 struct Inbound;   // Public so the close callbacks can reach them; opaque elsewhere.
  struct Outbound;
  void erase_inbound(std::list<std::unique_ptr<Inbound>>::iterator it);
  void erase_outbound(std::list<std::unique_ptr<Outbound>>::iterator it);

 private:

  bool dropped(const Address& peer) const;
  static void on_alloc(uv_handle_t* handle, std::size_t suggested, uv_buf_t* buf);
  template <class Conn>
  static void on_alloc_conn(uv_handle_t* handle, std::size_t suggested, uv_buf_t* buf);
  static void on_udp_recv(uv_udp_t* udp, ssize_t nread, const uv_buf_t* buf, const sockaddr* addr, unsigned flags);
  static void on_connection(uv_stream_t* server, int status);
  void handle_inbound_read(Inbound& conn, ssize_t nread, const uv_buf_t* buf);
  void close_inbound(Inbound& conn, bool failed);
  void connect_outbound(Outbound& stream);
  void on_outbound_connected(Outbound& stream, int status);
  void handle_outbound_read(Outbound& stream, ssize_t nread, const uv_buf_t* buf);
  void finish_outbound(Outbound& stream, gossip::StreamOutcome outcome, ByteView reply);

  uv_loop_t* loop_;
  const Keyring& keyring_;
  Random& random_;
  GossipNetHandler& handler_;
  Address advertise_;
  Address bound_;
  uv_udp_t udp_{};
  uv_tcp_t tcp_{};
  bool udp_open_ = false;
  bool udp_is_ipv6_ = false;
  bool tcp_open_ = false;
  bool closing_ = false;
  std::set<std::string> dropped_peers_;
  std::size_t inbound_buffered_bytes_ = 0;
  std::list<std::unique_ptr<Inbound>> inbound_;
  std::list<std::unique_ptr<Outbound>> outbound_;
  NetCounters counters_;
  std::unique_ptr<char[]> read_buffer_;
  std::function<void(uv_os_sock_t fd, ByteView first_bytes)> transfer_handoff_;
};

}  // namespace shoal::agent
