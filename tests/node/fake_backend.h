#pragma once
// tests/node/fake_backend.h: an in-memory AdminBackend recording what the
// admin routes asked of it.

#include <vector>

#include "node/agent/admin_api.h"

namespace shoal::agent {

class FakeBackend final : public AdminBackend {
 public:
  FakeBackend() : ring_(Key(1)) {}
  static ClusterKey Key(std::uint8_t fill) {
    ClusterKey key;
    key.fill(fill);
    return key;
  }
  std::vector<gossip::Member> members() const override { return members_; }
  gossip::Member self() const override { return members_.front(); }
  int local_health() const override { return 1; }
  MetricsSnapshot metrics() const override { return {}; }
  Result<std::size_t> join(const std::vector<Address>& seeds) override {
    joined_ = seeds;
    return seeds.size();
  }
  void leave() override { left_ = true; }
  const Keyring& keyring() const override { return ring_; }
  Status replace_keyring(const Keyring& keyring) override {
    ring_ = keyring;
    return ok_status();
  }
  void set_catalog_version(std::uint64_t version) override { members_.front().catalog_version = version; }
  bool fault_injection_enabled() const override { return fault_injection_; }
  void set_dropped_peers(const std::vector<Address>& peers) override { dropped_ = peers; }

  std::vector<gossip::Member> members_;
  std::vector<Address> joined_;
  std::vector<Address> dropped_;
  Keyring ring_;
  bool left_ = false;
  bool fault_injection_ = false;
};

}  // namespace shoal::agent
