// transfer/chunk_sync.cc
//
// Design note. The receiver drives: it alone knows what it lacks. The sender
// offers the snapshot's root id; the receiver walks the Merkle DAG from it,
// depth first, asking its own store which referenced ids are missing, and
// requests those in kGet batches while fewer than window_chunks requests are
// unanswered. The sender answers requests strictly in order, one chunk at a
// time, cut into pieces that each fit one channel frame. Order is what keeps
// memory bounded on both ends: the sender holds one chunk (read from its store
// only when the driver pulls the next message, i.e. when the socket has room),
// and the receiver assembles one chunk at a time, growing its buffer only as
// bytes arrive, never to a size the peer merely announced.
//
// Why manifests are requested before data: a missing manifest hides
// everything below it, and the walk cannot go on until it arrives, so the
// window is best spent unblocking the walk. Why chunks are stored on arrival
// rather than at the end: an interrupted transfer then resumes from what is
// stored, and the walk of the next session finds it present. Why commit is a
// single call at the end: the store makes the snapshot visible atomically, and
// only after every referenced chunk is present and verified.
//
// A damaged chunk (put() says Corruption) is counted and requested again, up
// to chunk_attempts_max times; a peer that keeps sending bad bytes ends the
// transfer with Corruption. Any message that breaks the protocol (a piece for
// a chunk not at the head of the window, a request beyond the window, an
// unknown type) ends it with Aborted: restart the exchange.

#include "transfer/chunk_sync.h"

#include <algorithm>
#include <utility>

#include "base/assert.h"
#include "base/codec.h"

namespace shoal::transfer {

// ---- Messages ----

Bytes encode_sync_message(const SyncMessage& m) {
  Encoder e;
  switch (m.type) {
    case SyncMessageType::kOffer:
      SHOAL_ASSERT(m.project.size() <= kProjectBytesMax);
      e.array(5).u64(static_cast<std::uint64_t>(m.type)).u64(m.session).str(m.project).bin(m.id).u64(m.size_hint);
      break;
    case SyncMessageType::kGet:
      SHOAL_ASSERT(!m.ids.empty());
      SHOAL_ASSERT(m.ids.size() <= kGetIdsMax);
      e.array(3).u64(static_cast<std::uint64_t>(m.type)).u64(m.session);
      e.array(static_cast<std::uint32_t>(m.ids.size()));
      for (const ChunkId& id : m.ids) {
        e.bin(id);
      }
      break;
    case SyncMessageType::kChunk:
      SHOAL_ASSERT(m.piece().size() <= kChunkPieceBytesMax);
      SHOAL_ASSERT(m.offset + m.piece().size() <= m.total);
      e.array(6).u64(static_cast<std::uint64_t>(m.type)).u64(m.session).bin(m.id).u64(m.total).u64(m.offset).bin(
          m.piece());
      break;
    case SyncMessageType::kMissing:
      e.array(3).u64(static_cast<std::uint64_t>(m.type)).u64(m.session).bin(m.id);
      break;
    case SyncMessageType::kRequest:
      SHOAL_ASSERT(m.project.size() <= kProjectBytesMax);
      e.array(4).u64(static_cast<std::uint64_t>(m.type)).u64(m.session).str(m.project).bin(m.id);
      break;
    case SyncMessageType::kEnd: {
      const std::string text = m.text.substr(0, kEndTextBytesMax);
      e.array(4).u64(static_cast<std::uint64_t>(m.type)).u64(m.session).u64(static_cast<std::uint64_t>(m.code)).str(
          text);
      break;
    }
  }
  SHOAL_ASSERT(e.size() <= kMessageBytesMax);
  return e.take();
}

namespace {

DecodeLimits sync_limits() {
  return DecodeLimits{.input_bytes_max = kMessageBytesMax,
                      .array_items_max = kGetIdsMax,
                      .map_items_max = 0,
                      .str_bytes_max = kEndTextBytesMax,
                      .bin_bytes_max = kChunkPieceBytesMax,
                      .depth_max = 2};
}

}  // namespace

Result<SyncMessage> decode_sync_message(ByteView bytes) {
  auto decoded = Decoded::parse(bytes, sync_limits());
  if (!decoded) {
    return std::unexpected(decoded.error());
  }
  Reader r = decoded->root(6);
  SyncMessage m;
  const std::uint64_t type = r.u64();
  m.session = r.u64();
  if (!r.ok()) {
    return std::unexpected(r.error());
  }
  switch (type) {
    case static_cast<std::uint64_t>(SyncMessageType::kOffer):
      m.type = SyncMessageType::kOffer;
      m.project = r.str(kProjectBytesMax);
      r.bin_exact(m.id);
      m.size_hint = r.u64();
      break;
    case static_cast<std::uint64_t>(SyncMessageType::kGet): {
      m.type = SyncMessageType::kGet;
      Reader ids = r.array(kGetIdsMax);
      if (ids.ok() && ids.size() == 0) {
        return make_error(Code::kInvalidArgument, "get without ids");
      }
      m.ids.resize(ids.size());
      for (ChunkId& id : m.ids) {
        ids.bin_exact(id);
      }
      break;
    }
    case static_cast<std::uint64_t>(SyncMessageType::kChunk):
      m.type = SyncMessageType::kChunk;
      r.bin_exact(m.id);
      m.total = r.u64_max(kSyncChunkBytesMax);
      m.offset = r.u64_max(kSyncChunkBytesMax);
      m.data = r.bin(kChunkPieceBytesMax);
      if (r.ok() && m.offset + m.data.size() > m.total) {
        return make_error(Code::kInvalidArgument, "chunk piece ends past the chunk's size");
      }
      break;
    case static_cast<std::uint64_t>(SyncMessageType::kMissing):
      m.type = SyncMessageType::kMissing;
      r.bin_exact(m.id);
      break;
    case static_cast<std::uint64_t>(SyncMessageType::kRequest):
      m.type = SyncMessageType::kRequest;
      m.project = r.str(kProjectBytesMax);
      r.bin_exact(m.id);
      break;
    case static_cast<std::uint64_t>(SyncMessageType::kEnd):
      m.type = SyncMessageType::kEnd;
      m.code = static_cast<Code>(r.u64_max(static_cast<std::uint64_t>(Code::kInternal)));
      m.text = r.str(kEndTextBytesMax);
      break;
    default:
      return make_error(Code::kInvalidArgument, "unknown sync message type " + std::to_string(type));
  }
  r.expect_end();
  if (!r.ok()) {
    return std::unexpected(r.error());
  }
  return m;
}

namespace {

void put_be(Bytes& out, std::uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) {
    out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
}

std::uint64_t get_be(const std::uint8_t* p, std::size_t bytes) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < bytes; ++i) {
    v = (v << 8) | p[i];
  }
  return v;
}

// msgpack's bin header, as msgpack-c's packer writes it (the smallest form).
void put_bin_header(Bytes& out, std::size_t bytes) {
  if (bytes < 0x100) {
    out.push_back(0xc4);
    out.push_back(static_cast<std::uint8_t>(bytes));
  } else if (bytes < 0x10000) {
    out.push_back(0xc5);
    put_be(out, bytes, 2);
  } else {
    out.push_back(0xc6);
    put_be(out, bytes, 4);
  }
}

// Reads a msgpack unsigned integer in any of its forms. False on anything else
// (the caller then takes the general decoder, which gives the error).
bool read_uint(ByteView in, std::size_t& at, std::uint64_t& value) {
  if (at >= in.size()) {
    return false;
  }
  const std::uint8_t tag = in[at++];
  std::size_t width = 0;
  if (tag <= 0x7f) {
    value = tag;
    return true;
  }
  switch (tag) {
    case 0xcc: width = 1; break;
    case 0xcd: width = 2; break;
    case 0xce: width = 4; break;
    case 0xcf: width = 8; break;
    default: return false;
  }
  if (in.size() - at < width) {
    return false;
  }
  value = get_be(in.data() + at, width);
  at += width;
  return true;
}

bool read_bin_header(ByteView in, std::size_t& at, std::size_t& bytes) {
  if (at >= in.size()) {
    return false;
  }
  const std::uint8_t tag = in[at++];
  std::size_t width = 0;
  switch (tag) {
    case 0xc4: width = 1; break;
    case 0xc5: width = 2; break;
    case 0xc6: width = 4; break;
    default: return false;
  }
  if (in.size() - at < width) {
    return false;
  }
  bytes = static_cast<std::size_t>(get_be(in.data() + at, width));
  at += width;
  return true;
}

// A kChunk message with every check decode_sync_message makes, its piece left
// in place. nullopt for anything else, including valid messages this does not
// read (other types): the general decoder then decides.
std::optional<SyncMessage> decode_chunk_in_place(ByteView in) {
  std::size_t at = 0;
  std::uint64_t type = 0;
  SyncMessage m;
  if (in.size() < 2 || in[at++] != 0x96 || !read_uint(in, at, type) ||
      type != static_cast<std::uint64_t>(SyncMessageType::kChunk) || !read_uint(in, at, m.session)) {
    return std::nullopt;
  }
  std::size_t id_bytes = 0;
  if (!read_bin_header(in, at, id_bytes) || id_bytes != kHashBytes || in.size() - at < kHashBytes) {
    return std::nullopt;
  }
  std::copy_n(in.begin() + static_cast<std::ptrdiff_t>(at), kHashBytes, m.id.begin());
  at += kHashBytes;
  std::size_t piece = 0;
  if (!read_uint(in, at, m.total) || !read_uint(in, at, m.offset) || !read_bin_header(in, at, piece)) {
    return std::nullopt;
  }
  if (m.total > kSyncChunkBytesMax || m.offset > kSyncChunkBytesMax || piece > kChunkPieceBytesMax ||
      in.size() - at != piece || m.offset + piece > m.total) {
    return std::nullopt;
  }
  m.type = SyncMessageType::kChunk;
  m.borrowed = in.subspan(at);
  return m;
}

}  // namespace

Result<SyncMessage> decode_sync_message_view(ByteView bytes) {
  if (bytes.size() > kMessageBytesMax) {
    return decode_sync_message(bytes);  // Refused there, with the general decoder's reason.
  }
  if (auto m = decode_chunk_in_place(bytes)) {
    return std::move(*m);
  }
  return decode_sync_message(bytes);
}

Bytes encode_chunk_head(std::uint64_t session, const ChunkId& id, std::uint64_t total, std::uint64_t offset,
                        std::size_t piece_bytes) {
  SHOAL_ASSERT(piece_bytes <= kChunkPieceBytesMax);
  SHOAL_ASSERT(offset + piece_bytes <= total);
  Encoder e;
  e.array(6).u64(static_cast<std::uint64_t>(SyncMessageType::kChunk)).u64(session).bin(id).u64(total).u64(offset);
  Bytes head = e.take();
  put_bin_header(head, piece_bytes);
  return head;
}

std::optional<std::uint64_t> peek_sync_session(ByteView bytes) {
  auto decoded = Decoded::parse(bytes, sync_limits());
  if (!decoded) {
    return std::nullopt;
  }
  Reader r = decoded->root(6);
  r.u64();
  const std::uint64_t session = r.u64();
  if (!r.ok()) {
    return std::nullopt;
  }
  return session;
}

// ---- RateMeter ----

void RateMeter::update(Instant now, std::uint64_t total_bytes) {
  SHOAL_ASSERT(!samples_.empty());
  if (now - samples_.back().at >= kSampleInterval) {
    samples_.push_back(Sample{now, total_bytes});
    if (samples_.size() > kSamples) {
      samples_.erase(samples_.begin());
    }
  }
  const Sample& oldest = samples_.front();
  const Duration span = now - oldest.at;
  if (span.count() > 0 && total_bytes >= oldest.total) {
    rate_ = static_cast<double>(total_bytes - oldest.total) / to_seconds(span);
  }
}

// ---- Sender ----

SyncSender::SyncSender(const SyncConfig& config, SyncSource& source, std::uint64_t session, std::string project,
                       const ChunkId& snapshot, std::uint64_t size_hint, Instant now)
    : config_(config),
      source_(source),
      session_(session),
      project_(std::move(project)),
      snapshot_(snapshot),
      last_heard_(now) {
  SHOAL_ASSERT(project_.size() <= kProjectBytesMax);
  SHOAL_ASSERT(config_.piece_bytes > 0);
  SHOAL_ASSERT(config_.piece_bytes <= kChunkPieceBytesMax);
  SHOAL_ASSERT(config_.chunk_bytes_max <= kSyncChunkBytesMax);
  progress_.size_hint = size_hint;
  rate_.start(now);
}

void SyncSender::on_message(Instant now, ByteView bytes) {
  if (state_ != SyncState::kActive) {
    return;
  }
  auto message = decode_sync_message(bytes);
  if (!message) {
    fail(now, Code::kAborted, "malformed message from receiver: " + message.error().message, true);
    return;
  }
  on_message(now, *message);
}

void SyncSender::on_message(Instant now, const SyncMessage& m) {
  if (state_ != SyncState::kActive) {
    return;
  }
  if (m.session != session_) {
    fail(now, Code::kAborted, "message for session " + std::to_string(m.session), true);
    return;
  }
  last_heard_ = now;
  switch (m.type) {
    case SyncMessageType::kGet: {
      const std::size_t open = requests_.size() + (current_id_ ? 1 : 0);
      if (open + m.ids.size() > kWindowChunksMax) {
        fail(now, Code::kAborted, "receiver exceeded the request window", true);
        return;
      }
      requests_.insert(requests_.end(), m.ids.begin(), m.ids.end());
      return;
    }
    case SyncMessageType::kEnd:
      if (m.code == Code::kOk) {
        state_ = SyncState::kDone;
        rate_.update(now, progress_.bytes_transferred);
        progress_.bytes_per_second = rate_.bytes_per_second();
      } else {
        fail(now, m.code, "receiver ended the transfer: " + m.text, false);
      }
      return;
    default:
      fail(now, Code::kAborted, "unexpected message type from receiver", true);
      return;
  }
}

std::optional<Bytes> SyncSender::poll_message(Instant now) {
  auto parts = poll_parts(now);
  if (!parts) {
    return std::nullopt;
  }
  Bytes out = std::move(parts->head);
  out.insert(out.end(), parts->body.begin(), parts->body.end());
  return out;
}

std::optional<SyncSender::Parts> SyncSender::poll_parts(Instant now) {
  // The previous call's body may have pointed into it.
  finished_.clear();
  finished_.shrink_to_fit();
  if (end_to_send_) {
    Bytes out = encode_sync_message(*end_to_send_);
    end_to_send_.reset();
    return Parts{.head = std::move(out), .body = {}};
  }
  if (state_ != SyncState::kActive) {
    return std::nullopt;
  }
  if (!offer_sent_) {
    offer_sent_ = true;
    SyncMessage offer{.type = SyncMessageType::kOffer, .session = session_, .project = project_, .id = snapshot_};
    offer.size_hint = progress_.size_hint;
    return Parts{.head = encode_sync_message(offer), .body = {}};
  }
  if (!current_id_) {
    if (requests_.empty()) {
      return std::nullopt;
    }
    const ChunkId id = requests_.front();
    requests_.pop_front();
    ++progress_.chunks_requested;
    auto bytes = source_.read(id);
    if (!bytes) {
      if (bytes.error().code == Code::kNotFound) {
        return Parts{
            .head = encode_sync_message(SyncMessage{.type = SyncMessageType::kMissing, .session = session_, .id = id}),
            .body = {}};
      }
      fail(now, bytes.error().code, "reading chunk " + to_hex(id).substr(0, 16) + ": " + bytes.error().message, true);
      return poll_parts(now);
    }
    if (bytes->size() > config_.chunk_bytes_max) {
      fail(now, Code::kFailedPrecondition,
           "chunk " + to_hex(id).substr(0, 16) + " has " + std::to_string(bytes->size()) + " bytes, above the limit",
           true);
      return poll_parts(now);
    }
    current_id_ = id;
    current_ = std::move(*bytes);
    current_offset_ = 0;
  }
  const std::size_t piece = std::min(config_.piece_bytes, current_.size() - current_offset_);
  Parts out{.head = encode_chunk_head(session_, *current_id_, current_.size(), current_offset_, piece),
            .body = ByteView(current_).subspan(current_offset_, piece)};
  current_offset_ += piece;
  if (current_offset_ == current_.size()) {
    ++progress_.chunks_transferred;
    progress_.bytes_transferred += current_.size();
    current_id_.reset();
    // Kept until the next call: out.body points into it.
    finished_ = std::move(current_);
    current_ = Bytes();
    rate_.update(now, progress_.bytes_transferred);
    progress_.bytes_per_second = rate_.bytes_per_second();
  }
  return out;
}

void SyncSender::on_timer(Instant now) {
  if (state_ == SyncState::kActive && now - last_heard_ >= config_.stall_timeout) {
    fail(now, Code::kDeadlineExceeded, "no message from the receiver for " +
                                           std::to_string(to_ms(config_.stall_timeout)) + " ms",
         true);
  }
}

std::optional<Instant> SyncSender::next_deadline() const {
  if (state_ != SyncState::kActive) {
    return std::nullopt;
  }
  return last_heard_ + config_.stall_timeout;
}

void SyncSender::abort(Instant now, const Error& error) { fail(now, error.code, error.message, true); }

void SyncSender::fail(Instant now, Code code, std::string message, bool tell_peer) {
  (void)now;
  if (state_ != SyncState::kActive) {
    return;
  }
  SHOAL_ASSERT(code != Code::kOk);
  state_ = SyncState::kFailed;
  error_ = Error{code, std::move(message)};
  if (tell_peer) {
    end_to_send_ = SyncMessage{.type = SyncMessageType::kEnd, .session = session_, .code = code, .text = error_.message};
  }
  requests_.clear();
  current_.clear();
  current_id_.reset();
}

// ---- Receiver ----

SyncReceiver::SyncReceiver(const SyncConfig& config, SyncSink& sink, Instant now)
    : config_(config), sink_(sink), started_(now), last_heard_(now) {
  SHOAL_ASSERT(config_.window_chunks > 0);
  SHOAL_ASSERT(config_.window_chunks <= kWindowChunksMax);
  SHOAL_ASSERT(config_.get_batch > 0);
  SHOAL_ASSERT(config_.get_batch <= kGetIdsMax);
  SHOAL_ASSERT(config_.missing_batch > 0);
  SHOAL_ASSERT(config_.chunk_attempts_max > 0);
  SHOAL_ASSERT(config_.chunk_bytes_max <= kSyncChunkBytesMax);
  rate_.start(now);
}

void SyncReceiver::on_message(Instant now, ByteView bytes) {
  if (state_ != SyncState::kActive) {
    return;
  }
  auto message = decode_sync_message_view(bytes);
  if (!message) {
    fail(now, Code::kAborted, "malformed message from sender: " + message.error().message, true);
    return;
  }
  on_message(now, *message);
}

void SyncReceiver::on_message(Instant now, const SyncMessage& m) {
  if (state_ != SyncState::kActive) {
    return;
  }
  if (m.type == SyncMessageType::kOffer) {
    handle_offer(now, m);
    return;
  }
  if (!offer_seen_ || m.session != session_) {
    fail(now, Code::kAborted, "message for an unknown session", true);
    return;
  }
  last_heard_ = now;
  switch (m.type) {
    case SyncMessageType::kChunk:
      handle_chunk(now, m);
      return;
    case SyncMessageType::kMissing:
      if (in_flight_.empty() || assembling_ || in_flight_.front().ref.id != m.id) {
        fail(now, Code::kAborted, "missing-notice for a chunk not at the head of the window", true);
        return;
      }
      // The sender's snapshot is incomplete: no retry on this peer can help.
      fail(now, Code::kNotFound, "sender lacks chunk " + to_hex(m.id).substr(0, 16), true);
      return;
    case SyncMessageType::kEnd:
      fail(now, m.code == Code::kOk ? Code::kAborted : m.code, "sender ended the transfer: " + m.text, false);
      return;
    default:
      fail(now, Code::kAborted, "unexpected message type from sender", true);
      return;
  }
}

void SyncReceiver::handle_offer(Instant now, const SyncMessage& m) {
  if (offer_seen_) {
    fail(now, Code::kAborted, "second offer in one session", true);
    return;
  }
  offer_seen_ = true;
  session_ = m.session;
  project_ = m.project;
  snapshot_ = m.id;
  progress_.size_hint = m.size_hint;
  started_ = now;
  last_heard_ = now;
  rate_.start(now);
  auto held = sink_.has_snapshot(snapshot_);
  if (!held) {
    fail(now, held.error().code, "checking snapshot: " + held.error().message, true);
    return;
  }
  if (*held) {
    progress_.snapshot_already_held = true;
    progress_.walk_complete = true;
    state_ = SyncState::kDone;
    end_to_send_ = SyncMessage{.type = SyncMessageType::kEnd, .session = session_, .code = Code::kOk,
                               .text = "snapshot already held"};
    return;
  }
  const ChunkId root[1] = {snapshot_};
  auto missing = sink_.missing(root);
  if (!missing) {
    fail(now, missing.error().code, "checking root: " + missing.error().message, true);
    return;
  }
  if (missing->empty()) {
    ++progress_.chunks_already_held;
    expand_stack_.push_back(snapshot_);  // Resume: the root arrived in an earlier session.
  } else {
    want_manifests_.push_back(Want{ChunkRef{snapshot_, ChunkKind::kManifest}, 0});
    wanted_.insert(snapshot_);
    ++progress_.chunks_wanted;
  }
}

void SyncReceiver::handle_chunk(Instant now, const SyncMessage& m) {
  if (in_flight_.empty() || in_flight_.front().ref.id != m.id) {
    fail(now, Code::kAborted, "chunk " + to_hex(m.id).substr(0, 16) + " not at the head of the window", true);
    return;
  }
  if (!assembling_) {
    if (m.offset != 0) {
      fail(now, Code::kAborted, "chunk does not start at offset 0", true);
      return;
    }
    if (m.total > config_.chunk_bytes_max) {
      fail(now, Code::kAborted, "chunk of " + std::to_string(m.total) + " bytes, limit " +
                                    std::to_string(config_.chunk_bytes_max), true);
      return;
    }
    assembling_ = true;
    assembly_total_ = m.total;
    assembly_.clear();
  }
  const ByteView data = m.piece();
  if (m.total != assembly_total_ || m.offset != assembly_.size() || (data.empty() && m.total != 0)) {
    fail(now, Code::kAborted, "chunk piece out of sequence", true);
    return;
  }
  if (m.offset + data.size() > assembly_total_) {  // decode_sync_message checks it too; the driver may not.
    fail(now, Code::kAborted, "chunk piece ends past the chunk's size", true);
    return;
  }
  if (assembly_.empty() && data.size() == assembly_total_) {
    assembly_.reserve(data.size());  // The usual case, a chunk in one piece: one exact allocation.
  }
  // Grow only by what arrived: a peer's announced total is not an allocation.
  assembly_.insert(assembly_.end(), data.begin(), data.end());
  if (assembly_.size() == assembly_total_) {
    chunk_complete(now);
  }
}

void SyncReceiver::chunk_complete(Instant now) {
  SHOAL_ASSERT(!in_flight_.empty());
  SHOAL_ASSERT(assembly_.size() == assembly_total_);
  Want want = in_flight_.front();
  in_flight_.pop_front();
  assembling_ = false;
  Bytes bytes = std::move(assembly_);
  assembly_ = Bytes();
  const std::size_t size = bytes.size();
  // Data chunks may be verified on another thread (refusals come back through
  // take_refused); manifests at once, because the walk reads them next.
  auto stored = want.ref.kind == ChunkKind::kData ? sink_.put_deferred(want.ref.id, std::move(bytes))
                                                  : sink_.put(want.ref.id, bytes);
  if (!stored) {
    if (stored.error().code != Code::kCorruption) {
      fail(now, stored.error().code, "storing chunk: " + stored.error().message, true);
      return;
    }
    ++progress_.chunks_refused;
    ++want.attempts;
    if (want.attempts >= config_.chunk_attempts_max) {
      fail(now, Code::kCorruption, "chunk " + to_hex(want.ref.id).substr(0, 16) + " arrived damaged " +
                                       std::to_string(want.attempts) + " times",
           true);
      return;
    }
    // Fetch it again first: it is the oldest thing the receiver waits for.
    auto& queue = want.ref.kind == ChunkKind::kManifest ? want_manifests_ : want_data_;
    queue.push_front(want);
    return;
  }
  wanted_.erase(want.ref.id);
  ++progress_.chunks_transferred;
  progress_.bytes_transferred += size;
  if (want.ref.kind == ChunkKind::kManifest) {
    expand_stack_.push_back(want.ref.id);
  }
  rate_.update(now, progress_.bytes_transferred);
  progress_.bytes_per_second = rate_.bytes_per_second();
  update_eta(now);
}

Status SyncReceiver::expand(const ChunkId& manifest) {
  auto bytes = sink_.read(manifest);
  if (!bytes) {
    return make_error(bytes.error().code, "reading manifest: " + bytes.error().message);
  }
  auto refs = sink_.references(manifest, *bytes);
  if (!refs) {
    return make_error(refs.error().code, "manifest " + to_hex(manifest).substr(0, 16) + ": " + refs.error().message);
  }
  ++progress_.manifests_walked;
  std::vector<ChunkId> ids;
  for (std::size_t start = 0; start < refs->size(); start += config_.missing_batch) {
    const std::size_t end = std::min(refs->size(), start + config_.missing_batch);
    ids.clear();
    for (std::size_t i = start; i < end; ++i) {
      ids.push_back((*refs)[i].id);
    }
    auto missing = sink_.missing(ids);
    if (!missing) {
      return make_error(missing.error().code, "checking chunks: " + missing.error().message);
    }
    std::unordered_set<ChunkId, ChunkIdHasher> lacking(missing->begin(), missing->end());
    for (std::size_t i = start; i < end; ++i) {
      const ChunkRef& ref = (*refs)[i];
      if (lacking.contains(ref.id)) {
        if (wanted_.insert(ref.id).second) {
          ++progress_.chunks_wanted;
          auto& queue = ref.kind == ChunkKind::kManifest ? want_manifests_ : want_data_;
          queue.push_back(Want{ref, 0});
        }
        continue;
      }
      ++progress_.chunks_already_held;
      if (ref.kind == ChunkKind::kManifest) {
        auto complete = sink_.complete_below(ref.id);
        if (!complete) {
          return make_error(complete.error().code, "checking manifest: " + complete.error().message);
        }
        if (!*complete) {
          expand_stack_.push_back(ref.id);
        }
      }
    }
  }
  return ok_status();
}

Status SyncReceiver::walk(std::size_t manifests_max) {
  // Pause while enough work is queued: the queue, not the tree, bounds memory.
  for (std::size_t n = 0; n < manifests_max && !expand_stack_.empty() &&
                          want_data_.size() + want_manifests_.size() < config_.want_queue_max;
       ++n) {
    const ChunkId manifest = expand_stack_.back();
    expand_stack_.pop_back();
    SHOAL_TRY_STATUS(expand(manifest));
  }
  return ok_status();
}

std::optional<Bytes> SyncReceiver::poll_message(Instant now) {
  if (end_to_send_) {
    Bytes out = encode_sync_message(*end_to_send_);
    end_to_send_.reset();
    return out;
  }
  if (state_ != SyncState::kActive || !offer_seen_) {
    return std::nullopt;
  }
  last_poll_ = now;
  // Deferred chunks that failed verification: fetch them again, first.
  for (const ChunkId& id : sink_.take_refused()) {
    ++progress_.chunks_refused;
    const std::uint32_t attempts = ++refused_attempts_[id];
    if (attempts >= config_.chunk_attempts_max) {
      fail(now, Code::kCorruption, "chunk " + to_hex(id).substr(0, 16) + " arrived damaged " +
                                       std::to_string(attempts) + " times",
           true);
      return poll_message(now);
    }
    if (progress_.chunks_transferred > 0) {
      --progress_.chunks_transferred;
    }
    wanted_.insert(id);
    want_data_.push_front(Want{.ref = ChunkRef{.id = id, .kind = ChunkKind::kData}, .attempts = attempts});
  }
  const std::size_t room = config_.window_chunks - std::min(config_.window_chunks, in_flight_.size());
  const bool can_ask = room > 0 && (!want_manifests_.empty() || !want_data_.empty());
  // Requests first: what the walk found goes out before it reads more
  // manifests, so the sender streams while this end walks. With requests in
  // flight the walk goes in steps (their answers bring the next poll); with
  // none, it runs until it finds something to ask for or ends.
  if (!can_ask) {
    const std::size_t step = in_flight_.empty() ? SIZE_MAX : kWalkManifestsPerPoll;
    if (auto walked = walk(step); !walked) {
      fail(now, walked.error().code, walked.error().message, true);
      return poll_message(now);
    }
  }
  if (!progress_.walk_complete && expand_stack_.empty() && want_manifests_.empty() &&
      std::none_of(in_flight_.begin(), in_flight_.end(),
                   [](const Want& w) { return w.ref.kind == ChunkKind::kManifest; })) {
    progress_.walk_complete = true;  // No manifest left to read: chunks_wanted is final.
  }
  if (room > 0 && (!want_manifests_.empty() || !want_data_.empty())) {
    SyncMessage get{.type = SyncMessageType::kGet, .session = session_};
    const std::size_t batch = std::min(room, config_.get_batch);
    while (get.ids.size() < batch && (!want_manifests_.empty() || !want_data_.empty())) {
      auto& queue = !want_manifests_.empty() ? want_manifests_ : want_data_;
      in_flight_.push_back(queue.front());
      get.ids.push_back(queue.front().ref.id);
      queue.pop_front();
    }
    progress_.chunks_requested += get.ids.size();
    progress_.in_flight_max = std::max(progress_.in_flight_max, in_flight_.size());
    SHOAL_ASSERT(in_flight_.size() <= config_.window_chunks);
    return encode_sync_message(get);
  }
  maybe_commit(now);
  if (end_to_send_) {
    return poll_message(now);
  }
  return std::nullopt;
}

void SyncReceiver::maybe_commit(Instant now) {
  if (!expand_stack_.empty() || !want_manifests_.empty() || !want_data_.empty() || !in_flight_.empty()) {
    return;
  }
  SHOAL_ASSERT(wanted_.empty());
  progress_.walk_complete = true;
  // Deferred verifications still running: poll again shortly (next_deadline).
  verifying_ = sink_.verifying() > 0;
  if (verifying_) {
    return;
  }
  auto committed = sink_.commit(snapshot_);
  if (!committed) {
    fail(now, committed.error().code, "commit: " + committed.error().message, true);
    return;
  }
  state_ = SyncState::kDone;
  progress_.eta = Duration(0);
  end_to_send_ = SyncMessage{.type = SyncMessageType::kEnd, .session = session_, .code = Code::kOk, .text = "committed"};
}

void SyncReceiver::update_eta(Instant now) {
  (void)now;
  const double rate = progress_.bytes_per_second;
  if (rate <= 0 || progress_.chunks_transferred == 0) {
    return;
  }
  double remaining_bytes = 0;
  if (progress_.walk_complete) {
    const double per_chunk =
        static_cast<double>(progress_.bytes_transferred) / static_cast<double>(progress_.chunks_transferred);
    remaining_bytes = per_chunk * static_cast<double>(progress_.chunks_wanted - progress_.chunks_transferred);
  } else if (progress_.size_hint > progress_.bytes_transferred) {
    // An upper bound until the walk ends: chunks already held are not subtracted.
    remaining_bytes = static_cast<double>(progress_.size_hint - progress_.bytes_transferred);
  } else {
    return;
  }
  progress_.eta = Duration(static_cast<std::int64_t>(remaining_bytes / rate * 1e6));
}

void SyncReceiver::on_timer(Instant now) {
  if (state_ == SyncState::kActive && !in_flight_.empty() && now - last_heard_ >= config_.stall_timeout) {
    fail(now, Code::kDeadlineExceeded, "no chunk data for " + std::to_string(to_ms(config_.stall_timeout)) + " ms",
         true);
  }
}

std::optional<Instant> SyncReceiver::next_deadline() const {
  if (state_ == SyncState::kActive && verifying_) {
    return last_poll_ + kVerifyPollInterval;  // Everything arrived; the sink is still verifying.
  }
  if (state_ != SyncState::kActive || in_flight_.empty()) {
    return std::nullopt;
  }
  return last_heard_ + config_.stall_timeout;
}

void SyncReceiver::abort(Instant now, const Error& error) { fail(now, error.code, error.message, true); }

void SyncReceiver::fail(Instant now, Code code, std::string message, bool tell_peer) {
  (void)now;
  if (state_ != SyncState::kActive) {
    return;
  }
  SHOAL_ASSERT(code != Code::kOk);
  state_ = SyncState::kFailed;
  error_ = Error{code, std::move(message)};
  if (tell_peer && offer_seen_) {
    end_to_send_ = SyncMessage{.type = SyncMessageType::kEnd, .session = session_, .code = code, .text = error_.message};
  }
  expand_stack_.clear();
  want_manifests_.clear();
  want_data_.clear();
  wanted_.clear();
  in_flight_.clear();
  assembly_ = Bytes();
  assembling_ = false;
}

}  // namespace shoal::transfer
