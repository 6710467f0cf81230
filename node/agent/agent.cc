#include "node/agent/agent.h"

#include <spdlog/spdlog.h>
#include <uv.h>

#include <chrono>
#include <csignal>

#include "base/assert.h"
#include "base/random.h"
#include "gossip/membership.h"
#include "node/agent/admin_server.h"
#include "node/agent/data_dir.h"
#include "node/agent/gossip_net.h"
#include "node/agent/placement_service.h"
#include "node/agent/project_service.h"
#include "node/agent/health.h"
#include "node/agent/limits.h"
#include "node/agent/render.h"
#include "node/agent/transfer_api.h"
#include "node/agent/uv_util.h"

namespace shoal::agent {
namespace {

class AgentImpl final : public Agent, public AdminBackend, public GossipNetHandler {
 public:
  explicit AgentImpl(AgentOptions options) : options_(std::move(options)) {}
  ~AgentImpl() override;

  Status init();
  int run() override;

  // AdminBackend.
  std::vector<gossip::Member> members() const override { return membership_->members(); }
  gossip::Member self() const override { return membership_->self(); }
  int local_health() const override { return membership_->local_health(); }
  MetricsSnapshot metrics() const override;
  Result<std::size_t> join(const std::vector<Address>& seeds) override;
  void leave() override { begin_leave("leave requested through the admin API"); }
  const Keyring& keyring() const override { return data_dir_->keyring(); }
  Status replace_keyring(const Keyring& keyring) override;
  void set_catalog_version(std::uint64_t version) override;
  bool fault_injection_enabled() const override { return options_.fault_injection; }
  void set_dropped_peers(const std::vector<Address>& peers) override { net_->set_dropped_peers(peers); }
  void set_free_disk_override(std::optional<std::uint64_t> bytes) override {
    free_disk_override_ = bytes;
    refresh_health();
  }
  TransferBackend* transfer_backend() override { return transfers_.get(); }
  ProjectService* project_service() override { return projects_.get(); }

  // GossipNetHandler.
  void on_net_datagram(const Address& from, ByteView plaintext) override;
  Result<Bytes> on_net_stream_request(const Address& from, ByteView payload) override;
  void on_net_stream_result(std::uint64_t id, gossip::StreamOutcome outcome, ByteView reply) override;

 private:
  void pump();
  void handle_event(const gossip::Event& event);
  void arm_tick_timer();
  void refresh_health();
  void save_known_members();
  void mark_members_dirty();
  void begin_leave(const char* why);
  void finish();
  void close_all_handles();

  AgentOptions options_;
  SystemRandom random_;
  uv_loop_t loop_{};
  bool loop_open_ = false;
  std::unique_ptr<DataDir> data_dir_;
  std::unique_ptr<gossip::Membership> membership_;
  std::unique_ptr<GossipNet> net_;
  std::unique_ptr<AdminServer> admin_;
  std::unique_ptr<TransferService> transfers_;  // Snapshot store (DATA_DIR/store) and transfers.
  std::unique_ptr<PlacementService> placement_;  // Consensus registers of projects.
  std::unique_ptr<ProjectService> projects_;
  uv_timer_t project_timer_{};  // Drives placement retransmits and the repair loop.
  uv_timer_t tick_timer_{};
  uv_timer_t health_timer_{};
  uv_timer_t leave_timer_{};
  uv_timer_t persist_timer_{};  // Debounces saving the member list after changes.
  uv_signal_t sigterm_{};
  uv_signal_t sigint_{};
  Address advertise_;
  std::chrono::milliseconds probe_timeout_{500};
  bool pumping_ = false;
  bool pump_again_ = false;
  bool members_dirty_ = false;
  bool leaving_ = false;
  std::optional<std::uint64_t> free_disk_override_;  // Fault injection (/v1/debug/health).
  bool finished_ = false;
};

AgentImpl::~AgentImpl() {
  if (loop_open_) {
    close_all_handles();
    // Let every close callback run so no handle outlives its owner.
    uv_run(&loop_, UV_RUN_DEFAULT);
    const int rc = uv_loop_close(&loop_);
    if (rc != 0) {
      spdlog::warn("event loop closed with handles still open: {}", uv_strerror(rc));
    }
  }
  // Order matters: the core and its net go before LMDB is closed.
  net_.reset();
  admin_.reset();
  projects_.reset();
  placement_.reset();
  transfers_.reset();
  membership_.reset();
  data_dir_.reset();
}

Status AgentImpl::init() {
  // Checks run cheapest first, and nothing is bound until the state on disk is sound.
  auto key = read_cluster_key_file(options_.cluster_key_file);
  if (!key) {
    return std::unexpected(key.error());
  }
  // Names are resolved once, at start; sockets need literal addresses.
  auto bind = resolve_address(options_.bind);
  if (!bind) {
    return make_error(Code::kInvalidArgument, "--bind " + options_.bind.to_string() + ": " + bind.error().message);
  }
  options_.bind = *bind;
  if (options_.advertise) {
    auto resolved = resolve_address(*options_.advertise);
    if (!resolved) {
      return make_error(Code::kInvalidArgument, "--advertise " + options_.advertise->to_string() + ": " +
                                                    resolved.error().message);
    }
    advertise_ = *resolved;
  } else {
    advertise_ = options_.bind;
  }
  if (is_unspecified(advertise_)) {
    return make_error(Code::kInvalidArgument, "--bind " + options_.bind.to_string() +
                                                  " is a wildcard address; also pass --advertise HOST:PORT");
  }
  auto dir = DataDir::open(options_.data_dir, *key, random_);
  if (!dir) {
    return std::unexpected(dir.error());
  }
  data_dir_ = std::move(*dir);

  SHOAL_ASSERT(uv_loop_init(&loop_) == 0);
  loop_open_ = true;
  net_ = std::make_unique<GossipNet>(&loop_, data_dir_->keyring(), random_, *this);
  admin_ = std::make_unique<AdminServer>(&loop_, *this);
  SHOAL_TRY_STATUS(net_->listen(options_.bind, advertise_));
  SHOAL_TRY_STATUS(admin_->listen(options_.admin));
  // Transfers share the gossip TCP listener: a connection starting with 'S' is theirs.
  auto transfers = TransferService::open(&loop_, data_dir_->identity(), data_dir_->keyring(), random_,
                                         data_dir_->path() + "/store", [this] { return membership_->members(); });
  if (!transfers) {
    return std::unexpected(transfers.error());
  }
  transfers_ = std::move(*transfers);
  net_->set_transfer_handoff([this](uv_os_sock_t fd, ByteView first) { transfers_->adopt(fd, first); });
  // Transfer start, progress (rate-limited), retries and ends go to /v1/events (`shoal watch`).
  transfers_->set_on_event([this](TransferEventKind kind, const TransferInfo& info) {
    admin_->publish_event(transfer_event_line(kind, info, std::chrono::system_clock::now()));
  });

  gossip::Config config = gossip::profile_config(options_.profile);
  config.name = options_.name;
  config.dc = options_.dc;
  config.public_key = data_dir_->identity().public_key();
  config.advertise = advertise_;
  config.initial_incarnation = data_dir_->incarnation();
  config.health = sample_health(data_dir_->path(), 0, 0);
  SHOAL_ASSERT(config.datagram_bytes_max <= kDatagramPlaintextBytesMax);
  probe_timeout_ = std::chrono::duration_cast<std::chrono::milliseconds>(config.probe_timeout);
  membership_ = std::make_unique<gossip::Membership>(config, random_, monotonic_now());
  // The core starts above the stored incarnation; record the one now in use
  // before any peer can see it, so a crash cannot make us reuse it.
  SHOAL_TRY_STATUS(data_dir_->save_incarnation(membership_->self().incarnation));

  // Ballots start above anything used before this start: incarnations only grow.
  auto placement = PlacementService::open(
      data_dir_->env(), membership_->self_id(), membership_->self().incarnation << 32, random_,
      [this](const NodeId& to, Bytes plaintext) {
        for (const auto& m : membership_->members()) {
          if (m.id == to) {
            net_->send(gossip::Datagram{m.addr, std::move(plaintext)});
            return;
          }
        }
      });
  if (!placement) {
    return std::unexpected(placement.error());
  }
  placement_ = std::move(*placement);
  projects_ = std::make_unique<ProjectService>(ProjectService::Deps{
      .loop = &loop_,
      .placement = placement_.get(),
      .transfers = transfers_.get(),
      .random = &random_,
      .self = membership_->self_id(),
      .self_dc = options_.dc,
      .data_dir = data_dir_->path(),
      .members = [this] { return membership_->members(); },
      .publish = [this](const std::string& line) { admin_->publish_event(line); },
      .save_interval = options_.save_interval,
      .rebalance_after = options_.rebalance_after,
      .holdings_changed = [this] { set_catalog_version(membership_->self().catalog_version + 1); }});
  transfers_->set_commit_check([this](const std::string& project, const storage::ChunkId& snapshot,
                                      const storage::Commit& commit) {
    return projects_->check_incoming(project, snapshot, commit.epoch);
  });

  spdlog::info("agent {} ({}) in dc {} on {} (advertised {}), admin API on {}, incarnation {}{}", options_.name,
               membership_->self_id().short_hex(), options_.dc, options_.bind.to_string(), advertise_.to_string(),
               options_.admin.to_string(), membership_->self().incarnation,
               data_dir_->first_start() ? ", first start" : "");
  if (options_.fault_injection) {
    spdlog::warn("fault injection is enabled (POST /v1/debug/drop, /v1/debug/health); never use this in production");
  }

  SHOAL_ASSERT(uv_timer_init(&loop_, &tick_timer_) == 0);
  tick_timer_.data = this;
  SHOAL_ASSERT(uv_timer_init(&loop_, &health_timer_) == 0);
  health_timer_.data = this;
  SHOAL_ASSERT(uv_timer_init(&loop_, &leave_timer_) == 0);
  leave_timer_.data = this;
  SHOAL_ASSERT(uv_timer_init(&loop_, &persist_timer_) == 0);
  persist_timer_.data = this;
  SHOAL_ASSERT(uv_timer_init(&loop_, &project_timer_) == 0);
  project_timer_.data = this;
  uv_timer_start(
      &project_timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<AgentImpl*>(t->data);
        if (self->finished_) return;
        const Instant now = monotonic_now();
        self->placement_->tick(now);
        self->projects_->tick(now);
      },
      100, 100);
  SHOAL_ASSERT(uv_signal_init(&loop_, &sigterm_) == 0);
  sigterm_.data = this;
  SHOAL_ASSERT(uv_signal_init(&loop_, &sigint_) == 0);
  sigint_.data = this;
  auto on_signal = [](uv_signal_t* handle, int signum) {
    auto* self = static_cast<AgentImpl*>(handle->data);
    if (self->leaving_) {
      spdlog::warn("second signal {}: stopping without waiting for the leave to spread", signum);
      self->finish();
      return;
    }
    self->begin_leave(signum == SIGTERM ? "SIGTERM" : "SIGINT");
  };
  uv_signal_start(&sigterm_, on_signal, SIGTERM);
  uv_signal_start(&sigint_, on_signal, SIGINT);
  const auto health_ms = static_cast<std::uint64_t>(kHealthInterval.count());
  uv_timer_start(
      &health_timer_, [](uv_timer_t* t) { static_cast<AgentImpl*>(t->data)->refresh_health(); }, health_ms, health_ms);

  std::vector<Address> seeds;
  for (const auto& seed : options_.join) {
    auto resolved = resolve_address(seed);
    if (!resolved) {
      return make_error(Code::kInvalidArgument, "--join " + seed.to_string() + ": " + resolved.error().message);
    }
    seeds.push_back(*resolved);
  }
  if (seeds.empty()) {
    for (const auto& known : data_dir_->known_members()) {
      if (known != advertise_) {
        seeds.push_back(known);
      }
    }
    if (!seeds.empty()) {
      spdlog::info("rejoining {} member(s) last seen", seeds.size());
    }
  }
  if (!seeds.empty()) {
    membership_->join(monotonic_now(), seeds);
  }
  pump();
  return ok_status();
}

int AgentImpl::run() {
  uv_run(&loop_, UV_RUN_DEFAULT);
  spdlog::info("agent stopped");
  return 0;
}

// --- driving the core --------------------------------------------------------

void AgentImpl::pump() {
  // Inputs can arrive while draining (a stream that fails at once reports
  // synchronously); they set pump_again_ instead of recursing.
  if (pumping_ || finished_) {
    pump_again_ = true;
    return;
  }
  pumping_ = true;
  do {
    pump_again_ = false;
    while (auto datagram = membership_->poll_transmit()) {
      net_->send(*datagram);
    }
    while (auto stream = membership_->poll_stream()) {
      net_->start_stream(*stream, probe_timeout_);
    }
    while (auto event = membership_->poll_event()) {
      handle_event(*event);
    }
  } while (pump_again_);
  pumping_ = false;

  const std::uint64_t incarnation = membership_->self().incarnation;
  if (incarnation > data_dir_->incarnation()) {
    if (auto saved = data_dir_->save_incarnation(incarnation); !saved) {
      spdlog::error("cannot persist incarnation {}: {}", incarnation, saved.error().message);
    }
  }
  if (leaving_ && membership_->leave_done(monotonic_now())) {
    finish();
    return;
  }
  arm_tick_timer();
}

void AgentImpl::arm_tick_timer() {
  const auto deadline = membership_->next_deadline();
  if (!deadline) {
    uv_timer_stop(&tick_timer_);
    return;
  }
  const std::int64_t wait_us = std::max<std::int64_t>(0, to_us(*deadline) - to_us(monotonic_now()));
  // Round up: waking before the deadline would only spin.
  const auto wait_ms = static_cast<std::uint64_t>((wait_us + 999) / 1000);
  uv_timer_start(
      &tick_timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<AgentImpl*>(t->data);
        self->membership_->on_tick(monotonic_now());
        self->pump();
      },
      wait_ms, 0);
}

void AgentImpl::handle_event(const gossip::Event& event) {
  const auto& m = event.member;
  const std::string_view kind = gossip::event_name(event.kind);
  switch (event.kind) {
    case gossip::EventKind::kJoined:
    case gossip::EventKind::kDead:
    case gossip::EventKind::kLeft:
    case gossip::EventKind::kSuspect:
    case gossip::EventKind::kStalled:
    case gossip::EventKind::kAlive:
      spdlog::info("member {} ({} {}, dc {}): {} (incarnation {})", m.name, m.id.short_hex(), m.addr.to_string(),
                   m.dc, kind, m.incarnation);
      mark_members_dirty();
      break;
    case gossip::EventKind::kCatalogChanged:
      spdlog::debug("member {}: {}", m.name, kind);
      if (projects_) projects_->on_catalog_changed(m.id);
      break;
    default:
      spdlog::debug("member {}: {}", m.name, kind);
      break;
  }
  admin_->publish_event(event_line(event, std::chrono::system_clock::now()));
}

void AgentImpl::mark_members_dirty() {
  members_dirty_ = true;
  if (leaving_ || finished_ || uv_is_active(reinterpret_cast<uv_handle_t*>(&persist_timer_))) {
    return;  // A save is already due at the end of the current window.
  }
  // Save at once (an agent killed right after joining must still find its
  // way back), then coalesce further changes into one save per window so a
  // burst of joins costs a few LMDB commits, not one each.
  save_known_members();
  uv_timer_start(
      &persist_timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<AgentImpl*>(t->data);
        if (self->members_dirty_ && !self->finished_) {
          self->save_known_members();
        }
      },
      static_cast<std::uint64_t>(kPersistMembersDelay.count()), 0);
}

void AgentImpl::on_net_datagram(const Address& from, ByteView plaintext) {
  if (PlacementService::is_placement_datagram(plaintext)) {
    placement_->on_datagram(plaintext, monotonic_now());
    return;
  }
  membership_->on_datagram(monotonic_now(), from, plaintext);
  pump();
}

Result<Bytes> AgentImpl::on_net_stream_request(const Address& from, ByteView payload) {
  auto reply = membership_->on_stream_request(monotonic_now(), from, payload);
  pump();
  return reply;
}

void AgentImpl::on_net_stream_result(std::uint64_t id, gossip::StreamOutcome outcome, ByteView reply) {
  membership_->on_stream_result(monotonic_now(), id, outcome, reply);
  pump();
}

// --- periodic work -----------------------------------------------------------

void AgentImpl::refresh_health() {
  if (leaving_) {
    return;
  }
  gossip::Health health = sample_health(data_dir_->path(), membership_->local_health(), 0);
  if (free_disk_override_) health.free_disk_bytes = *free_disk_override_;
  membership_->set_health(monotonic_now(), std::move(health));
  if (members_dirty_) {
    save_known_members();
  }
  pump();
}

void AgentImpl::save_known_members() {
  members_dirty_ = false;
  std::vector<Address> addresses;
  for (const auto& m : membership_->members()) {
    if (m.id != membership_->self_id() &&
        (m.status == gossip::MemberStatus::kAlive || m.status == gossip::MemberStatus::kSuspect)) {
      addresses.push_back(m.addr);
    }
  }
  if (addresses.empty()) {
    return;  // Keep the last useful list: an isolated node should still find its way back.
  }
  if (auto saved = data_dir_->save_known_members(std::move(addresses)); !saved) {
    spdlog::error("cannot persist the member list: {}", saved.error().message);
  }
}

// --- admin commands ----------------------------------------------------------

MetricsSnapshot AgentImpl::metrics() const {
  MetricsSnapshot s;
  for (auto status : {gossip::MemberStatus::kAlive, gossip::MemberStatus::kSuspect, gossip::MemberStatus::kDead,
                      gossip::MemberStatus::kLeft}) {
    s.members_by_status[static_cast<std::size_t>(status)] = membership_->count(status);
  }
  s.core = membership_->counters();
  const NetCounters& net = net_->counters();
  s.drops = net.drops;
  s.packets_in = net.packets_in;
  s.packets_out = net.packets_out;
  s.bytes_in = net.bytes_in;
  s.bytes_out = net.bytes_out;
  s.streams_in = net.streams_in;
  s.streams_out = net.streams_out;
  s.streams_failed = net.streams_failed;
  s.local_health = membership_->local_health();
  return s;
}

Result<std::size_t> AgentImpl::join(const std::vector<Address>& seeds) {
  if (leaving_) {
    return make_error(Code::kFailedPrecondition, "the agent is leaving");
  }
  std::vector<Address> resolved;
  for (const auto& seed : seeds) {
    auto r = resolve_address(seed);
    if (!r) {
      return make_error(Code::kInvalidArgument, r.error().message);
    }
    resolved.push_back(*r);
  }
  spdlog::info("joining {} seed(s) on request", resolved.size());
  membership_->join(monotonic_now(), resolved);
  pump();
  return resolved.size();
}

Status AgentImpl::replace_keyring(const Keyring& keyring) {
  SHOAL_TRY_STATUS(data_dir_->save_keyring(keyring));
  spdlog::info("keyring changed: {} key(s), primary {}", keyring.keys().size(),
               cluster_key_fingerprint(keyring.primary()));
  return ok_status();
}

void AgentImpl::set_catalog_version(std::uint64_t version) {
  membership_->set_catalog_version(monotonic_now(), version);
  pump();
}

// --- shutdown ----------------------------------------------------------------

void AgentImpl::begin_leave(const char* why) {
  if (leaving_ || finished_) {
    return;
  }
  leaving_ = true;
  spdlog::info("{}: leaving the mesh", why);
  save_known_members();
  membership_->leave(monotonic_now());
  uv_timer_start(
      &leave_timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<AgentImpl*>(t->data);
        spdlog::warn("leave not confirmed within {} ms; stopping anyway", kLeaveTimeout.count());
        self->finish();
      },
      static_cast<std::uint64_t>(kLeaveTimeout.count()), 0);
  pump();
}

void AgentImpl::finish() {
  if (finished_) {
    return;
  }
  finished_ = true;
  close_all_handles();
}

void AgentImpl::close_all_handles() {
  if (net_) {
    net_->close();
  }
  if (transfers_) {
    transfers_->close();
  }
  if (admin_) {
    admin_->close();
  }
  for (uv_handle_t* h : {reinterpret_cast<uv_handle_t*>(&tick_timer_), reinterpret_cast<uv_handle_t*>(&health_timer_),
                         reinterpret_cast<uv_handle_t*>(&leave_timer_), reinterpret_cast<uv_handle_t*>(&persist_timer_),
                         reinterpret_cast<uv_handle_t*>(&project_timer_),
                         reinterpret_cast<uv_handle_t*>(&sigterm_),
                         reinterpret_cast<uv_handle_t*>(&sigint_)}) {
    close_handle(h, nullptr);
  }
}

}  // namespace

Result<std::unique_ptr<Agent>> Agent::start(const AgentOptions& options) {
  crypto_init();
  // Writing to a socket the peer closed must be an error value, not a signal.
  std::signal(SIGPIPE, SIG_IGN);
  auto agent = std::make_unique<AgentImpl>(options);
  if (auto started = agent->init(); !started) {
    return std::unexpected(started.error());
  }
  return std::unique_ptr<Agent>(std::move(agent));
}

}  // namespace shoal::agent
