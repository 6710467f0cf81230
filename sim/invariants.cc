// sim/invariants.cc: detection, false-positive and convergence checkers.

#include "sim/invariants.h"

#include <deque>
#include <string>

namespace shoal::sim {
namespace {

std::string at_label(Instant t) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3fs", to_seconds(t.time_since_epoch()));
  return buf;
}

class DetectionChecker final : public Checker {
 public:
  std::string_view name() const override { return "detection"; }

  void on_fault(World& world, const FaultRecord& fault) override {
    const bool crashes = fault.kind == FaultKind::kCrash ||
                         (fault.kind == FaultKind::kDcOutage && !fault.nodes.empty() && !world.running(fault.nodes[0]));
    if (!crashes) {
      return;
    }
    const Instant deadline = fault.at + world.scenario().bounds.detection;
    for (std::uint32_t s : fault.nodes) {
      if (!world.running(s)) {
        pending_.push_back(Pending{deadline, fault.at, s, world.generation(s)});
      }
    }
    world.wake_at(deadline);
  }

  void after_event(World& world) override {
    while (!pending_.empty() && pending_.front().deadline <= world.now()) {
      check(world, pending_.front());
      pending_.pop_front();
    }
  }

 private:
  struct Pending {
    Instant deadline;
    Instant crashed_at;
    std::uint32_t subject;
    std::uint32_t generation;
  };

  void check(World& world, const Pending& p) {
    if (world.running(p.subject) || world.generation(p.subject) != p.generation) {
      return;  // Restarted within the bound: nothing left to detect.
    }
    std::uint32_t unaware = 0;
    std::string examples;
    for (std::uint32_t o = 0; o < world.node_count(); ++o) {
      if (o == p.subject || !world.running(o) || world.started_at(o) > p.crashed_at ||
          world.last_disturbed(o) > p.crashed_at || world.paused(o)) {
        continue;  // Not running throughout, or paused (a paused process cannot detect).
      }
      const View v = world.view(o, p.subject);
      if (v == View::kAlive || v == View::kSuspect) {
        if (unaware < 3) {
          examples += (unaware == 0 ? "" : ", ") + world.node_name(o) + (v == View::kAlive ? " (alive)" : " (suspect)");
        }
        ++unaware;
      }
    }
    if (unaware > 0) {
      world.violate(name(), world.node_name(p.subject) + " crashed at " + at_label(p.crashed_at) + " but " +
                                std::to_string(unaware) + " live node(s) still see it alive after " +
                                std::to_string(to_seconds(world.scenario().bounds.detection)) + "s: " + examples);
    }
  }

  std::deque<Pending> pending_;
};

class FalsePositiveChecker final : public Checker {
 public:
  std::string_view name() const override { return "false-positive"; }

  void on_view(World& world, std::uint32_t o, std::uint32_t s, View, const gossip::Event& event) override {
    const bool dead = event.member.status == gossip::MemberStatus::kDead;
    const bool suspect = event.member.status == gossip::MemberStatus::kSuspect;
    if (!dead && !suspect) {
      return;
    }
    if (!world.live(s) || event.member.incarnation < world.incarnation_floor(s) || !world.reachable(o, s)) {
      return;  // About a previous life, a leaving node, or across a cut: a true positive.
    }
    const Duration window = world.scenario().bounds.disturbance_window;
    const Instant now = world.now();
    const bool excused = world.lossy() || world.paused(s) || world.paused(o) ||
                         now - world.last_disturbed(s) < window || now - world.last_disturbed(o) < window ||
                         now - world.network_disturbed_at() < window;
    world.count_false_positive(excused, suspect);
    if (dead && !excused) {
      world.violate(name(), world.node_name(o) + " declared " + world.node_name(s) +
                                " dead (incarnation " + std::to_string(event.member.incarnation) +
                                ") while it was alive, reachable and undisturbed");
    }
  }
};

class ConvergenceChecker final : public Checker {
 public:
  std::string_view name() const override { return "convergence"; }

  void on_fault(World& world, const FaultRecord& fault) override {
    const bool opens = fault.kind == FaultKind::kJoin || fault.kind == FaultKind::kRestart ||
                       fault.kind == FaultKind::kHeal || fault.kind == FaultKind::kDcReturn;
    // Any other fault while a watch is open makes disagreement legitimate.
    if (!opens || fault.kind == FaultKind::kRestart) {
      for (auto& w : watches_) {
        if (fault.at > w.at) {
          w.overlapped = true;
        }
      }
    }
    if (!opens) {
      return;
    }
    if (fault.kind == FaultKind::kRestart && fault.nodes.empty()) {
      return;
    }
    if (!watches_.empty() && watches_.back().at == fault.at && watches_.back().kind == fault.kind &&
        fault.kind == FaultKind::kRestart) {
      // Restarts scheduled for the same instant (a crash wave coming back) are one event.
      Watch& last = watches_.back();
      last.nodes += static_cast<std::uint32_t>(fault.nodes.size());
      last.what = "restart of " + std::to_string(last.nodes) + " nodes at " + at_label(fault.at);
      return;
    }
    Watch w;
    w.kind = fault.kind;
    w.nodes = static_cast<std::uint32_t>(fault.nodes.size());
    w.what = fault.label + " at " + at_label(fault.at);
    w.at = fault.at;
    w.settled = fault.at + fault.spread;
    w.deadline = w.settled + world.scenario().bounds.convergence;
    watches_.push_back(std::move(w));
    world.wake_at(watches_.back().deadline);
  }

  void after_event(World& world) override {
    if (watches_.empty()) {
      return;
    }
    const Instant now = world.now();
    const bool agreed = world.disagreements() == 0;
    for (std::size_t k = 0; k < watches_.size();) {
      Watch& w = watches_[k];
      if (agreed && now >= w.settled) {
        done_.push_back(ConvergenceSample{w.what, to_seconds(w.at.time_since_epoch()), to_seconds(now - w.at),
                                          w.overlapped});
      } else if (now >= w.deadline) {
        const bool paused_recently = any_pause_since(world, w.at);
        if (!w.overlapped && !paused_recently) {
          world.violate(name(), "no agreement " + std::to_string(to_seconds(now - w.settled)) + "s after " + w.what +
                                    ": " + std::to_string(world.disagreements()) + " (observer, subject) pairs disagree");
        }
        done_.push_back(ConvergenceSample{w.what, to_seconds(w.at.time_since_epoch()), -1, w.overlapped || paused_recently});
      } else {
        ++k;
        continue;
      }
      watches_.erase(watches_.begin() + static_cast<std::ptrdiff_t>(k));
    }
  }

  void finish(World&, Report& report) override {
    for (const auto& w : watches_) {
      report.convergence.push_back(ConvergenceSample{w.what, to_seconds(w.at.time_since_epoch()), -1, true});
    }
    report.convergence.insert(report.convergence.begin(), done_.begin(), done_.end());
  }

 private:
  struct Watch {
    FaultKind kind = FaultKind::kJoin;
    std::uint32_t nodes = 0;
    std::string what;
    Instant at;
    Instant settled;
    Instant deadline;
    bool overlapped = false;
  };

  static bool any_pause_since(const World& world, Instant since) {
    for (std::uint32_t i = 0; i < world.node_count(); ++i) {
      if (world.paused(i) || (world.running(i) && world.last_disturbed(i) > since &&
                              world.started_at(i) < world.last_disturbed(i))) {
        return true;
      }
    }
    return false;
  }

  std::vector<Watch> watches_;
  std::vector<ConvergenceSample> done_;
};

}  // namespace

std::vector<std::unique_ptr<Checker>> make_membership_checkers() {
  std::vector<std::unique_ptr<Checker>> out;
  out.push_back(std::make_unique<DetectionChecker>());
  out.push_back(std::make_unique<FalsePositiveChecker>());
  out.push_back(std::make_unique<ConvergenceChecker>());
  return out;
}

}  // namespace shoal::sim
