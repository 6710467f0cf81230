#pragma once
// node/agent/agent.h: the running node. Owns the libuv loop and wires the
// gossip core (gossip::Membership) to its network (GossipNet), its durable
// state (DataDir), the admin API (AdminServer) and the health sampler.
// Time enters as uv_hrtime() converted to Instant; randomness is SystemRandom.
// Everything runs on the thread that calls run().
//
// Lifecycle: start() performs every start-up sanity check and binds every
// port, or returns one line saying what to fix; run() serves until SIGTERM,
// SIGINT or POST /v1/leave, then leaves the mesh gracefully (at most
// kLeaveTimeout), closes every socket and LMDB, and returns the exit code.

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/address.h"
#include "base/result.h"
#include "base/time.h"
#include "gossip/types.h"

namespace shoal::agent {

struct AgentOptions {
  std::string name;
  std::string dc;
  std::string data_dir;
  std::string cluster_key_file;
  Address bind{"127.0.0.1", 7946};
  std::optional<Address> advertise;  // Defaults to bind, which must then not be a wildcard.
  Address admin{"127.0.0.1", 7947};
  std::vector<Address> join;         // Empty: rejoin the members last seen, if any.
  gossip::Profile profile = gossip::Profile::kLan;
  bool fault_injection = false;      // Enables POST /v1/debug/drop.
  Duration save_interval = seconds(300);  // Periodic saves of running projects; 0 = off.
  Duration rebalance_after = seconds(600);  // A member alive this long draws replicas it outranks; 0 = off.
};

class Agent {
 public:
  static Result<std::unique_ptr<Agent>> start(const AgentOptions& options);
  virtual ~Agent() = default;
  // Runs the loop until shutdown. Returns the process exit code.
  virtual int run() = 0;
};

}  // namespace shoal::agent
