// node/core/placement.cc: placement values, validation and msgpack form.
#include "node/core/placement.h"

#include <algorithm>

namespace shoal::core {
namespace {

void encode_node(Encoder& out, const NodeId& id) { out.bin(ByteView(id.bytes.data(), id.bytes.size())); }

NodeId decode_node(Reader& in) {
  NodeId id;
  in.bin_exact(id.bytes);
  return id;
}

void encode_nodes(Encoder& out, const std::vector<NodeId>& nodes) {
  out.array(static_cast<std::uint32_t>(nodes.size()));
  for (const NodeId& id : nodes) encode_node(out, id);
}

std::vector<NodeId> decode_nodes(Reader& in) {
  Reader list = in.array(kReplicasMax);
  std::vector<NodeId> nodes;
  while (list.ok() && !list.at_end()) nodes.push_back(decode_node(list));
  return nodes;
}

}  // namespace

std::string_view project_state_name(ProjectState state) {
  switch (state) {
    case ProjectState::kStopped: return "stopped";
    case ProjectState::kStarting: return "starting";
    case ProjectState::kRunning: return "running";
    case ProjectState::kSaving: return "saving";
    case ProjectState::kStopping: return "stopping";
    case ProjectState::kMoving: return "moving";
    case ProjectState::kError: return "error";
    case ProjectState::kDeleted: return "deleted";
  }
  return "unknown";
}

Status validate_project_id(std::string_view id) {
  if (id.empty() || id.size() > kProjectIdBytesMax) {
    return make_error(Code::kInvalidArgument, "project id must be 1-64 characters");
  }
  if (id.front() == '.') return make_error(Code::kInvalidArgument, "project id must not start with '.'");
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return make_error(Code::kInvalidArgument,
                        "project id may only contain letters, digits, '.', '_' and '-'");
    }
  }
  return {};
}

bool Placement::is_replica(const NodeId& node) const {
  return std::find(replicas.begin(), replicas.end(), node) != replicas.end();
}

bool same_node_set(const std::vector<NodeId>& a, const std::vector<NodeId>& b) {
  if (a.size() != b.size()) return false;
  std::vector<NodeId> x = a, y = b;
  std::sort(x.begin(), x.end());
  std::sort(y.begin(), y.end());
  return x == y;
}

void encode_placement(Encoder& out, const Placement& p) {
  out.array(10);
  out.str(p.project).u64(p.version).u64(p.epoch);
  encode_node(out, p.primary);
  encode_nodes(out, p.replicas);
  out.u64(static_cast<std::uint64_t>(p.state));
  out.array(3).bin(ByteView(p.last_ack.id.data(), p.last_ack.id.size())).u64(p.last_ack.seq).u64(p.last_ack.epoch);
  out.str(p.preferred_dc).u64(p.quota_bytes);
  out.u64(0);  // Reserved (flags) so old nodes can read newer values.
}

Placement decode_placement(Reader& in) {
  Placement p;
  Reader r = in.array(16);
  p.project = r.str(kProjectIdBytesMax);
  p.version = r.u64();
  p.epoch = r.u64();
  p.primary = decode_node(r);
  p.replicas = decode_nodes(r);
  p.state = static_cast<ProjectState>(r.u64_max(kProjectStateMax));
  Reader ack = r.array(3);
  ack.bin_exact(p.last_ack.id);
  p.last_ack.seq = ack.u64();
  p.last_ack.epoch = ack.at_end() ? 0 : ack.u64();  // Absent in values written before it existed.
  ack.expect_end();
  p.preferred_dc = r.str(kDcNameBytesMax);
  p.quota_bytes = r.u64();
  r.u64();  // Reserved.
  while (r.ok() && !r.at_end()) r.skip();  // Fields added by newer versions.
  return p;
}

void encode_register_value(Encoder& out, const RegisterValue& v) {
  out.array(4).u64(v.generation);
  encode_nodes(out, v.acceptors);
  out.boolean(v.closed);
  encode_placement(out, v.placement);
}

RegisterValue decode_register_value(Reader& in) {
  RegisterValue v;
  Reader r = in.array(4);
  v.generation = r.u64();
  v.acceptors = decode_nodes(r);
  v.closed = r.boolean();
  v.placement = decode_placement(r);
  r.expect_end();
  return v;
}

}  // namespace shoal::core
