#pragma once
// node/agent/project_service.h: projects on the mesh, as this agent sees
// them. Owns the project routes (docs/projects-api.md), the operations they
// start (create, save, read, restore), and the repair loop: failover when a
// primary is confirmed dead, replacement of dead replicas, copying the last
// acknowledged snapshot to replicas that lack it, and materialising the
// working directory on the primary. Consensus goes through PlacementService,
// data through TransferService, disk work through `shoal snapshot` children.
// Single-threaded: the loop thread.

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/random.h"
#include "gossip/types.h"
#include "node/agent/admin_api.h"
#include "node/agent/http.h"
#include "node/agent/placement_service.h"
#include "node/agent/transfer_api.h"
#include "node/core/project_plan.h"

namespace shoal::agent {

inline constexpr std::size_t kReplicationFactor = 3;
inline constexpr Duration kFailoverGrace = seconds(3);
inline constexpr Duration kRepairInterval = seconds(1);
// How often a primary re-reads its register before acting (each read is a
// durable write on a majority of replicas, so not every repair round).
inline constexpr Duration kPrimaryCheckInterval = seconds(5);
inline constexpr std::size_t kOperationsKept = 512;
// How often a copy this node holds is checked against the committed placement.
inline constexpr Duration kObsoleteCheckInterval = seconds(10);
// At most one rebalancing move per this interval per node (it copies data).
inline constexpr Duration kRebalanceInterval = seconds(5);
// After this long up, the member view is complete (two LAN push-pull rounds):
// a listed replica absent from it is treated as gone.
inline constexpr Duration kViewSettledAfter = seconds(60);
// How often an agent that forwarded an operation to the primary asks for its state.
inline constexpr Duration kRemotePollInterval = milliseconds(400);

class ProjectService {
 public:
  struct Deps {
    uv_loop_t* loop = nullptr;
    PlacementService* placement = nullptr;
    TransferService* transfers = nullptr;
    Random* random = nullptr;
    NodeId self;
    std::string self_dc;
    std::string data_dir;
    std::function<std::vector<gossip::Member>()> members;
    std::function<void(const std::string& line)> publish;  // One /v1/events line.
    Duration save_interval = seconds(300);  // Periodic saves of running projects; 0 = off.
    Duration rebalance_after = seconds(600);  // Members alive this long draw replicas; 0 = off.
    // This node's store gained or lost snapshots: bump the gossiped catalog
    // version, so replicas of its projects look for what they lack.
    std::function<void()> holdings_changed;
  };
  explicit ProjectService(Deps deps);

  // nullopt when the path is not a project route.
  std::optional<AdminReply> handle(const HttpRequest& request);
  // Called often (every ~200 ms): transfer waits, and the repair loop once per kRepairInterval.
  void tick(Instant now);

  // A member's gossiped catalog version changed (it stored or dropped a
  // snapshot): look again, at the next repair round, for acknowledged
  // snapshots this node lacks.
  void on_catalog_changed(const NodeId& member);

  std::string working_dir(const std::string& project) const;
  // Prometheus text: placement messages, changes, failovers, saves, fencing.
  std::string render_metrics() const;

  // Fencing at the replica: refuses to catalog a received snapshot stamped
  // with an epoch older than the newest this node has accepted for the
  // project, unless it is that placement's acknowledged snapshot (which a new
  // replica must be able to receive from the next primary).
  Status check_incoming(const std::string& project, const Hash256& snapshot, std::uint64_t epoch);

 private:
  struct Operation {
    std::uint64_t id = 0;
    std::string kind;
    std::string project;
    std::string state = "running";
    std::string error;
    std::string code;
    nlohmann::json result;
    std::string forwarded_to;  // The primary's name when this operation runs there.
    std::uint64_t remote_operation = 0;  // Its operation id on that primary.
  };
  // A forwarded operation whose state this agent mirrors.
  struct RemotePoll {
    NodeId primary;
    std::uint64_t remote_operation = 0;
    Instant next;
    bool in_flight = false;
  };
  struct TransferWait {
    std::vector<std::uint64_t> ids;
    std::vector<NodeId> nodes;  // Parallel to ids.
    std::function<void(std::vector<NodeId> holders)> done;
  };

  std::optional<AdminReply> handle_request(const HttpRequest& request, bool forwarded);
  // Runs `local` when this node is the project's committed primary (or the
  // request was forwarded here); otherwise forwards the request to the
  // primary and mirrors the operation it starts there in `op`.
  void run_on_primary(std::uint64_t op, const HttpRequest& request, bool forwarded, std::function<void()> local);
  void forward_operation(std::uint64_t op, const NodeId& primary, const HttpRequest& request);
  void on_forward_started(std::uint64_t op, const NodeId& primary,
                          const Result<PlacementService::ForwardAnswer>& answer);
  void poll_forwarded(Instant now);
  void on_remote_state(std::uint64_t op, const Result<PlacementService::ForwardAnswer>& answer);
  PlacementService::ForwardAnswer serve_forward(const NodeId& from, const core::Forward& request);
  static Result<std::uint64_t> remote_operation_id(const PlacementService::ForwardAnswer& answer);
  static std::string remote_error_message(std::uint64_t status, const nlohmann::json& body);
  static Error unreachable(const std::string& primary_name, const Error& why);

  Operation& new_operation(std::string kind, std::string project);
  void succeed(std::uint64_t op, nlohmann::json result);
  void fail(std::uint64_t op, const Error& error);
  AdminReply started(const Operation& op) const;

  void start_create(std::uint64_t op, std::string project, std::string dc, std::uint64_t quota,
                    std::optional<std::string> from);
  void start_save(std::uint64_t op, const std::string& project);
  void start_read(std::uint64_t op, const std::string& project);
  // The committed placement plus what each replica holds (asked directly).
  void start_status(std::uint64_t op, const std::string& project);
  void start_restore(std::uint64_t op, const std::string& project, std::string to, std::string snapshot);
  // open: state running (the primary opens the working directory and saves
  // periodically). stop: a final save, then state stopped. delete: a final
  // tombstone; every replica then drops its copy. move: copy the acknowledged
  // snapshot to `to`, then make it primary (epoch + 1), in place of the
  // replica of its DC if it was not one.
  void start_set_state(std::uint64_t op, const std::string& project, core::ProjectState state);
  void start_stop(std::uint64_t op, const std::string& project, bool remove_workdir);
  void start_move(std::uint64_t op, const std::string& project, std::string to);
  // A save whose outcome goes to `done` (operations and the periodic saver).
  void save(const std::string& project, std::function<void(Result<nlohmann::json>)> done);
  void periodic_saves(Instant now);
  std::optional<gossip::Member> find_member(const std::string& spec) const;
  // Ranking weight from a member's gossiped health (core::health_weight).
  static double weight_of(const gossip::Member& m);
  // Anti-entropy on a replica: its record names an acknowledged snapshot it
  // lacks; ask the other replicas who holds it and pull from one.
  void maybe_pull(const core::Placement& placement, Instant now);
  void pull_if_lacking(const core::Placement& placement, Instant now);
  bool maybe_hand_off_primary(const core::Placement& placement, const std::vector<core::MemberInfo>& settled);

  // Runs `shoal snapshot create` of dir; done gets (id hex, the JSON it printed).
  void snapshot_dir(const std::string& project, const std::string& dir, std::uint64_t epoch,
                    std::function<void(Result<nlohmann::json>)> done);
  void restore_snapshot(const std::string& project, const std::string& snapshot_hex, const std::string& to,
                        bool force, std::function<void(Status)> done);
  // Pushes the snapshot to every node in `to`; done gets the nodes that now hold it.
  void push_to(const std::string& project, const std::string& snapshot_hex, const std::vector<NodeId>& to,
               std::function<void(std::vector<NodeId>)> done);
  // Whether `holders` are enough to acknowledge a save for this replica set:
  // a majority of it, in at least two data centers when the set spans two.
  bool enough_holders(const std::vector<NodeId>& replicas, const std::vector<NodeId>& holders) const;
  bool holds(const std::string& project, const core::SnapshotRef& ref);

  void repair(Instant now);
  void repair_one(const core::Placement& placement, Instant now);
  void act_as_primary(const core::Placement& fresh);
  // Copies of projects the committed placement no longer lists here: collected
  // once every listed replica holds this node's newest snapshot of it.
  void collect_obsolete(Instant now);
  void collect_one(const core::Placement& fresh, std::uint64_t token);
  bool obsolete_here(const core::Placement& fresh) const;
  bool still_collecting(const std::string& project, std::uint64_t token) const;
  void end_collection(const std::string& project, std::uint64_t token);
  void forget_if_still_obsolete(const std::string& project, const std::string& newest_hex, std::uint64_t token);
  void forget_copy(const core::Placement& fresh, const std::string& newest_hex);
  void read_register(const std::string& project, std::function<void(Result<core::RegisterValue>)> done);
  void submit_change(const std::string& project, core::ChangeFn change, std::function<void(Result<core::RegisterValue>)> done);

  std::vector<core::MemberInfo> member_infos() const;
  std::vector<core::Candidate> candidates() const;
  std::vector<NodeId> live_ids() const;
  std::string name_of(const NodeId& id) const;
  nlohmann::json placement_json(const core::RegisterValue& value) const;
  void publish_placement(const core::RegisterValue& value, std::string_view why);

  Deps deps_;
  Instant started_;
  std::uint64_t next_op_ = 1;
  std::map<std::uint64_t, Operation> operations_;
  std::vector<TransferWait> transfer_waits_;
  std::map<std::uint64_t, RemotePoll> remote_polls_;  // Local operation id -> the primary's.
  Instant next_repair_{};
  std::set<std::string> busy_;                        // Projects with a repair step in flight.
  std::map<std::string, Instant> primary_dead_since_; // For the failover grace.
  std::map<std::string, std::uint64_t> pushed_seq_;   // project/replica -> last_ack seq copied there.
  std::map<std::string, Instant> primary_checked_;    // Last fresh read before acting as primary.
  std::map<std::string, Instant> obsolete_checked_;
  // Projects whose obsolete copy this node is collecting, with the
  // collection's token. A snapshot of the project arriving meanwhile erases
  // the entry: that collection then deletes nothing, so this node never
  // deletes a copy it confirmed to a primary that listed it again.
  std::map<std::string, std::uint64_t> collecting_;
  std::uint64_t collection_token_ = 0;
  std::map<std::string, Instant> pull_checked_;  // Project -> last anti-entropy attempt.
  std::uint64_t pulls_ = 0;                      // Acknowledged snapshots pulled by this replica.
  std::map<std::string, Instant> last_save_;  // Periodic saves: when each running project was last saved here.
  std::set<std::string> saving_;              // Never two saves of one project on this node.
  std::uint64_t fenced_ = 0;                   // Received snapshots refused for an older epoch.
  std::uint64_t collections_abandoned_ = 0;    // A snapshot of the project arrived while collecting it.
  std::uint64_t failovers_ = 0;                // Failovers this node committed.
  std::uint64_t replicas_replaced_ = 0;
  std::uint64_t saves_ok_ = 0;
  std::uint64_t saves_failed_ = 0;
  std::uint64_t copies_collected_ = 0;
  Instant next_obsolete_scan_{};
  Instant next_periodic_{};
  Instant next_rebalance_{};
  std::uint64_t rebalanced_ = 0;
  // Starts a rebalancing move when one is due; false if none was started.
  bool maybe_rebalance(const core::Placement& placement, const std::vector<core::MemberInfo>& members);
};

}  // namespace shoal::agent
