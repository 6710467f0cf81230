#include "gossip/types.h"

namespace shoal::gossip {

std::string_view status_name(MemberStatus status) {
  switch (status) {
    case MemberStatus::kAlive:
      return "alive";
    case MemberStatus::kSuspect:
      return "suspect";
    case MemberStatus::kDead:
      return "dead";
    case MemberStatus::kLeft:
      return "left";
  }
  return "unknown";
}

Result<MemberStatus> parse_status(std::string_view name) {
  for (MemberStatus s : {MemberStatus::kAlive, MemberStatus::kSuspect, MemberStatus::kDead, MemberStatus::kLeft}) {
    if (status_name(s) == name) {
      return s;
    }
  }
  return make_error(Code::kInvalidArgument,
                    "unknown member status '" + std::string(name) + "' (use alive, suspect, dead or left)");
}

Result<Profile> parse_profile(std::string_view name) {
  if (name == "lan") {
    return Profile::kLan;
  }
  if (name == "wan") {
    return Profile::kWan;
  }
  if (name == "local") {
    return Profile::kLocal;
  }
  return make_error(Code::kInvalidArgument, "unknown profile '" + std::string(name) + "' (use lan, wan or local)");
}

Config profile_config(Profile profile) {
  Config c;  // Defaults are the LAN profile (memberlist DefaultLANConfig).
  switch (profile) {
    case Profile::kLan:
      break;
    case Profile::kWan:  // memberlist DefaultWANConfig.
      c.probe_interval = seconds(5);
      c.probe_timeout = seconds(3);
      c.suspicion_mult = 6;
      c.gossip_interval = milliseconds(500);
      c.gossip_nodes = 4;
      c.push_pull_interval = seconds(60);
      c.gossip_to_dead = seconds(60);
      c.reconnect_interval = seconds(10);
      c.eager_gossip_interval = milliseconds(50);
      break;
    case Profile::kLocal:  // memberlist DefaultLocalConfig.
      c.probe_interval = seconds(1);
      c.probe_timeout = milliseconds(200);
      c.indirect_checks = 1;
      c.suspicion_mult = 3;
      c.gossip_interval = milliseconds(100);
      c.retransmit_mult = 2;
      c.push_pull_interval = seconds(15);
      c.gossip_to_dead = seconds(15);
      c.reconnect_interval = seconds(1);
      c.eager_gossip_interval = milliseconds(10);
      break;
  }
  return c;
}

std::string_view event_name(EventKind kind) {
  switch (kind) {
    case EventKind::kJoined:
      return "joined";
    case EventKind::kSuspect:
      return "suspect";
    case EventKind::kStalled:
      return "stalled";
    case EventKind::kAlive:
      return "alive";
    case EventKind::kDead:
      return "dead";
    case EventKind::kLeft:
      return "left";
    case EventKind::kHealthChanged:
      return "health_changed";
    case EventKind::kCatalogChanged:
      return "catalog_changed";
    case EventKind::kUpdated:
      return "updated";
  }
  return "unknown";
}

}  // namespace shoal::gossip
