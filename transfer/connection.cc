// transfer/connection.cc
//
// Design note. Session ids carry their sender's side in the top bit (0: the
// channel's initiator sends, 1: the responder sends), so both nodes can
// start sessions on one connection without coordinating ids, and every
// message routes to exactly one local session by id alone. Fairness: each
// poll_transmit() visits the open sessions round-robin, one message each,
// until fill_bytes are queued, starting after where the previous call
// stopped; a session with a large chunk cannot starve the others for more
// than one piece (128 KiB). A slow *peer* never blocks other peers: each
// peer has its own connection.

#include "transfer/connection.h"

#include "base/assert.h"

namespace shoal::transfer {

namespace {
constexpr std::uint64_t kResponderSendsBit = std::uint64_t{1} << 63;
}

TransferConnection::TransferConnection(const ConnectionConfig& config, const Identity& identity, Random& random,
                                       Instant now, ChannelMetrics* metrics)
    : config_(config), random_(random), channel_(config_.channel, identity, random, now, metrics) {
  SHOAL_ASSERT(config_.fill_bytes > 0);
}

bool TransferConnection::ours(std::uint64_t session) const {
  const bool responder_sends = (session & kResponderSendsBit) != 0;
  return responder_sends == (config_.channel.role == ChannelRole::kResponder);
}

std::uint64_t TransferConnection::new_session_id(bool peer_sends) {
  // The top bit names the sending end: ours for offers, the peer's for pulls.
  const bool responder_sends = (config_.channel.role == ChannelRole::kResponder) != peer_sends;
  for (;;) {
    std::uint64_t id = random_.next_u64() & ~kResponderSendsBit;
    if (responder_sends) {
      id |= kResponderSendsBit;
    }
    if (id != 0 && id != kResponderSendsBit && !sessions_.contains(id)) {
      return id;
    }
  }
}

Result<std::uint64_t> TransferConnection::offer(Instant now, SyncSource& source, const std::string& project,
                                                const ChunkId& snapshot, std::uint64_t size_hint) {
  if (!channel_.established() || close_reported_) {
    return make_error(Code::kFailedPrecondition, "connection is not established, or closing");
  }
  if (project.size() > kProjectBytesMax) {
    return make_error(Code::kInvalidArgument, "project name above " + std::to_string(kProjectBytesMax) + " bytes");
  }
  if (sessions_.size() >= kSessionsPerConnectionMax) {
    return make_error(Code::kResourceExhausted, "connection carries " + std::to_string(kSessionsPerConnectionMax) +
                                                    " transfers already");
  }
  const std::uint64_t id = new_session_id();
  Session s{.role = SessionRole::kSender, .project = project, .snapshot = snapshot};
  s.sender = std::make_unique<SyncSender>(config_.sync, source, id, project, snapshot, size_hint, now);
  sessions_.emplace(id, std::move(s));
  return id;
}

Result<std::uint64_t> TransferConnection::request(Instant now, SyncSink& sink, const std::string& project,
                                                  const ChunkId& snapshot) {
  if (!channel_.established()) {
    return make_error(Code::kFailedPrecondition, "the channel is not established");
  }
  if (sessions_.size() >= kSessionsPerConnectionMax) {
    return make_error(Code::kResourceExhausted, "too many transfers on this connection");
  }
  if (project.size() > kProjectBytesMax) {
    return make_error(Code::kInvalidArgument, "project name too long");
  }
  const std::uint64_t id = new_session_id(/*peer_sends=*/true);
  const SyncMessage m{.type = SyncMessageType::kRequest, .session = id, .project = project, .id = snapshot};
  if (auto sent = channel_.send(now, encode_sync_message(m)); !sent) {
    return std::unexpected(sent.error());
  }
  Session s{.role = SessionRole::kReceiver, .project = project, .snapshot = snapshot};
  s.receiver = std::make_unique<SyncReceiver>(config_.sync, sink, now);
  s.requested = true;
  sessions_.emplace(id, std::move(s));
  return id;
}

void TransferConnection::serve_request(Instant now, const SyncMessage& m) {
  const std::uint64_t id = m.session;
  if (sessions_.size() >= kSessionsPerConnectionMax) {
    refuse_offer(now, id, Error{Code::kResourceExhausted, "too many transfers on this connection"});
    return;
  }
  if (!config_.accept_request) {
    refuse_offer(now, id, Error{Code::kFailedPrecondition, "this node serves no pulls"});
    return;
  }
  auto source = config_.accept_request(m.project, m.id);
  if (!source) {
    refuse_offer(now, id, source.error());
    return;
  }
  SHOAL_ASSERT(*source != nullptr);
  Session s{.role = SessionRole::kSender, .project = m.project, .snapshot = m.id};
  s.sender = std::make_unique<SyncSender>(config_.sync, **source, id, m.project, m.id, 0, now);
  sessions_.emplace(id, std::move(s));
}

void TransferConnection::cancel(Instant now, std::uint64_t session, const Error& error) {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) {
    return;
  }
  if (it->second.sender) {
    it->second.sender->abort(now, error);
  } else {
    it->second.receiver->abort(now, error);
  }
}

void TransferConnection::refuse_offer(Instant now, std::uint64_t session, const Error& error) {
  const SyncMessage end{.type = SyncMessageType::kEnd, .session = session, .code = error.code, .text = error.message};
  // A full transmit buffer drops the refusal; the peer's stall timer ends its session.
  (void)channel_.send(now, encode_sync_message(end));
}

void TransferConnection::route(Instant now, ByteView message) {
  auto decoded = decode_sync_message_view(message);  // A chunk piece stays in the channel's buffer.
  if (!decoded) {
    // A malformed message from an authenticated peer: its sessions cannot be
    // trusted to be in step any more. Fail them all and close the connection.
    ++stray_messages_;
    close(now);
    return;
  }
  const std::uint64_t id = decoded->session;
  auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    if (decoded->type == SyncMessageType::kOffer && !ours(id)) {
      if (sessions_.size() >= kSessionsPerConnectionMax) {
        refuse_offer(now, id, Error{Code::kResourceExhausted, "too many transfers on this connection"});
        return;
      }
      if (!config_.accept_offer) {
        refuse_offer(now, id, Error{Code::kFailedPrecondition, "this node accepts no offers"});
        return;
      }
      auto sink = config_.accept_offer(decoded->project, decoded->id);
      if (!sink) {
        refuse_offer(now, id, sink.error());
        return;
      }
      SHOAL_ASSERT(*sink != nullptr);
      Session s{.role = SessionRole::kReceiver, .project = decoded->project, .snapshot = decoded->id};
      s.receiver = std::make_unique<SyncReceiver>(config_.sync, **sink, now);
      s.receiver->on_message(now, *decoded);
      sessions_.emplace(id, std::move(s));
      return;
    }
    if (decoded->type == SyncMessageType::kRequest && ours(id)) {
      serve_request(now, *decoded);
      return;
    }
    ++stray_messages_;
    return;
  }
  if (it->second.requested && it->second.receiver->session() == 0) {
    // A pull waiting for its offer: only the snapshot asked for, or the peer's refusal.
    Session& s = it->second;
    if (decoded->type == SyncMessageType::kEnd) {
      s.receiver->abort(now, Error{decoded->code == Code::kOk ? Code::kAborted : decoded->code,
                                   "the peer refused the pull: " + decoded->text});
      return;
    }
    if (decoded->type == SyncMessageType::kOffer && (decoded->project != s.project || decoded->id != s.snapshot)) {
      s.receiver->abort(now, Error{Code::kAborted, "the peer offered another snapshot than the one pulled"});
      return;
    }
  }
  if (it->second.sender) {
    it->second.sender->on_message(now, *decoded);
  } else {
    it->second.receiver->on_message(now, *decoded);
  }
}

void TransferConnection::close(Instant now) {
  for (auto& [id, s] : sessions_) {
    cancel(now, id, Error{Code::kAborted, "connection closing"});
  }
  // The sessions' kEnd messages go out before the close frame.
  for (auto& [id, s] : sessions_) {
    (void)id;
    while (auto m = s.sender ? s.sender->poll_message(now) : s.receiver->poll_message(now)) {
      (void)channel_.send(now, *m);
    }
  }
  channel_.close(now);
  reap();
  if (!close_reported_) {
    close_reported_ = true;
    events_.push_back(ConnectionEvent{.kind = ConnectionEvent::Kind::kChannelClosed});
  }
}

void TransferConnection::after_channel_input(Instant now) {
  // Messages are read where the channel decrypted them; route() copies what it keeps.
  while (auto m = channel_.peek_message()) {
    route(now, *m);
    channel_.pop_message();
  }
  if (channel_.peer_closed() && !close_reported_ && channel_.state() != ChannelState::kFailed) {
    close(now);  // A half-open connection is of no use to transfers: finish it.
  }
  if (channel_.established() && !established_reported_) {
    established_reported_ = true;
    events_.push_back(ConnectionEvent{.kind = ConnectionEvent::Kind::kEstablished});
  }
  if (channel_.state() == ChannelState::kFailed && !failure_reported_) {
    failure_reported_ = true;
    const Error dropped{Code::kAborted, "connection failed: " + channel_.error().message};
    for (auto& [id, s] : sessions_) {
      cancel(now, id, dropped);
    }
    reap();
    events_.push_back(ConnectionEvent{.kind = ConnectionEvent::Kind::kChannelFailed, .error = channel_.error()});
  }
}

void TransferConnection::on_bytes(Instant now, ByteView bytes) {
  channel_.on_bytes(now, bytes);
  after_channel_input(now);
}

std::span<std::uint8_t> TransferConnection::receive_space(std::size_t bytes_min) {
  return channel_.receive_space(bytes_min);
}

void TransferConnection::on_received(Instant now, std::size_t bytes) {
  channel_.on_received(now, bytes);
  after_channel_input(now);
}

void TransferConnection::on_eof(Instant now) {
  channel_.on_eof(now);
  after_channel_input(now);
}

void TransferConnection::on_timer(Instant now) {
  channel_.on_timer(now);
  for (auto& [id, s] : sessions_) {
    if (s.sender) {
      s.sender->on_timer(now);
    } else {
      s.receiver->on_timer(now);
    }
  }
  after_channel_input(now);
}

void TransferConnection::fill(Instant now) {
  if (!channel_.established() || sessions_.empty()) {
    return;
  }
  const std::size_t start = channel_.transmit_bytes();
  bool any = true;
  while (any && channel_.transmit_bytes() - start < config_.fill_bytes) {
    any = false;
    // One message per session per round, starting at next_turn_.
    auto it = sessions_.lower_bound(next_turn_);
    for (std::size_t visited = 0; visited < sessions_.size(); ++visited, ++it) {
      if (it == sessions_.end()) {
        it = sessions_.begin();
      }
      Session& s = it->second;
      Status sent;
      if (s.sender) {
        // Head and a view of the chunk: the piece is encrypted from where it lies into the frame.
        auto m = s.sender->poll_parts(now);
        if (!m) {
          continue;
        }
        const ByteView parts[2] = {m->head, m->body};
        sent = channel_.send_parts(now, parts);
      } else {
        auto m = s.receiver->poll_message(now);
        if (!m) {
          continue;
        }
        sent = channel_.send(now, *m);
      }
      any = true;
      if (!sent) {
        // The transmit buffer is the driver's to drain; a session cannot push a
        // message back, so a refusal here would lose protocol state. fill_bytes
        // is far below transmit_bytes_max, so this only happens on a closed channel.
        cancel(now, it->first, Error{Code::kAborted, "channel refused a message: " + sent.error().message});
        continue;
      }
      if (channel_.transmit_bytes() - start >= config_.fill_bytes) {
        auto next = std::next(it);
        next_turn_ = next == sessions_.end() ? 0 : next->first;
        return;
      }
    }
  }
}

void TransferConnection::reap() {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    Session& s = it->second;
    const SyncState state = s.sender ? s.sender->state() : s.receiver->state();
    if (state == SyncState::kActive) {
      ++it;
      continue;
    }
    ConnectionEvent e{.kind = state == SyncState::kDone ? ConnectionEvent::Kind::kSessionDone
                                                        : ConnectionEvent::Kind::kSessionFailed,
                      .session = it->first,
                      .role = s.role,
                      .project = s.project,
                      .snapshot = s.snapshot};
    e.error = s.sender ? s.sender->error() : s.receiver->error();
    e.progress = s.sender ? s.sender->progress() : s.receiver->progress();
    events_.push_back(std::move(e));
    it = sessions_.erase(it);
  }
}

std::optional<Bytes> TransferConnection::poll_transmit(Instant now) {
  fill(now);
  // Finished sessions still had their last message (kEnd) to hand out in fill().
  // Reap only those that have nothing more to say.
  for (auto& [id, s] : sessions_) {
    (void)id;
    const SyncState state = s.sender ? s.sender->state() : s.receiver->state();
    if (state != SyncState::kActive && channel_.established()) {
      while (auto m = s.sender ? s.sender->poll_message(now) : s.receiver->poll_message(now)) {
        (void)channel_.send(now, *m);
      }
    }
  }
  reap();
  return channel_.poll_transmit();
}

std::optional<ConnectionEvent> TransferConnection::poll_event() {
  if (events_.empty()) {
    return std::nullopt;
  }
  ConnectionEvent e = std::move(events_.front());
  events_.pop_front();
  return e;
}

std::optional<Instant> TransferConnection::next_deadline() const {
  std::optional<Instant> deadline = channel_.next_deadline();
  for (const auto& [id, s] : sessions_) {
    (void)id;
    auto d = s.sender ? s.sender->next_deadline() : s.receiver->next_deadline();
    if (d && (!deadline || *d < *deadline)) {
      deadline = d;
    }
  }
  return deadline;
}

std::optional<SyncProgress> TransferConnection::progress(std::uint64_t session) const {
  auto it = sessions_.find(session);
  if (it == sessions_.end()) {
    return std::nullopt;
  }
  return it->second.sender ? it->second.sender->progress() : it->second.receiver->progress();
}

}  // namespace shoal::transfer
