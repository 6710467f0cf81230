// node/agent/transfer_net.cc: the libuv driver of TransferConnection. Every
// socket event ends in pump(), which is the driver loop of docs/protocol.md:
// transmit while the write queue and the token bucket allow, handle events,
// start or stop reading by wants_bytes(), arm the timer at next_deadline(),
// and close once a failed or closed channel has flushed.

#include "node/agent/transfer_net.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <map>

#include "base/assert.h"
#include "node/agent/uv_util.h"

namespace shoal::agent {

std::string_view transfer_state_name(TransferState state) {
  switch (state) {
    case TransferState::kConnecting: return "connecting";
    case TransferState::kActive: return "active";
    case TransferState::kRetrying: return "retrying";
    case TransferState::kDone: return "done";
    case TransferState::kFailed: return "failed";
  }
  return "unknown";
}

std::string_view transfer_event_name(TransferEventKind kind) {
  switch (kind) {
    case TransferEventKind::kStarted: return "transfer_started";
    case TransferEventKind::kProgress: return "transfer_progress";
    case TransferEventKind::kRetrying: return "transfer_retrying";
    case TransferEventKind::kCompleted: return "transfer_completed";
    case TransferEventKind::kFailed: return "transfer_failed";
  }
  return "transfer_unknown";
}

namespace {

// Codes a new connection may cure (docs/protocol.md, 2.7 and 3.4).
bool retryable(Code code) {
  switch (code) {
    case Code::kAborted:
    case Code::kDeadlineExceeded:
    case Code::kUnavailable:
    case Code::kIOError:
    case Code::kResourceExhausted:
      return true;
    default:
      return false;
  }
}

}  // namespace

struct TransferNet::Conn {
  struct PendingOffer {
    std::uint64_t transfer_id = 0;
    std::string project;
    storage::ChunkId snapshot{};
    std::uint64_t size_hint = 0;
    bool pull = false;  // Ask the peer to send (request) instead of offering.
  };
  struct Receive {
    std::uint64_t transfer_id = 0;
    std::unique_ptr<storage::StoreSink> sink;
    std::uint64_t session = 0;  // Known for pulls; offers are matched by project and snapshot.
  };
  struct Served {  // A pull the peer asked of us: matched by project and snapshot.
    std::uint64_t transfer_id = 0;
    std::string project;
    storage::ChunkId snapshot{};
  };

  TransferNet* net = nullptr;
  std::list<std::unique_ptr<Conn>>::iterator self;
  uv_tcp_t tcp{};
  uv_timer_t timer{};
  uv_connect_t connect{};
  std::unique_ptr<transfer::TransferConnection> conn;
  bool outbound = false;
  std::string peer_label;
  std::optional<PublicKey> peer_key;  // Outbound: pinned. Inbound: once authenticated.
  int open_handles = 0;
  bool closing = false;
  bool connected = false;
  bool reading = false;
  bool ending = false;  // Channel failed or closed: flush, then close.
  std::size_t queued_bytes = 0;
  std::deque<PendingOffer> pending;               // Waiting for the handshake.
  std::map<std::uint64_t, std::uint64_t> sends;   // Session id -> transfer id.
  std::vector<Receive> receives;                  // Session ids are not known to the acceptor.
  std::vector<Served> served;
};

struct TransferNet::WriteReq {
  uv_write_t req{};
  Bytes data;
  Conn* conn = nullptr;
};

namespace {

void on_conn_handle_closed(uv_handle_t* handle) {
  auto* c = static_cast<TransferNet::Conn*>(handle->data);
  SHOAL_ASSERT(c->open_handles > 0);
  if (--c->open_handles == 0) {
    c->net->erase(*c);
  }
}

}  // namespace

TransferNet::TransferNet(uv_loop_t* loop, const Identity& identity, const Keyring& keyring, Random& random,
                         storage::SnapshotStore& store, transfer::PeerAuthorizer authorize)
    : loop_(loop),
      identity_(identity),
      keyring_(keyring),
      random_(random),
      store_(store),
      source_(store),
      authorize_(std::move(authorize)) {
  SHOAL_ASSERT(uv_timer_init(loop_, &retry_timer_) == 0);
  retry_timer_.data = this;
}

TransferNet::~TransferNet() {
  // close() must have run and the loop must have processed the close callbacks.
  SHOAL_ASSERT(conns_.empty());
}

void TransferNet::set_rate_limit(std::uint64_t bytes_per_second) {
  bucket_.set_rate(bytes_per_second, monotonic_now());
  pump_all();
}

Status TransferNet::listen(const Address& bind) {
  auto addr = to_sockaddr(bind);
  if (!addr) {
    return std::unexpected(addr.error());
  }
  SHOAL_ASSERT(uv_tcp_init(loop_, &listener_) == 0);
  listener_.data = this;
  listening_ = true;
  int rc = uv_tcp_bind(&listener_, reinterpret_cast<const sockaddr*>(&*addr), 0);
  if (rc == 0) {
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 128, on_connection);
  }
  if (rc != 0) {
    close_handle(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    listening_ = false;
    return std::unexpected(from_uv(rc, "transfer listener on " + bind.to_string()));
  }
  sockaddr_storage name{};
  int len = sizeof name;
  uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&name), &len);
  bound_ = from_sockaddr(reinterpret_cast<const sockaddr*>(&name));
  return {};
}

TransferNet::Conn* TransferNet::new_conn(bool outbound, const std::string& peer_label) {
  auto owned = std::make_unique<Conn>();
  Conn& c = *owned;
  c.net = this;
  c.outbound = outbound;
  c.peer_label = peer_label;
  SHOAL_ASSERT(uv_tcp_init(loop_, &c.tcp) == 0);
  c.tcp.data = &c;
  SHOAL_ASSERT(uv_timer_init(loop_, &c.timer) == 0);
  c.timer.data = &c;
  c.open_handles = 2;
  conns_.push_front(std::move(owned));
  c.self = conns_.begin();
  return &c;
}

transfer::ConnectionConfig TransferNet::config_for(Conn& conn, transfer::ChannelRole role) {
  transfer::ConnectionConfig config;
  config.channel.role = role;
  config.channel.keyring = keyring_;
  if (role == transfer::ChannelRole::kInitiator) {
    config.channel.expected_peer_key = conn.peer_key;
  } else {
    config.channel.authorize_peer = authorize_;
  }
  config.sync = storage::store_sync_config();
  Conn* c = &conn;
  config.accept_offer = [this, c](const std::string& project, const storage::ChunkId& snapshot) {
    return accept_offer(*c, project, snapshot);
  };
  config.accept_request = [this, c](const std::string& project, const storage::ChunkId& snapshot) {
    return accept_request(*c, project, snapshot);
  };
  return config;
}

void TransferNet::on_connection(uv_stream_t* server, int status) {
  auto* net = static_cast<TransferNet*>(server->data);
  if (status < 0 || net->closing_) {
    return;
  }
  Conn* c = net->new_conn(false, "");
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    net->close_conn(*c);
    return;
  }
  if (net->conns_.size() > kTransferConnectionsMax) {
    ++net->metrics_.connections_refused;
    net->close_conn(*c);
    return;
  }
  net->evict_handshaking();
  ++net->metrics_.connections_in;
  sockaddr_storage peer{};
  int len = sizeof peer;
  if (uv_tcp_getpeername(&c->tcp, reinterpret_cast<sockaddr*>(&peer), &len) == 0) {
    c->peer_label = from_sockaddr(reinterpret_cast<const sockaddr*>(&peer)).to_string();
  }
  c->conn = std::make_unique<transfer::TransferConnection>(
      net->config_for(*c, transfer::ChannelRole::kResponder), net->identity_, net->random_, monotonic_now(),
      &net->metrics_.channel);
  c->connected = true;
  net->start_reading(*c);
  net->pump(*c);
}

void TransferNet::adopt(uv_os_sock_t fd, ByteView first_bytes) {
  if (closing_ || conns_.size() >= kTransferConnectionsMax) {
    ++metrics_.connections_refused;
    ::close(fd);
    return;
  }
  evict_handshaking();
  Conn* c = new_conn(false, "");
  if (const int rc = uv_tcp_open(&c->tcp, fd); rc != 0) {
    spdlog::warn("transfer: cannot adopt an accepted socket: {}", from_uv(rc, "uv_tcp_open").message);
    ::close(fd);
    close_conn(*c);
    return;
  }
  ++metrics_.connections_in;
  sockaddr_storage peer{};
  int len = sizeof peer;
  if (uv_tcp_getpeername(&c->tcp, reinterpret_cast<sockaddr*>(&peer), &len) == 0) {
    c->peer_label = from_sockaddr(reinterpret_cast<const sockaddr*>(&peer)).to_string();
  }
  const Instant now = monotonic_now();
  c->conn = std::make_unique<transfer::TransferConnection>(config_for(*c, transfer::ChannelRole::kResponder),
                                                           identity_, random_, now, &metrics_.channel);
  c->connected = true;
  metrics_.wire_bytes_in += first_bytes.size();
  c->conn->on_bytes(now, first_bytes);
  start_reading(*c);
  pump(*c);
}

Result<TransferNet::Conn*> TransferNet::connection_to(const TransferPeer& peer) {
  // Reuse an open connection to the same key; otherwise dial.
  for (auto& candidate : conns_) {
    if (!candidate->closing && !candidate->ending && candidate->peer_key == peer.key) {
      return candidate.get();
    }
  }
  if (conns_.size() >= kTransferConnectionsMax) {
    return make_error(Code::kResourceExhausted, "too many transfer connections");
  }
  auto addr = to_sockaddr(peer.address);
  if (!addr) {
    return std::unexpected(addr.error());
  }
  Conn* c = new_conn(true, peer.name);
  c->peer_key = peer.key;
  c->conn = std::make_unique<transfer::TransferConnection>(config_for(*c, transfer::ChannelRole::kInitiator),
                                                           identity_, random_, monotonic_now(), &metrics_.channel);
  c->connect.data = c;
  const int rc = uv_tcp_connect(&c->connect, &c->tcp, reinterpret_cast<const sockaddr*>(&*addr),
                                [](uv_connect_t* req, int status) {
                                  auto* conn = static_cast<Conn*>(req->data);
                                  conn->net->on_connected(*conn, status);
                                });
  if (rc != 0) {
    close_conn(*c);
    return std::unexpected(from_uv(rc, "connect to " + peer.address.to_string()));
  }
  ++metrics_.connections_out;
  return c;
}

Status TransferNet::admit_transfer(const std::string& project) const {
  if (closing_) {
    return make_error(Code::kUnavailable, "the agent is shutting down");
  }
  if (active_.size() >= kTransfersActiveMax) {
    return make_error(Code::kResourceExhausted, std::to_string(active_.size()) + " transfers are running already");
  }
  return storage::validate_project(project);
}

std::uint64_t TransferNet::begin_transfer(Conn& conn, TransferDirection direction, const std::string& peer_name,
                                          const std::string& project, const storage::ChunkId& snapshot,
                                          std::uint64_t size_hint, std::uint64_t retry_of) {
  std::uint64_t id = retry_of;
  if (retry_of == 0) {
    TransferInfo info;
    info.id = id = next_transfer_id_++;
    info.direction = direction;
    info.peer = peer_name;
    info.project = project;
    info.snapshot = snapshot;
    info.state = TransferState::kConnecting;
    info.started = monotonic_now();
    active_.push_back(info);
    emit(TransferEventKind::kStarted, info);
  }
  conn.pending.push_back(Conn::PendingOffer{.transfer_id = id,
                                            .project = project,
                                            .snapshot = snapshot,
                                            .size_hint = size_hint,
                                            .pull = direction == TransferDirection::kReceive});
  if (conn.conn->channel().established()) {
    start_pending_offers(conn, monotonic_now());
    pump(conn);
  }
  return id;
}

void TransferNet::remember_for_retry(std::uint64_t id, const TransferPeer& peer, TransferDirection direction,
                                     std::uint64_t size_hint) {
  // The transfer may have failed already (a refused dial finishes at once).
  if (std::any_of(active_.begin(), active_.end(), [&](const TransferInfo& t) { return t.id == id; })) {
    retries_[id] = Retry{.peer = peer, .direction = direction, .size_hint = size_hint};
  }
}

bool TransferNet::schedule_retry(TransferInfo& info, const Error& error, Instant now) {
  const auto r = retries_.find(info.id);
  if (r == retries_.end() || closing_ || !retryable(error.code) || info.attempts >= attempts_max_) {
    return false;
  }
  // 250 ms, 500 ms, 1 s, ... capped, each +-25% so that many transfers failed
  // by one event do not all come back at the same instant.
  double backoff_s = to_seconds(kTransferRetryFirst) * static_cast<double>(1u << std::min<std::uint32_t>(info.attempts - 1, 16));
  backoff_s = std::min(backoff_s, to_seconds(kTransferRetryMax));
  backoff_s *= 0.75 + 0.5 * random_.uniform_double();
  info.state = TransferState::kRetrying;
  info.error = error;
  info.retry_at = now + Duration(static_cast<std::int64_t>(backoff_s * 1e6));
  ++metrics_.transfer_retries;
  spdlog::warn("transfer {}: attempt {} of {} with {} failed: {}; retrying in {:.2f} s", info.id, info.attempts,
               attempts_max_, info.peer, error.to_string(), backoff_s);
  emit(TransferEventKind::kRetrying, info);
  arm_retry_timer(now);
  return true;
}

void TransferNet::arm_retry_timer(Instant now) {
  std::optional<Instant> next;
  for (const auto& t : active_) {
    if (t.state == TransferState::kRetrying && t.retry_at && (!next || *t.retry_at < *next)) {
      next = t.retry_at;
    }
  }
  if (!next || closing_) {
    uv_timer_stop(&retry_timer_);
    return;
  }
  const auto wait_ms = std::max<std::int64_t>(0, (to_us(*next) - to_us(now) + 999) / 1000);
  uv_timer_start(
      &retry_timer_, [](uv_timer_t* t) { static_cast<TransferNet*>(t->data)->run_retries(); },
      static_cast<std::uint64_t>(wait_ms), 0);
}

void TransferNet::run_retries() {
  if (closing_) {
    return;
  }
  const Instant now = monotonic_now();
  std::vector<std::uint64_t> due;
  for (const auto& t : active_) {
    if (t.state == TransferState::kRetrying && t.retry_at && *t.retry_at <= now) {
      due.push_back(t.id);
    }
  }
  for (const std::uint64_t id : due) {
    auto it = std::find_if(active_.begin(), active_.end(), [&](const TransferInfo& t) { return t.id == id; });
    const auto r = retries_.find(id);
    if (it == active_.end() || r == retries_.end()) {
      continue;
    }
    ++it->attempts;
    it->state = TransferState::kConnecting;
    it->retry_at.reset();
    const TransferInfo info = *it;
    spdlog::info("transfer {}: attempt {} of {} with {}", id, info.attempts, attempts_max_, info.peer);
    auto conn = connection_to(r->second.peer);
    if (!conn) {
      finish(id, TransferState::kFailed, conn.error(), {}, now);
      continue;
    }
    begin_transfer(**conn, r->second.direction, info.peer, info.project, info.snapshot, r->second.size_hint, id);
  }
  arm_retry_timer(monotonic_now());
}

void TransferNet::evict_handshaking() {
  // Inbound connections still handshaking, oldest last in conns_ (new ones go first).
  std::size_t handshaking = 0;
  Conn* oldest = nullptr;
  for (auto& c : conns_) {
    if (!c->outbound && !c->closing && c->conn && !c->conn->channel().established()) {
      ++handshaking;
      oldest = c.get();
    }
  }
  if (handshaking >= kTransferHandshakingInboundMax && oldest != nullptr) {
    ++metrics_.connections_evicted;
    spdlog::warn("transfer: {} inbound connections handshaking; closing the oldest, from {}", handshaking,
                 oldest->peer_label);
    close_conn(*oldest);
  }
}

void TransferNet::emit(TransferEventKind kind, const TransferInfo& info) {
  if (on_event_) {
    on_event_(kind, info);
  }
}

std::optional<std::uint64_t> TransferNet::running(TransferDirection direction, const TransferPeer& peer,
                                                  const std::string& project, const storage::ChunkId& snapshot) const {
  for (const auto& t : active_) {
    if (t.direction == direction && t.project == project && t.snapshot == snapshot && retries_.contains(t.id) &&
        retries_.at(t.id).peer.key == peer.key) {
      return t.id;
    }
  }
  return std::nullopt;
}

Result<std::uint64_t> TransferNet::pull(const TransferPeer& peer, const std::string& project,
                                        const storage::ChunkId& snapshot) {
  SHOAL_TRY_STATUS(admit_transfer(project));
  if (auto id = running(TransferDirection::kReceive, peer, project, snapshot)) {
    return *id;
  }
  auto conn = connection_to(peer);
  if (!conn) {
    return std::unexpected(conn.error());
  }
  const std::uint64_t id = begin_transfer(**conn, TransferDirection::kReceive, peer.name, project, snapshot, 0);
  remember_for_retry(id, peer, TransferDirection::kReceive, 0);
  return id;
}

Result<std::uint64_t> TransferNet::push(const TransferPeer& peer, const std::string& project,
                                        const storage::ChunkId& snapshot) {
  SHOAL_TRY_STATUS(admit_transfer(project));
  auto held = store_.list(project);
  if (!held) {
    return std::unexpected(held.error());
  }
  const auto it = std::find_if(held->begin(), held->end(), [&](const auto& s) { return s.id == snapshot; });
  if (it == held->end()) {
    return make_error(Code::kNotFound, "snapshot " + to_hex(snapshot).substr(0, 12) + " of project '" + project +
                                           "' is not held by this node");
  }
  if (auto id = running(TransferDirection::kSend, peer, project, snapshot)) {
    return *id;
  }
  auto conn = connection_to(peer);
  if (!conn) {
    return std::unexpected(conn.error());
  }
  const std::uint64_t id =
      begin_transfer(**conn, TransferDirection::kSend, peer.name, project, snapshot, it->commit.logical_bytes);
  remember_for_retry(id, peer, TransferDirection::kSend, it->commit.logical_bytes);
  return id;
}

void TransferNet::on_connected(Conn& c, int status) {
  if (c.closing) {
    return;
  }
  if (status != 0) {
    fail_conn(c, from_uv(status, "connect to " + c.peer_label));
    return;
  }
  c.connected = true;
  uv_tcp_nodelay(&c.tcp, 1);
  start_reading(c);
  pump(c);
}

void TransferNet::start_reading(Conn& c) {
  if (c.reading || c.closing) {
    return;
  }
  const int rc = uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c.tcp),
      [](uv_handle_t* handle, std::size_t, uv_buf_t* buf) {
        // Straight into the channel's receive buffer, where frames are
        // decrypted in place: the kernel's copy is the only one.
        auto* conn = static_cast<Conn*>(handle->data);
        const std::span<std::uint8_t> space = conn->conn->receive_space(kTransferReadBufferBytes);
        buf->base = reinterpret_cast<char*>(space.data());
        buf->len = space.size();
      },
      [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
        auto* conn = static_cast<Conn*>(stream->data);
        conn->net->on_read(*conn, nread, buf);
      });
  if (rc != 0) {
    fail_conn(c, from_uv(rc, "read from " + c.peer_label));
    return;
  }
  c.reading = true;
}

void TransferNet::on_read(Conn& c, ssize_t nread, const uv_buf_t* buf) {
  if (c.closing || nread == 0) {
    return;
  }
  const Instant now = monotonic_now();
  if (nread < 0) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&c.tcp));
    c.reading = false;
    if (nread == UV_EOF) {
      c.conn->on_eof(now);
      c.ending = true;  // Nothing more will arrive; finish what can be sent.
    } else {
      fail_conn(c, from_uv(static_cast<int>(nread), "read from " + c.peer_label));
      return;
    }
  } else {
    (void)buf;  // It is the connection's own receive_space().
    metrics_.wire_bytes_in += static_cast<std::uint64_t>(nread);
    c.conn->on_received(now, static_cast<std::size_t>(nread));
  }
  pump(c);
}

void TransferNet::on_written(WriteReq* req, int status) {
  Conn& c = *req->conn;
  SHOAL_ASSERT(c.queued_bytes >= req->data.size());
  c.queued_bytes -= req->data.size();
  if (!c.closing && status == 0) {
    c.conn->recycle_transmit(std::move(req->data));  // The next frames are sealed into it.
  }
  delete req;
  if (c.closing) {
    return;
  }
  if (status != 0) {
    fail_conn(c, from_uv(status, "write to " + c.peer_label));
    return;
  }
  pump(c);
}

void TransferNet::pump(Conn& c) {
  if (c.closing) {
    return;
  }
  const Instant now = monotonic_now();
  bool held_back = false;
  // Events can make more to send (an established channel starts the pending
  // offers), so go round again, a bounded number of times.
  for (int round = 0; round < 4; ++round) {
    if (c.connected) {
      while (c.queued_bytes < kTransferWriteQueueBytesMax) {
        if (!bucket_.allow(now)) {
          held_back = true;
          break;
        }
        auto tx = c.conn->poll_transmit(now);
        if (!tx) {
          break;
        }
        bucket_.charge(tx->size());
        auto* req = new WriteReq{.req = {}, .data = std::move(*tx), .conn = &c};
        req->req.data = req;
        uv_buf_t b = uv_buf_init(reinterpret_cast<char*>(req->data.data()), static_cast<unsigned>(req->data.size()));
        const int rc = uv_write(&req->req, reinterpret_cast<uv_stream_t*>(&c.tcp), &b, 1,
                                [](uv_write_t* w, int status) {
                                  auto* r = static_cast<WriteReq*>(w->data);
                                  r->conn->net->on_written(r, status);
                                });
        if (rc != 0) {
          delete req;
          fail_conn(c, from_uv(rc, "write to " + c.peer_label));
          return;
        }
        c.queued_bytes += b.len;
        metrics_.wire_bytes_out += b.len;
      }
    }
    bool again = false;
    while (auto event = c.conn->poll_event()) {
      again = again || event->kind == transfer::ConnectionEvent::Kind::kEstablished;
      handle_event(c, *event);
      if (c.closing) {
        return;
      }
    }
    if (!again) {
      break;
    }
  }
  // Refresh the progress of the sends on this connection.
  for (auto& info : active_) {
    for (const auto& [session, id] : c.sends) {
      if (id == info.id) {
        if (auto p = c.conn->progress(session)) {
          info.progress = *p;
        }
      }
    }
  }
  for (const auto& r : c.receives) {
    for (auto& info : active_) {
      if (info.id == r.transfer_id) {
        info.progress.chunks_transferred = r.sink->counters().chunks_accepted;
        info.progress.bytes_transferred = r.sink->counters().bytes_accepted;
      }
    }
  }
  if (on_event_) {
    for (auto& info : active_) {
      if (info.state == TransferState::kActive && now - info.last_progress_event >= kTransferProgressEventInterval &&
          now - info.started >= kTransferProgressEventInterval) {
        info.last_progress_event = now;
        emit(TransferEventKind::kProgress, info);
      }
    }
  }
  if (c.ending && c.queued_bytes == 0 && !held_back) {
    close_conn(c);
    return;
  }
  if (c.connected && !c.ending) {
    if (c.conn->wants_bytes()) {
      start_reading(c);
    } else if (c.reading) {
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&c.tcp));
      c.reading = false;
    }
  }
  std::optional<Instant> deadline = c.conn->next_deadline();
  if (held_back) {
    const Instant refill = now + bucket_.wait(now);
    deadline = deadline ? std::min(*deadline, refill) : refill;
  }
  if (deadline) {
    const auto wait_ms = std::max<std::int64_t>(0, (to_us(*deadline) - to_us(now) + 999) / 1000);
    uv_timer_start(
        &c.timer,
        [](uv_timer_t* timer) {
          auto* conn = static_cast<Conn*>(timer->data);
          if (!conn->closing) {
            conn->conn->on_timer(monotonic_now());
            conn->net->pump(*conn);
          }
        },
        static_cast<std::uint64_t>(wait_ms), 0);
  } else {
    uv_timer_stop(&c.timer);
  }
}

void TransferNet::pump_all() {
  std::vector<Conn*> all;
  for (auto& c : conns_) {
    all.push_back(c.get());
  }
  for (Conn* c : all) {
    pump(*c);
  }
}

void TransferNet::start_pending_offers(Conn& c, Instant now) {
  while (!c.pending.empty()) {
    Conn::PendingOffer offer = std::move(c.pending.front());
    c.pending.pop_front();
    if (offer.pull) {
      auto sink = std::make_unique<storage::StoreSink>(store_, offer.project, offer.snapshot);
      auto session = c.conn->request(now, *sink, offer.project, offer.snapshot);
      if (!session) {
        finish(offer.transfer_id, TransferState::kFailed, session.error(), {}, now);
        continue;
      }
      c.receives.push_back(Conn::Receive{.transfer_id = offer.transfer_id, .sink = std::move(sink), .session = *session});
    } else {
      auto session = c.conn->offer(now, source_, offer.project, offer.snapshot, offer.size_hint);
      if (!session) {
        finish(offer.transfer_id, TransferState::kFailed, session.error(), {}, now);
        continue;
      }
      c.sends[*session] = offer.transfer_id;
    }
    for (auto& info : active_) {
      if (info.id == offer.transfer_id) {
        info.state = TransferState::kActive;
      }
    }
  }
}

void TransferNet::name_peer(Conn& c) {
  if (c.outbound || c.peer_key || !c.conn->channel().peer_key()) {
    return;
  }
  c.peer_key = c.conn->channel().peer_key();
  if (namer_) {
    if (std::string name = namer_(*c.peer_key); !name.empty()) {
      c.peer_label = std::move(name);
    }
  }
}

Result<transfer::SyncSink*> TransferNet::accept_offer(Conn& c, const std::string& project, const storage::ChunkId& snapshot) {
  // The peer's first offer can arrive with its last handshake message, before
  // the established event is handled.
  name_peer(c);
  SHOAL_TRY_STATUS(storage::validate_project(project));
  if (active_.size() >= kTransfersActiveMax) {
    return make_error(Code::kResourceExhausted, "the receiver runs too many transfers; retry later");
  }
  TransferInfo info;
  info.id = next_transfer_id_++;
  info.direction = TransferDirection::kReceive;
  info.peer = c.peer_label;
  info.project = project;
  info.snapshot = snapshot;
  info.state = TransferState::kActive;
  info.started = monotonic_now();
  active_.push_back(info);
  c.receives.push_back(Conn::Receive{.transfer_id = info.id,
                                     .sink = std::make_unique<storage::StoreSink>(
                                         store_, project, snapshot,
                                         [check = commit_check_, project](const storage::ChunkId& id,
                                                                          const storage::Commit& commit) -> Status {
                                           return check ? check(project, id, commit) : ok_status();
                                         })});
  emit(TransferEventKind::kStarted, info);
  spdlog::info("transfer {}: receiving snapshot {} of '{}' from {}", info.id, to_hex(snapshot).substr(0, 12), project,
               c.peer_label);
  return c.receives.back().sink.get();
}

Result<transfer::SyncSource*> TransferNet::accept_request(Conn& c, const std::string& project,
                                                          const storage::ChunkId& snapshot) {
  name_peer(c);
  SHOAL_TRY_STATUS(storage::validate_project(project));
  if (active_.size() >= kTransfersActiveMax) {
    return make_error(Code::kResourceExhausted, "the sender runs too many transfers; retry later");
  }
  auto held = store_.list(project);
  if (!held) {
    return std::unexpected(held.error());
  }
  if (std::none_of(held->begin(), held->end(), [&](const auto& s) { return s.id == snapshot; })) {
    return make_error(Code::kNotFound, "snapshot " + to_hex(snapshot).substr(0, 12) + " of project '" + project +
                                           "' is not held by the node asked");
  }
  TransferInfo info;
  info.id = next_transfer_id_++;
  info.direction = TransferDirection::kSend;
  info.peer = c.peer_label;
  info.project = project;
  info.snapshot = snapshot;
  info.state = TransferState::kActive;
  info.started = monotonic_now();
  active_.push_back(info);
  c.served.push_back(Conn::Served{.transfer_id = info.id, .project = project, .snapshot = snapshot});
  emit(TransferEventKind::kStarted, info);
  spdlog::info("transfer {}: sending snapshot {} of '{}' to {} (pulled)", info.id, to_hex(snapshot).substr(0, 12),
               project, c.peer_label);
  return &source_;
}

void TransferNet::handle_event(Conn& c, transfer::ConnectionEvent& e) {
  using Kind = transfer::ConnectionEvent::Kind;
  const Instant now = monotonic_now();
  switch (e.kind) {
    case Kind::kEstablished:
      name_peer(c);
      start_pending_offers(c, now);
      break;
    case Kind::kSessionDone:
    case Kind::kSessionFailed: {
      const bool ok = e.kind == Kind::kSessionDone;
      std::uint64_t transfer_id = 0;
      if (e.role == transfer::SessionRole::kSender) {
        if (auto it = c.sends.find(e.session); it != c.sends.end()) {
          transfer_id = it->second;
          c.sends.erase(it);
        } else if (auto served = std::find_if(c.served.begin(), c.served.end(), [&](const Conn::Served& x) {
                     return x.snapshot == e.snapshot && x.project == e.project;
                   });
                   served != c.served.end()) {
          transfer_id = served->transfer_id;
          c.served.erase(served);
        }
        if (ok) {
          metrics_.chunks_sent += e.progress.chunks_transferred;
          metrics_.bytes_sent += e.progress.bytes_transferred;
        }
      } else {
        auto it = std::find_if(c.receives.begin(), c.receives.end(),
                               [&](const Conn::Receive& r) { return r.session != 0 && r.session == e.session; });
        if (it == c.receives.end()) {
          it = std::find_if(c.receives.begin(), c.receives.end(), [&](const Conn::Receive& r) {
            return r.session == 0 && r.sink->snapshot() == e.snapshot && r.sink->project() == e.project;
          });
        }
        if (it != c.receives.end()) {
          transfer_id = it->transfer_id;
          metrics_.chunks_received += it->sink->counters().chunks_accepted;
          metrics_.bytes_received += it->sink->counters().bytes_accepted;
          metrics_.chunks_refused_corrupt += it->sink->counters().chunks_refused;
          c.receives.erase(it);  // The session is gone: the sink may go (and its gc fence with it).
        }
      }
      if (transfer_id != 0) {
        finish(transfer_id, ok ? TransferState::kDone : TransferState::kFailed, e.error, e.progress, now);
      }
      break;
    }
    case Kind::kChannelFailed:
    case Kind::kChannelClosed: {
      if (e.kind == Kind::kChannelFailed) {
        spdlog::warn("transfer connection with {} failed: {}", c.peer_label, e.error.to_string());
      }
      // Offers that never started fail with the channel's reason.
      const Error why = e.kind == Kind::kChannelFailed ? e.error : Error{Code::kAborted, "connection closed"};
      while (!c.pending.empty()) {
        finish(c.pending.front().transfer_id, TransferState::kFailed, why, {}, now);
        c.pending.pop_front();
      }
      c.ending = true;
      break;
    }
  }
}

void TransferNet::finish(std::uint64_t transfer_id, TransferState state, const Error& error,
                         const transfer::SyncProgress& progress, Instant now) {
  auto it = std::find_if(active_.begin(), active_.end(), [&](const TransferInfo& t) { return t.id == transfer_id; });
  if (it == active_.end() || it->state == TransferState::kRetrying) {
    return;  // Unknown, or a late report of an attempt already failed.
  }
  if (state == TransferState::kFailed && schedule_retry(*it, error, now)) {
    if (progress.chunks_transferred != 0 || it->direction == TransferDirection::kSend) {
      it->progress = progress;
    }
    return;
  }
  retries_.erase(transfer_id);
  TransferInfo info = std::move(*it);
  active_.erase(it);
  info.state = state;
  info.error = error;
  // A receive's counters come from the sink; keep them if the session's are empty.
  if (progress.chunks_transferred != 0 || progress.snapshot_already_held || progress.chunks_requested != 0 ||
      info.direction == TransferDirection::kSend) {
    info.progress = progress;
  }
  info.finished = now;
  metrics_.transfer_seconds_sum += to_seconds(now - info.started);
  if (state == TransferState::kDone) {
    ++metrics_.transfers_done;
    spdlog::info("transfer {}: {} snapshot {} of '{}' {} {}: done, {} chunks, {} bytes", info.id,
                 info.direction == TransferDirection::kSend ? "sent" : "received", to_hex(info.snapshot).substr(0, 12),
                 info.project, info.direction == TransferDirection::kSend ? "to" : "from", info.peer,
                 info.progress.chunks_transferred, info.progress.bytes_transferred);
  } else {
    ++metrics_.transfers_failed;
    spdlog::warn("transfer {}: snapshot {} of '{}' {} {} failed: {}", info.id, to_hex(info.snapshot).substr(0, 12),
                 info.project, info.direction == TransferDirection::kSend ? "to" : "from", info.peer,
                 info.error.to_string());
  }
  recent_.push_front(info);
  while (recent_.size() > kTransfersRecentMax) {
    recent_.pop_back();
  }
  emit(state == TransferState::kDone ? TransferEventKind::kCompleted : TransferEventKind::kFailed, info);
  if (on_finished_) {
    on_finished_(info);
  }
}

void TransferNet::fail_conn(Conn& c, const Error& error) {
  if (c.closing) {
    return;
  }
  const Instant now = monotonic_now();
  // Every transfer on this connection ends with the socket's error.
  for (const auto& [session, id] : c.sends) {
    (void)session;
    finish(id, TransferState::kFailed, error, {}, now);
  }
  for (const auto& r : c.receives) {
    finish(r.transfer_id, TransferState::kFailed, error, {}, now);
  }
  for (const auto& p : c.pending) {
    finish(p.transfer_id, TransferState::kFailed, error, {}, now);
  }
  for (const auto& x : c.served) {
    finish(x.transfer_id, TransferState::kFailed, error, {}, now);
  }
  c.sends.clear();
  c.pending.clear();
  c.served.clear();
  spdlog::warn("transfer connection with {}: {}", c.peer_label, error.to_string());
  close_conn(c);
}

void TransferNet::close_conn(Conn& c) {
  if (c.closing) {
    return;
  }
  c.closing = true;
  // Transfers still listed here end now (the peer closed mid-transfer).
  const Instant now = monotonic_now();
  for (const auto& [session, id] : c.sends) {
    (void)session;
    finish(id, TransferState::kFailed, Error{Code::kAborted, "connection closed"}, {}, now);
  }
  for (const auto& r : c.receives) {
    finish(r.transfer_id, TransferState::kFailed, Error{Code::kAborted, "connection closed"}, {}, now);
  }
  for (const auto& p : c.pending) {
    finish(p.transfer_id, TransferState::kFailed, Error{Code::kAborted, "connection closed"}, {}, now);
  }
  for (const auto& x : c.served) {
    finish(x.transfer_id, TransferState::kFailed, Error{Code::kAborted, "connection closed"}, {}, now);
  }
  c.sends.clear();
  c.pending.clear();
  c.served.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(&c.tcp), on_conn_handle_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&c.timer), on_conn_handle_closed);
}

void TransferNet::erase(Conn& c) {
  // The sinks go last: after the connection (and its sessions) are gone.
  auto owned = std::move(*c.self);
  conns_.erase(c.self);
  owned->conn.reset();
  owned->receives.clear();
}

std::vector<TransferInfo> TransferNet::transfers() const {
  std::vector<TransferInfo> out(active_.rbegin(), active_.rend());
  out.insert(out.end(), recent_.begin(), recent_.end());
  return out;
}

std::optional<TransferInfo> TransferNet::transfer(std::uint64_t id) const {
  for (const auto& t : active_) {
    if (t.id == id) return t;
  }
  for (const auto& t : recent_) {
    if (t.id == id) return t;
  }
  return std::nullopt;
}

void TransferNet::close() {
  if (closing_) {
    return;
  }
  closing_ = true;
  close_handle(reinterpret_cast<uv_handle_t*>(&retry_timer_), nullptr);
  // Transfers waiting for their next attempt end now.
  std::vector<std::uint64_t> waiting;
  for (const auto& t : active_) {
    if (t.state == TransferState::kRetrying) {
      waiting.push_back(t.id);
    }
  }
  for (const std::uint64_t id : waiting) {
    auto it = std::find_if(active_.begin(), active_.end(), [&](const TransferInfo& t) { return t.id == id; });
    it->state = TransferState::kConnecting;  // So that finish() takes it.
    finish(id, TransferState::kFailed, Error{Code::kUnavailable, "the agent is shutting down"}, {}, monotonic_now());
  }
  std::vector<Conn*> all;
  for (auto& c : conns_) {
    all.push_back(c.get());
  }
  for (Conn* c : all) {
    if (!c->closing && c->conn && c->connected) {
      c->conn->close(monotonic_now());
    }
    close_conn(*c);
  }
  if (listening_) {
    close_handle(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    listening_ = false;
  }
}

}  // namespace shoal::agent
