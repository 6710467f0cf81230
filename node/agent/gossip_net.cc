#include "node/agent/gossip_net.h"

#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstring>

#include "base/assert.h"
#include "node/agent/stream_wire.h"
#include "node/agent/uv_util.h"

namespace shoal::agent {

// One accepted push-pull connection: read a request frame, answer, close.
struct GossipNet::Inbound {
  GossipNet* net = nullptr;
  std::list<std::unique_ptr<Inbound>>::iterator self;
  uv_tcp_t tcp{};
  uv_timer_t timer{};
  uv_write_t write{};
  FrameDecoder decoder{kFrameBytesMax};
  std::size_t accounted_bytes = 0;  // This connection's share of inbound_buffered_bytes_.
  Bytes out;
  int open_handles = 0;
  bool closing = false;
};

// One outbound stream request from the core.
struct GossipNet::Outbound {
  GossipNet* net = nullptr;
  std::list<std::unique_ptr<Outbound>>::iterator self;
  std::uint64_t id = 0;
  gossip::StreamKind kind = gossip::StreamKind::kPushPull;
  Address to;
  Bytes out;
  uv_tcp_t tcp{};
  uv_timer_t timer{};
  uv_connect_t connect{};
  uv_write_t write{};
  FrameDecoder decoder{kFrameBytesMax};
  int open_handles = 0;
  bool connecting = false;
  bool filtered = false;  // Held back by fault injection, as if behind a partition.
  bool done = false;
};

namespace {

void on_inbound_closed(uv_handle_t* handle);
void on_outbound_closed(uv_handle_t* handle);

sockaddr_storage v4_mapped(const sockaddr_storage& v4) {
  const auto* in4 = reinterpret_cast<const sockaddr_in*>(&v4);
  sockaddr_storage out{};
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&out);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = in4->sin_port;
  in6->sin6_addr.s6_addr[10] = 0xff;
  in6->sin6_addr.s6_addr[11] = 0xff;
  std::memcpy(&in6->sin6_addr.s6_addr[12], &in4->sin_addr, 4);
  return out;
}

}  // namespace

GossipNet::GossipNet(uv_loop_t* loop, const Keyring& keyring, Random& random, GossipNetHandler& handler)
    : loop_(loop),
      keyring_(keyring),
      random_(random),
      handler_(handler),
      read_buffer_(new char[kDatagramReceiveBufferBytes]) {}

GossipNet::~GossipNet() {
  // The loop must have run every close callback before the net goes away.
  SHOAL_ASSERT(inbound_.empty());
  SHOAL_ASSERT(outbound_.empty());
}

Status GossipNet::listen(const Address& bind, const Address& advertise) {
  advertise_ = advertise;
  auto addr = to_sockaddr(bind);
  if (!addr) {
    return make_error(Code::kInvalidArgument,
                      "--bind " + bind.to_string() + ": " + addr.error().message + "; use an IP address");
  }
  const auto* sa = reinterpret_cast<const sockaddr*>(&*addr);

  SHOAL_ASSERT(uv_udp_init(loop_, &udp_) == 0);
  udp_.data = this;
  udp_open_ = true;
  // No UV_UDP_REUSEADDR: a port held by another process must fail here.
  if (const int rc = uv_udp_bind(&udp_, sa, 0); rc != 0) {
    return make_error(from_uv(rc, "").code, "--bind " + bind.to_string() + ": cannot bind the UDP port (" +
                                                uv_strerror(rc) + "); stop the process using it or choose another --bind");
  }
  // Port 0 (tests): the kernel picks the UDP port and TCP takes the same one.
  sockaddr_storage bound{};
  int bound_len = sizeof bound;
  SHOAL_ASSERT(uv_udp_getsockname(&udp_, reinterpret_cast<sockaddr*>(&bound), &bound_len) == 0);
  bound_ = from_sockaddr(reinterpret_cast<const sockaddr*>(&bound));
  udp_is_ipv6_ = bound.ss_family == AF_INET6;
  bound_.host = bind.host;
  if (advertise_.port == 0) {
    advertise_.port = bound_.port;
  }
  auto tcp_addr = to_sockaddr(bound_);
  SHOAL_ASSERT(tcp_addr.has_value());
  SHOAL_ASSERT(uv_tcp_init(loop_, &tcp_) == 0);
  tcp_.data = this;
  tcp_open_ = true;
  int rc = uv_tcp_bind(&tcp_, reinterpret_cast<const sockaddr*>(&*tcp_addr), 0);
  if (rc == 0) {
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(&tcp_), 128, on_connection);
  }
  if (rc != 0) {
    return make_error(from_uv(rc, "").code, "--bind " + bind.to_string() + ": cannot listen on the TCP port (" +
                                                uv_strerror(rc) + "); stop the process using it or choose another --bind");
  }
  rc = uv_udp_recv_start(&udp_, on_alloc, on_udp_recv);
  if (rc != 0) {
    return std::unexpected(from_uv(rc, "udp_recv_start"));
  }
  return ok_status();
}

void GossipNet::close() {
  closing_ = true;
  if (udp_open_) {
    close_handle(reinterpret_cast<uv_handle_t*>(&udp_), nullptr);
  }
  if (tcp_open_) {
    close_handle(reinterpret_cast<uv_handle_t*>(&tcp_), nullptr);
  }
  for (auto& conn : inbound_) {
    close_inbound(*conn, false);
  }
  for (auto& stream : outbound_) {
    if (!stream->done) {
      finish_outbound(*stream, gossip::StreamOutcome::kFailed, {});
    }
  }
}

// All reads share one buffer: libuv consumes it in the read callback before
// it asks for the next one, and every consumer copies what it keeps.
void GossipNet::on_alloc(uv_handle_t* handle, std::size_t, uv_buf_t* buf) {
  auto* net = static_cast<GossipNet*>(handle->data);
  buf->base = net->read_buffer_.get();
  buf->len = kDatagramReceiveBufferBytes;
}

template <class Conn>
void GossipNet::on_alloc_conn(uv_handle_t* handle, std::size_t, uv_buf_t* buf) {
  auto* conn = static_cast<Conn*>(handle->data);
  buf->base = conn->net->read_buffer_.get();
  buf->len = kDatagramReceiveBufferBytes;
}

bool GossipNet::dropped(const Address& peer) const {
  return !dropped_peers_.empty() && dropped_peers_.count(peer.to_string()) > 0;
}

void GossipNet::set_dropped_peers(const std::vector<Address>& peers) {
  dropped_peers_.clear();
  for (const auto& p : peers) {
    dropped_peers_.insert(p.to_string());
  }
  spdlog::warn("fault injection: dropping all traffic with {} peer(s)", dropped_peers_.size());
  // Streams held back by the filter go ahead once their peer is reachable again.
  for (auto& stream : outbound_) {
    if (stream->filtered && !stream->done && !dropped(stream->to)) {
      connect_outbound(*stream);
    }
  }
}

// --- datagrams ---------------------------------------------------------------

void GossipNet::send(const gossip::Datagram& datagram) {
  if (closing_ || !udp_open_) {
    return;
  }
  if (dropped(datagram.to)) {
    counters_.drops.add(DropReason::kFiltered);
    return;
  }
  if (datagram.payload.size() > kDatagramPlaintextBytesMax) {
    // The core promised to respect its budget; refusing here keeps a bug from
    // producing datagrams every peer would drop as oversized.
    spdlog::error("gossip core produced a {}-byte datagram (limit {}); dropped", datagram.payload.size(),
                  kDatagramPlaintextBytesMax);
    counters_.drops.add(DropReason::kOversized);
    return;
  }
  auto addr = to_sockaddr(datagram.to);
  if (!addr) {
    counters_.drops.add(DropReason::kSendFailed);
    return;
  }
  if (udp_is_ipv6_ && addr->ss_family == AF_INET) {
    addr = v4_mapped(*addr);  // A dual-stack socket ([::]) reaches IPv4 peers through mapped addresses.
  }
  Bytes sealed = seal_datagram(keyring_, random_, datagram.payload);
  uv_buf_t buf = uv_buf_init(reinterpret_cast<char*>(sealed.data()), static_cast<unsigned>(sealed.size()));
  // try_send copies into the kernel at once: no request to keep alive, and a
  // full socket buffer drops the datagram as the network would.
  const int rc = uv_udp_try_send(&udp_, &buf, 1, reinterpret_cast<const sockaddr*>(&*addr));
  if (rc < 0) {
    counters_.drops.add(DropReason::kSendFailed);
    return;
  }
  ++counters_.packets_out;
  counters_.bytes_out += sealed.size();
}

void GossipNet::on_udp_recv(uv_udp_t* udp, ssize_t nread, const uv_buf_t* buf, const sockaddr* addr,
                            unsigned flags) {
  auto* net = static_cast<GossipNet*>(udp->data);
  if (net->closing_ || addr == nullptr || nread < 0) {
    return;  // Nothing more to read, or a transient socket error (e.g. ICMP).
  }
  ++net->counters_.packets_in;
  net->counters_.bytes_in += static_cast<std::uint64_t>(nread);
  if ((flags & UV_UDP_PARTIAL) != 0) {
    net->counters_.drops.add(DropReason::kOversized);
    return;
  }
  const Address from = from_sockaddr(addr);
  if (net->dropped(from)) {
    net->counters_.drops.add(DropReason::kFiltered);
    return;
  }
  const ByteView sealed(reinterpret_cast<const std::uint8_t*>(buf->base), static_cast<std::size_t>(nread));
  auto plain = open_datagram(net->keyring_, sealed);
  if (!plain) {
    net->counters_.drops.add(plain.error());
    return;
  }
  net->handler_.on_net_datagram(from, *plain);
}

// --- inbound streams ---------------------------------------------------------

namespace {

void on_inbound_closed(uv_handle_t* handle) {
  auto* conn = static_cast<GossipNet::Inbound*>(handle->data);
  SHOAL_ASSERT(conn->open_handles > 0);
  if (--conn->open_handles == 0) {
    conn->net->erase_inbound(conn->self);
  }
}

}  // namespace

void GossipNet::on_connection(uv_stream_t* server, int status) {
  auto* net = static_cast<GossipNet*>(server->data);
  if (status < 0 || net->closing_) {
    return;
  }
  auto conn = std::make_unique<Inbound>();
  Inbound& c = *conn;
  c.net = net;
  SHOAL_ASSERT(uv_tcp_init(net->loop_, &c.tcp) == 0);
  c.tcp.data = &c;
  c.open_handles = 1;
  net->inbound_.push_front(std::move(conn));
  c.self = net->inbound_.begin();
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c.tcp)) != 0) {
    net->close_inbound(c, true);
    return;
  }
  if (net->inbound_.size() > kStreamConnectionsMax) {
    ++net->counters_.streams_failed;
    net->close_inbound(c, false);
    return;
  }
  SHOAL_ASSERT(uv_timer_init(net->loop_, &c.timer) == 0);
  c.timer.data = &c;
  c.open_handles = 2;
  uv_timer_start(
      &c.timer,
      [](uv_timer_t* timer) {
        auto* self = static_cast<Inbound*>(timer->data);
        self->net->close_inbound(*self, true);
      },
      static_cast<std::uint64_t>(kStreamIdleTimeout.count()), 0);
  const int rc = uv_read_start(reinterpret_cast<uv_stream_t*>(&c.tcp), on_alloc_conn<Inbound>,
                               [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
                                 auto* self = static_cast<Inbound*>(stream->data);
                                 self->net->handle_inbound_read(*self, nread, buf);
                               });
  if (rc != 0) {
    net->close_inbound(c, true);
  }
}

void GossipNet::handle_inbound_read(Inbound& conn, ssize_t nread, const uv_buf_t* buf) {
  if (conn.closing || nread == 0) {
    return;
  }
  if (nread < 0) {
    // A reachability check connects and closes without sending: a clean EOF
    // on an empty connection is its normal end, anything else a failure.
    close_inbound(conn, !(nread == UV_EOF && conn.decoder.buffered() == 0));
    return;
  }
  const ByteView bytes(reinterpret_cast<const std::uint8_t*>(buf->base), static_cast<std::size_t>(nread));
  if (transfer_handoff_ && conn.decoder.buffered() == 0 && bytes[0] == 'S') {
    // A transfer channel (node/agent/transfer_net.h): hand the socket over.
    uv_os_fd_t fd = -1;
    const int dup_fd = uv_fileno(reinterpret_cast<uv_handle_t*>(&conn.tcp), &fd) == 0 ? ::dup(fd) : -1;
    close_inbound(conn, dup_fd < 0);
    if (dup_fd >= 0) {
      transfer_handoff_(dup_fd, bytes);
    }
    return;
  }
  // Each connection may buffer one frame; together they stay within a budget,
  // so many slow senders cannot add up to kStreamConnectionsMax full frames.
  if (inbound_buffered_bytes_ + bytes.size() > kInboundBufferedBytesMax) {
    spdlog::warn("push-pull: inbound streams hold {} bytes; refusing more", inbound_buffered_bytes_);
    close_inbound(conn, true);
    return;
  }
  const std::size_t before = conn.decoder.buffered();
  if (auto fed = conn.decoder.feed(bytes); !fed) {
    spdlog::debug("push-pull: {}", fed.error().message);
    close_inbound(conn, true);
    return;
  }
  inbound_buffered_bytes_ += conn.decoder.buffered() - before;
  conn.accounted_bytes += conn.decoder.buffered() - before;
  auto frame = conn.decoder.next();
  if (!frame) {
    return;
  }
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&conn.tcp));
  auto request = open_stream_request(keyring_, *frame);
  if (!request) {
    if (request.error().code == Code::kCorruption) {
      counters_.drops.add(DropReason::kStreamNoKey);
    }
    spdlog::debug("push-pull request dropped: {}", request.error().message);
    close_inbound(conn, true);
    return;
  }
  if (dropped(request->from)) {
    counters_.drops.add(DropReason::kFiltered);
    close_inbound(conn, false);
    return;
  }
  auto reply = handler_.on_net_stream_request(request->from, request->payload);
  if (!reply) {
    spdlog::debug("push-pull from {} refused: {}", request->from.to_string(), reply.error().message);
    close_inbound(conn, true);
    return;
  }
  ++counters_.streams_in;
  Bytes sealed = seal_stream_reply(keyring_, random_, *reply);
  if (sealed.size() > kFrameBytesMax) {
    spdlog::error("push-pull reply of {} bytes exceeds the {}-byte frame limit; not sent", sealed.size(),
                  kFrameBytesMax);
    close_inbound(conn, true);
    return;
  }
  conn.out = encode_frame(sealed);
  uv_buf_t out = uv_buf_init(reinterpret_cast<char*>(conn.out.data()), static_cast<unsigned>(conn.out.size()));
  conn.write.data = &conn;
  const int rc = uv_write(&conn.write, reinterpret_cast<uv_stream_t*>(&conn.tcp), &out, 1,
                          [](uv_write_t* req, int) {
                            auto* self = static_cast<Inbound*>(req->data);
                            self->net->close_inbound(*self, false);
                          });
  if (rc != 0) {
    close_inbound(conn, true);
  }
}

void GossipNet::close_inbound(Inbound& conn, bool failed) {
  if (conn.closing) {
    return;
  }
  conn.closing = true;
  SHOAL_ASSERT(inbound_buffered_bytes_ >= conn.accounted_bytes);
  inbound_buffered_bytes_ -= conn.accounted_bytes;
  conn.accounted_bytes = 0;
  if (failed) {
    ++counters_.streams_failed;
  }
  if (conn.open_handles == 2) {
    close_handle(reinterpret_cast<uv_handle_t*>(&conn.timer), on_inbound_closed);
  }
  close_handle(reinterpret_cast<uv_handle_t*>(&conn.tcp), on_inbound_closed);
}

void GossipNet::erase_inbound(std::list<std::unique_ptr<Inbound>>::iterator it) { inbound_.erase(it); }

// --- outbound streams --------------------------------------------------------

namespace {

void on_outbound_closed(uv_handle_t* handle) {
  auto* stream = static_cast<GossipNet::Outbound*>(handle->data);
  SHOAL_ASSERT(stream->open_handles > 0);
  if (--stream->open_handles == 0) {
    stream->net->erase_outbound(stream->self);
  }
}

gossip::StreamOutcome outcome_of(int status) {
  switch (status) {
    case UV_ECONNREFUSED: return gossip::StreamOutcome::kRefused;
    case UV_ETIMEDOUT: return gossip::StreamOutcome::kTimeout;
    default: return gossip::StreamOutcome::kFailed;
  }
}

}  // namespace

void GossipNet::start_stream(const gossip::StreamRequest& request, std::chrono::milliseconds reachability_timeout) {
  if (closing_) {
    return;
  }
  if (outbound_.size() >= kOutboundStreamsMax) {
    ++counters_.streams_failed;
    handler_.on_net_stream_result(request.id, gossip::StreamOutcome::kFailed, {});
    return;
  }
  ++counters_.streams_out;
  auto owned = std::make_unique<Outbound>();
  Outbound& s = *owned;
  s.net = this;
  s.id = request.id;
  s.kind = request.kind;
  s.to = request.to;
  outbound_.push_front(std::move(owned));
  s.self = outbound_.begin();

  SHOAL_ASSERT(uv_timer_init(loop_, &s.timer) == 0);
  s.timer.data = &s;
  s.open_handles = 1;
  const auto timeout = request.kind == gossip::StreamKind::kReachability ? reachability_timeout : kPushPullTimeout;
  uv_timer_start(
      &s.timer,
      [](uv_timer_t* timer) {
        auto* self = static_cast<Outbound*>(timer->data);
        self->net->finish_outbound(*self, gossip::StreamOutcome::kTimeout, {});
      },
      static_cast<std::uint64_t>(std::max<std::int64_t>(1, timeout.count())), 0);

  if (request.kind == gossip::StreamKind::kPushPull) {
    Bytes sealed = seal_stream_request(keyring_, random_, advertise_, request.payload);
    if (sealed.size() > kFrameBytesMax) {
      spdlog::error("push-pull request of {} bytes exceeds the {}-byte frame limit; not sent", sealed.size(),
                    kFrameBytesMax);
      finish_outbound(s, gossip::StreamOutcome::kFailed, {});
      return;
    }
    s.out = encode_frame(sealed);
  }
  // A filtered peer is silent, as behind a partition: the connect waits
  // (like a SYN being retransmitted) until the partition heals or the timer expires.
  if (dropped(request.to)) {
    counters_.drops.add(DropReason::kFiltered);
    s.filtered = true;
    return;
  }
  connect_outbound(s);
}

void GossipNet::connect_outbound(Outbound& s) {
  s.filtered = false;
  auto addr = to_sockaddr(s.to);
  if (!addr) {
    finish_outbound(s, gossip::StreamOutcome::kFailed, {});
    return;
  }
  SHOAL_ASSERT(uv_tcp_init(loop_, &s.tcp) == 0);
  s.tcp.data = &s;
  s.open_handles = 2;
  uv_tcp_nodelay(&s.tcp, 1);
  s.connect.data = &s;
  s.connecting = true;
  const int rc = uv_tcp_connect(&s.connect, &s.tcp, reinterpret_cast<const sockaddr*>(&*addr),
                                [](uv_connect_t* req, int status) {
                                  auto* self = static_cast<Outbound*>(req->data);
                                  self->connecting = false;
                                  self->net->on_outbound_connected(*self, status);
                                });
  if (rc != 0) {
    s.connecting = false;
    finish_outbound(s, outcome_of(rc), {});
  }
}

void GossipNet::on_outbound_connected(Outbound& s, int status) {
  if (s.done) {
    return;  // Timed out or closed meanwhile (status is then UV_ECANCELED).
  }
  if (status != 0) {
    finish_outbound(s, outcome_of(status), {});
    return;
  }
  if (s.kind == gossip::StreamKind::kReachability) {
    finish_outbound(s, gossip::StreamOutcome::kConnected, {});
    return;
  }
  uv_buf_t out = uv_buf_init(reinterpret_cast<char*>(s.out.data()), static_cast<unsigned>(s.out.size()));
  s.write.data = &s;
  int rc = uv_write(&s.write, reinterpret_cast<uv_stream_t*>(&s.tcp), &out, 1, [](uv_write_t* req, int write_status) {
    auto* self = static_cast<Outbound*>(req->data);
    if (write_status != 0 && !self->done) {
      self->net->finish_outbound(*self, gossip::StreamOutcome::kFailed, {});
    }
  });
  if (rc == 0) {
    rc = uv_read_start(reinterpret_cast<uv_stream_t*>(&s.tcp), on_alloc_conn<Outbound>,
                       [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
                         auto* self = static_cast<Outbound*>(stream->data);
                         self->net->handle_outbound_read(*self, nread, buf);
                       });
  }
  if (rc != 0) {
    finish_outbound(s, gossip::StreamOutcome::kFailed, {});
  }
}

void GossipNet::handle_outbound_read(Outbound& s, ssize_t nread, const uv_buf_t* buf) {
  if (s.done || nread == 0) {
    return;
  }
  if (nread < 0) {
    finish_outbound(s, gossip::StreamOutcome::kFailed, {});  // Closed before a whole reply.
    return;
  }
  const ByteView bytes(reinterpret_cast<const std::uint8_t*>(buf->base), static_cast<std::size_t>(nread));
  if (auto fed = s.decoder.feed(bytes); !fed) {
    finish_outbound(s, gossip::StreamOutcome::kFailed, {});
    return;
  }
  auto frame = s.decoder.next();
  if (!frame) {
    return;
  }
  auto reply = open_stream_reply(keyring_, *frame);
  if (!reply) {
    counters_.drops.add(DropReason::kStreamNoKey);
    finish_outbound(s, gossip::StreamOutcome::kFailed, {});
    return;
  }
  finish_outbound(s, gossip::StreamOutcome::kReplied, *reply);
}

void GossipNet::finish_outbound(Outbound& s, gossip::StreamOutcome outcome, ByteView reply) {
  if (s.done) {
    return;
  }
  s.done = true;
  if (outcome != gossip::StreamOutcome::kReplied && outcome != gossip::StreamOutcome::kConnected) {
    ++counters_.streams_failed;
  }
  close_handle(reinterpret_cast<uv_handle_t*>(&s.timer), on_outbound_closed);
  if (s.open_handles == 2) {
    // Closing a connecting handle cancels the connect (callback gets UV_ECANCELED).
    close_handle(reinterpret_cast<uv_handle_t*>(&s.tcp), on_outbound_closed);
  }
  if (!closing_) {
    handler_.on_net_stream_result(s.id, outcome, reply);
  }
}

void GossipNet::erase_outbound(std::list<std::unique_ptr<Outbound>>::iterator it) { outbound_.erase(it); }

}  // namespace shoal::agent
