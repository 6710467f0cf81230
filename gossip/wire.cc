#include "gossip/wire.h"

#include <limits>

namespace shoal::gossip::wire {
namespace {

constexpr std::size_t kHealthItems = 5;
constexpr std::size_t kDigestItems = 5;
constexpr std::size_t kRecordItems = 12;
constexpr std::uint64_t kU32Max = std::numeric_limits<std::uint32_t>::max();

// --- encoding -------------------------------------------------------------

void put_id(Encoder& e, const NodeId& id) { e.bin(ByteView(id.bytes)); }

void put_health(Encoder& e, const Health& h) {
  e.array(kHealthItems)
      .u64(h.load_milli)
      .u64(h.free_disk_bytes)
      .u64(h.local_health)
      .u64(h.projects_hosted)
      .str(h.version);
}

void put_digest(Encoder& e, const Digest& d) {
  e.array(kDigestItems);
  put_id(e, d.id);
  e.u64(d.incarnation).u64(d.state_seq).u64(d.catalog_version);
  put_health(e, d.health);
}

void put_record(Encoder& e, const MemberRecord& r) {
  SHOAL_ASSERT(r.name.size() <= kNameBytesMax);
  SHOAL_ASSERT(r.dc.size() <= kDcBytesMax);
  SHOAL_ASSERT(r.addr.host.size() <= kHostBytesMax);
  e.array(kRecordItems);
  put_id(e, r.id);
  e.str(r.name).str(r.dc).str(r.addr.host).u64(r.addr.port).bin(ByteView(r.public_key));
  e.u64(r.incarnation).u64(static_cast<std::uint64_t>(r.status)).boolean(r.stalled);
  e.u64(r.state_seq).u64(r.catalog_version);
  put_health(e, r.health);
}

struct EncodeVisitor {
  Encoder& e;
  void operator()(const Ping& m) {
    e.array(4).u64(static_cast<std::uint64_t>(Type::kPing)).u64(m.seq);
    put_id(e, m.target);
    put_digest(e, m.source);
  }
  void operator()(const PingReq& m) {
    e.array(6).u64(static_cast<std::uint64_t>(Type::kPingReq)).u64(m.seq);
    put_id(e, m.target);
    e.str(m.target_addr.host).u64(m.target_addr.port).boolean(m.nack);
  }
  void operator()(const Ack& m) {
    e.array(3).u64(static_cast<std::uint64_t>(Type::kAck)).u64(m.seq);
    if (m.source) {
      put_digest(e, *m.source);
    } else {
      e.nil();
    }
  }
  void operator()(const Nack& m) { e.array(2).u64(static_cast<std::uint64_t>(Type::kNack)).u64(m.seq); }
  void operator()(const Alive& m) {
    e.array(2).u64(static_cast<std::uint64_t>(Type::kAlive));
    put_record(e, m.member);
  }
  void operator()(const Suspect& m) {
    e.array(5).u64(static_cast<std::uint64_t>(Type::kSuspect));
    put_id(e, m.id);
    e.u64(m.incarnation);
    put_id(e, m.from);
    e.boolean(m.stalled);
  }
  void operator()(const Dead& m) {
    e.array(4).u64(static_cast<std::uint64_t>(Type::kDead));
    put_id(e, m.id);
    e.u64(m.incarnation);
    put_id(e, m.from);
  }
  void operator()(const Leave& m) {
    e.array(3).u64(static_cast<std::uint64_t>(Type::kLeave));
    put_id(e, m.id);
    e.u64(m.incarnation);
  }
  void operator()(const State& m) {
    e.array(5).u64(static_cast<std::uint64_t>(Type::kState));
    put_id(e, m.id);
    e.u64(m.state_seq).u64(m.catalog_version);
    put_health(e, m.health);
  }
};

// --- decoding -------------------------------------------------------------

NodeId get_id(Reader& r) {
  NodeId id;
  r.bin_exact(id.bytes);
  return id;
}

Health get_health(Reader& r) {
  Reader h = r.array(kHealthItems);
  Health out;
  out.load_milli = static_cast<std::uint32_t>(h.u64_max(kU32Max));
  out.free_disk_bytes = h.u64();
  out.local_health = static_cast<std::uint32_t>(h.u64_max(kU32Max));
  out.projects_hosted = static_cast<std::uint32_t>(h.u64_max(kU32Max));
  out.version = h.str(kVersionBytesMax);
  h.expect_end();
  return out;
}

Digest get_digest(Reader& r) {
  Reader d = r.array(kDigestItems);
  Digest out;
  out.id = get_id(d);
  out.incarnation = d.u64();
  out.state_seq = d.u64();
  out.catalog_version = d.u64();
  out.health = get_health(d);
  d.expect_end();
  return out;
}

Address get_address(Reader& r) {
  Address a;
  a.host = r.str(kHostBytesMax);
  a.port = static_cast<std::uint16_t>(r.u64_max(std::numeric_limits<std::uint16_t>::max()));
  return a;
}

MemberRecord get_record(Reader& r) {
  Reader m = r.array(kRecordItems);
  MemberRecord out;
  out.id = get_id(m);
  out.name = m.str(kNameBytesMax);
  out.dc = m.str(kDcBytesMax);
  out.addr = get_address(m);
  m.bin_exact(out.public_key);
  out.incarnation = m.u64();
  out.status = static_cast<MemberStatus>(m.u64_max(static_cast<std::uint64_t>(MemberStatus::kLeft)));
  out.stalled = m.boolean();
  out.state_seq = m.u64();
  out.catalog_version = m.u64();
  out.health = get_health(m);
  m.expect_end();
  return out;
}

// Reads the body of a message whose tag was already read. Returns nullopt
// for an unknown tag (the caller counts and skips it).
std::optional<Message> get_message(std::uint64_t tag, Reader& r) {
  switch (static_cast<Type>(tag)) {
    case Type::kPing: {
      Ping m;
      m.seq = r.u64();
      m.target = get_id(r);
      m.source = get_digest(r);
      return m;
    }
    case Type::kPingReq: {
      PingReq m;
      m.seq = r.u64();
      m.target = get_id(r);
      m.target_addr = get_address(r);
      m.nack = r.boolean();
      return m;
    }
    case Type::kAck: {
      Ack m;
      m.seq = r.u64();
      if (r.is_nil()) {
        r.skip();
      } else {
        m.source = get_digest(r);
      }
      return m;
    }
    case Type::kNack: {
      Nack m;
      m.seq = r.u64();
      return m;
    }
    case Type::kAlive: {
      Alive m;
      m.member = get_record(r);
      m.member.status = MemberStatus::kAlive;
      m.member.stalled = false;
      return m;
    }
    case Type::kSuspect: {
      Suspect m;
      m.id = get_id(r);
      m.incarnation = r.u64();
      m.from = get_id(r);
      m.stalled = r.boolean();
      return m;
    }
    case Type::kDead: {
      Dead m;
      m.id = get_id(r);
      m.incarnation = r.u64();
      m.from = get_id(r);
      return m;
    }
    case Type::kLeave: {
      Leave m;
      m.id = get_id(r);
      m.incarnation = r.u64();
      return m;
    }
    case Type::kState: {
      State m;
      m.id = get_id(r);
      m.state_seq = r.u64();
      m.catalog_version = r.u64();
      m.health = get_health(r);
      return m;
    }
    case Type::kCompound:
    case Type::kPushPull:
      break;
  }
  return std::nullopt;
}

constexpr std::size_t kMessageItemsMax = 16;

}  // namespace

DecodeLimits datagram_limits() {
  DecodeLimits limits;
  limits.input_bytes_max = kDatagramBytesMax;
  limits.array_items_max = kCompoundPartsMax + 1;
  limits.map_items_max = 0;
  limits.str_bytes_max = kHostBytesMax;
  limits.bin_bytes_max = kPublicKeyBytes;
  limits.depth_max = 5;  // compound > message > record > health.
  return limits;
}

DecodeLimits stream_limits(std::size_t members_max) {
  DecodeLimits limits;
  limits.input_bytes_max = 64 + members_max * kMemberRecordBytesMax;
  limits.array_items_max = std::max<std::size_t>(members_max, kRecordItems);
  limits.map_items_max = 0;
  limits.str_bytes_max = kHostBytesMax;
  limits.bin_bytes_max = kPublicKeyBytes;
  limits.depth_max = 5;  // push-pull > members > record > health.
  return limits;
}

Bytes encode(const Message& message) {
  Encoder e;
  std::visit(EncodeVisitor{e}, message);
  return e.take();
}

Bytes encode(const PushPull& push_pull) {
  Encoder e;
  e.array(3).u64(static_cast<std::uint64_t>(Type::kPushPull)).boolean(push_pull.join);
  e.array(static_cast<std::uint32_t>(push_pull.members.size()));
  for (const MemberRecord& r : push_pull.members) {
    put_record(e, r);
  }
  return e.take();
}

Bytes compound(std::span<const ByteView> parts) {
  SHOAL_ASSERT(parts.size() <= kCompoundPartsMax);
  std::size_t total = compound_overhead_bytes(parts.size());
  for (ByteView p : parts) {
    total += p.size();
  }
  Bytes out;
  out.reserve(total);
  const std::size_t items = parts.size() + 1;
  if (items <= 15) {
    out.push_back(static_cast<std::uint8_t>(0x90 | items));  // fixarray
  } else {
    out.push_back(0xdc);  // array 16
    out.push_back(static_cast<std::uint8_t>(items >> 8));
    out.push_back(static_cast<std::uint8_t>(items & 0xff));
  }
  out.push_back(static_cast<std::uint8_t>(Type::kCompound));  // positive fixint tag
  for (ByteView p : parts) {
    out.insert(out.end(), p.begin(), p.end());
  }
  SHOAL_ASSERT(out.size() <= total);
  return out;
}

Result<Packet> decode_packet(ByteView bytes) {
  auto decoded = Decoded::parse(bytes, datagram_limits());
  if (!decoded) {
    return std::unexpected(decoded.error());
  }
  Reader root = decoded->root(kCompoundPartsMax + 1);
  Packet packet;
  const std::uint64_t tag = root.u64();
  if (!root.ok()) {
    return std::unexpected(root.error());
  }
  auto read_one = [&packet](std::uint64_t message_tag, Reader& r) {
    std::optional<Message> m = get_message(message_tag, r);
    if (!m) {
      ++packet.unknown_types;
      return;
    }
    r.expect_end();
    packet.messages.push_back(std::move(*m));
  };
  if (tag == static_cast<std::uint64_t>(Type::kCompound)) {
    while (root.ok() && !root.at_end()) {
      Reader part = root.array(kMessageItemsMax);
      const std::uint64_t part_tag = part.u64();
      if (part_tag == static_cast<std::uint64_t>(Type::kCompound)) {
        return make_error(Code::kInvalidArgument, "nested compound message");
      }
      read_one(part_tag, part);
    }
  } else {
    read_one(tag, root);
  }
  if (!root.ok()) {
    return std::unexpected(root.error());
  }
  return packet;
}

Result<PushPull> decode_push_pull(ByteView bytes, std::size_t members_max) {
  auto decoded = Decoded::parse(bytes, stream_limits(members_max));
  if (!decoded) {
    return std::unexpected(decoded.error());
  }
  Reader root = decoded->root(3);
  if (root.u64() != static_cast<std::uint64_t>(Type::kPushPull)) {
    return make_error(Code::kInvalidArgument, "not a push-pull message");
  }
  PushPull out;
  out.join = root.boolean();
  Reader members = root.array(members_max);
  out.members.reserve(std::min(members.size(), members_max));
  while (members.ok() && !members.at_end()) {
    out.members.push_back(get_record(members));
  }
  root.expect_end();
  if (!root.ok()) {
    return std::unexpected(root.error());
  }
  return out;
}

}  // namespace shoal::gossip::wire
