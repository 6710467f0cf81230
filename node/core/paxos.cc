// node/core/paxos.cc: acceptor step function and message codec.
#include "node/core/paxos.h"

#include "base/assert.h"
#include "base/codec.h"

namespace shoal::core {
namespace {

enum class Kind : std::uint64_t {
  kPrepare = 1, kPromise = 2, kAccept = 3, kAccepted = 4, kReject = 5, kLocate = 6, kLocated = 7,
  kInquire = 8, kInquired = 9, kForward = 10, kForwardReply = 11,
};

Status check_size(std::string_view what, std::size_t bytes, std::size_t max) {
  if (bytes <= max) return {};
  return make_error(Code::kInvalidArgument, "a forwarded " + std::string(what) + " of " + std::to_string(bytes) +
                                                " bytes exceeds the " + std::to_string(max) +
                                                " a placement datagram carries");
}

// Messages are msgpack arrays: [kind, project, generation, ballot, ...].
void encode_ballot(Encoder& out, const Ballot& b) {
  out.array(2).u64(b.counter).bin(ByteView(b.proposer.bytes.data(), b.proposer.bytes.size()));
}

Ballot decode_ballot(Reader& in) {
  Ballot b;
  Reader r = in.array(2);
  b.counter = r.u64();
  r.bin_exact(b.proposer.bytes);
  r.expect_end();
  return b;
}

void encode_optional_value(Encoder& out, const std::optional<RegisterValue>& value) {
  if (value) {
    encode_register_value(out, *value);
  } else {
    out.nil();
  }
}

std::optional<RegisterValue> decode_optional_value(Reader& in) {
  if (in.is_nil()) {
    in.skip();
    return std::nullopt;
  }
  return decode_register_value(in);
}

}  // namespace

Status check_forward(const Forward& forward) {
  if (auto s = check_size("method", forward.method.size(), kForwardMethodBytesMax); !s) return s;
  if (auto s = check_size("path", forward.path.size(), kForwardPathBytesMax); !s) return s;
  return check_size("request body", forward.body.size(), kForwardBodyBytesMax);
}

Status check_forward_reply(const ForwardReply& reply) {
  if (reply.status > 999) return make_error(Code::kInvalidArgument, "a forwarded reply has no HTTP status");
  return check_size("reply body", reply.body.size(), kForwardBodyBytesMax);
}

Bytes encode_acceptor_record(const AcceptorRecord& record) {
  Encoder out;
  out.array(3);
  encode_ballot(out, record.promised);
  encode_ballot(out, record.accepted);
  encode_optional_value(out, record.value);
  return out.take();
}

Result<AcceptorRecord> decode_acceptor_record(ByteView bytes) {
  auto parsed = Decoded::parse(bytes);
  if (!parsed) return std::unexpected(parsed.error());
  Reader r = parsed->root(3);
  AcceptorRecord record;
  record.promised = decode_ballot(r);
  record.accepted = decode_ballot(r);
  record.value = decode_optional_value(r);
  r.expect_end();
  if (!r.ok()) return std::unexpected(r.error());
  return record;
}

const std::string& message_project(const Message& message) {
  return std::visit([](const auto& m) -> const std::string& { return m.project; }, message);
}

std::uint64_t message_generation(const Message& message) {
  return std::visit([](const auto& m) { return m.generation; }, message);
}

Bytes encode_message(const Message& message) {
  Encoder out;
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        const auto head = [&](Kind kind, std::uint32_t items) {
          out.array(items).u64(static_cast<std::uint64_t>(kind)).str(m.project).u64(m.generation);
          if constexpr (requires { m.ballot; }) encode_ballot(out, m.ballot);
        };
        if constexpr (std::is_same_v<T, Forward>) {
          head(Kind::kForward, 7);
          out.u64(m.request_id).str(m.method).str(m.path).str(m.body);
        } else if constexpr (std::is_same_v<T, ForwardReply>) {
          head(Kind::kForwardReply, 6);
          out.u64(m.request_id).u64(m.status).str(m.body);
        } else if constexpr (std::is_same_v<T, Inquire>) {
          head(Kind::kInquire, 4);
          out.bin(ByteView(m.snapshot.data(), m.snapshot.size()));
        } else if constexpr (std::is_same_v<T, Inquired>) {
          head(Kind::kInquired, 6);
          out.boolean(m.holds).u64(m.snapshots).bin(ByteView(m.newest.data(), m.newest.size()));
        } else if constexpr (std::is_same_v<T, Locate>) {
          head(Kind::kLocate, 3);
        } else if constexpr (std::is_same_v<T, Located>) {
          head(Kind::kLocated, 5);
          out.boolean(m.known);
          out.array(static_cast<std::uint32_t>(m.acceptors.size()));
          for (const NodeId& id : m.acceptors) out.bin(ByteView(id.bytes.data(), id.bytes.size()));
        } else if constexpr (std::is_same_v<T, Prepare>) {
          head(Kind::kPrepare, 4);
        } else if constexpr (std::is_same_v<T, Promise>) {
          head(Kind::kPromise, 6);
          encode_ballot(out, m.accepted);
          encode_optional_value(out, m.value);
        } else if constexpr (std::is_same_v<T, Accept>) {
          head(Kind::kAccept, 6);
          encode_register_value(out, m.value);
          encode_ballot(out, m.next);
        } else if constexpr (std::is_same_v<T, Accepted>) {
          head(Kind::kAccepted, 4);
        } else {
          static_assert(std::is_same_v<T, Reject>);
          head(Kind::kReject, 5);
          encode_ballot(out, m.promised);
        }
      },
      message);
  return out.take();
}

Result<Message> decode_message(ByteView bytes) {
  auto parsed = Decoded::parse(bytes);
  if (!parsed) return std::unexpected(parsed.error());
  Reader r = parsed->root(8);
  const std::uint64_t kind = r.u64();
  std::string project = r.str(kProjectIdBytesMax);
  const std::uint64_t generation = r.u64();
  Message message;
  if (kind >= static_cast<std::uint64_t>(Kind::kLocate) && kind <= static_cast<std::uint64_t>(Kind::kForwardReply)) {
    if (kind == static_cast<std::uint64_t>(Kind::kForward)) {
      Forward m{std::move(project), generation, {}, {}, {}, {}};
      m.request_id = r.u64();
      m.method = r.str(kForwardMethodBytesMax);
      m.path = r.str(kForwardPathBytesMax);
      m.body = r.str(kForwardBodyBytesMax);
      message = std::move(m);
    } else if (kind == static_cast<std::uint64_t>(Kind::kForwardReply)) {
      ForwardReply m{std::move(project), generation, {}, {}, {}};
      m.request_id = r.u64();
      m.status = r.u64_max(999);
      m.body = r.str(kForwardBodyBytesMax);
      message = std::move(m);
    } else if (kind == static_cast<std::uint64_t>(Kind::kInquire)) {
      Inquire m{std::move(project), generation, {}};
      r.bin_exact(m.snapshot);
      message = std::move(m);
    } else if (kind == static_cast<std::uint64_t>(Kind::kInquired)) {
      Inquired m{std::move(project), generation, false, 0, {}};
      m.holds = r.boolean();
      m.snapshots = r.u64();
      r.bin_exact(m.newest);
      message = std::move(m);
    } else if (kind == static_cast<std::uint64_t>(Kind::kLocate)) {
      message = Locate{std::move(project), generation};
    } else {
      Located m{std::move(project), generation, r.boolean(), {}};
      Reader list = r.array(kReplicasMax);
      while (list.ok() && !list.at_end()) {
        NodeId id;
        list.bin_exact(id.bytes);
        m.acceptors.push_back(id);
      }
      message = std::move(m);
    }
    r.expect_end();
    if (!r.ok()) return std::unexpected(r.error());
    if (const Status valid = validate_project_id(message_project(message)); !valid) {
      return std::unexpected(valid.error());
    }
    return message;
  }
  const Ballot ballot = decode_ballot(r);
  switch (static_cast<Kind>(kind)) {
    case Kind::kPrepare:
      message = Prepare{std::move(project), generation, ballot};
      break;
    case Kind::kPromise: {
      Promise m{std::move(project), generation, ballot, {}, {}};
      m.accepted = decode_ballot(r);
      m.value = decode_optional_value(r);
      message = std::move(m);
      break;
    }
    case Kind::kAccept: {
      Accept m{std::move(project), generation, ballot, {}, {}};
      m.value = decode_register_value(r);
      m.next = decode_ballot(r);
      message = std::move(m);
      break;
    }
    case Kind::kAccepted:
      message = Accepted{std::move(project), generation, ballot};
      break;
    case Kind::kReject: {
      Reject m{std::move(project), generation, ballot, {}};
      m.promised = decode_ballot(r);
      message = std::move(m);
      break;
    }
    default:
      if (r.ok()) return make_error(Code::kInvalidArgument, "unknown placement message kind " + std::to_string(kind));
  }
  r.expect_end();
  if (!r.ok()) return std::unexpected(r.error());
  if (const Status valid = validate_project_id(message_project(message)); !valid) {
    return std::unexpected(valid.error());
  }
  return message;
}

AcceptorStep acceptor_step(const AcceptorRecord& record, const Message& request) {
  if (const auto* prepare = std::get_if<Prepare>(&request)) {
    if (prepare->ballot < record.promised) {
      return {std::nullopt, Reject{prepare->project, prepare->generation, prepare->ballot, record.promised}};
    }
    std::optional<AcceptorRecord> write;
    if (prepare->ballot > record.promised) {
      write = record;
      write->promised = prepare->ballot;
    }  // Equal: a retransmission; the promise is already durable.
    return {std::move(write),
            Promise{prepare->project, prepare->generation, prepare->ballot, record.accepted, record.value}};
  }
  const auto* accept = std::get_if<Accept>(&request);
  SHOAL_ASSERT(accept != nullptr);
  // A retransmission of what we already accepted is acknowledged again, even
  // though the piggybacked promise of `next` now exceeds it.
  // A ballot carries one value only; a different value at the same ballot
  // (a proposer that forgot its ballots) is refused below.
  if (!record.accepted.is_zero() && accept->ballot == record.accepted && record.value &&
      accept->value == *record.value) {
    return {std::nullopt, Accepted{accept->project, accept->generation, accept->ballot}};
  }
  if (accept->ballot < record.promised || accept->ballot <= record.accepted ||
      accept->value.generation != accept->generation) {
    return {std::nullopt, Reject{accept->project, accept->generation, accept->ballot, record.promised}};
  }
  AcceptorRecord next = record;
  next.accepted = accept->ballot;
  next.value = accept->value;
  next.promised = accept->ballot;
  // Only the same proposer's later ballot may be pre-promised.
  if (accept->next.proposer == accept->ballot.proposer && accept->next > accept->ballot) {
    next.promised = accept->next;
  }
  return {std::move(next), Accepted{accept->project, accept->generation, accept->ballot}};
}

}  // namespace shoal::core
