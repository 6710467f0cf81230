#pragma once
// node/agent/admin_api.h: the admin API's routes, as a pure function from a
// parsed request to a response over an AdminBackend (the agent, or a fake in
// tests). Owns request validation and the JSON shapes of replies; does no I/O.
// The reference is docs/admin-api.md; the CLI is written against it.

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "base/address.h"
#include "base/crypto.h"
#include "base/result.h"
#include "gossip/types.h"
#include "node/agent/http.h"
#include "node/agent/render.h"

namespace shoal::agent {

class TransferBackend;  // node/agent/transfer_api.h

// What the routes need from the running agent. Called on the loop thread.
class ProjectService;

class AdminBackend {
 public:
  virtual ~AdminBackend() = default;
  virtual std::vector<gossip::Member> members() const = 0;
  virtual gossip::Member self() const = 0;
  virtual int local_health() const = 0;
  virtual MetricsSnapshot metrics() const = 0;
  // Starts contacting the seeds; returns how many were contacted.
  virtual Result<std::size_t> join(const std::vector<Address>& seeds) = 0;
  // Graceful leave, then the agent exits 0.
  virtual void leave() = 0;
  virtual const Keyring& keyring() const = 0;
  // Persists the new ring, then uses it for sealing and opening.
  virtual Status replace_keyring(const Keyring& keyring) = 0;
  virtual void set_catalog_version(std::uint64_t version) = 0;
  virtual bool fault_injection_enabled() const = 0;
  virtual void set_dropped_peers(const std::vector<Address>& peers) = 0;
  // Fault injection: gossip this free-disk figure instead of the measured one
  // (nullopt = measure again), so tests can make a node look degraded.
  virtual void set_free_disk_override(std::optional<std::uint64_t> /*bytes*/) {}
  // Snapshot transfers (/v1/replicate, /v1/transfers); null when the agent runs without them.
  virtual TransferBackend* transfer_backend() { return nullptr; }
  // Project routes (/v1/projects, /v1/operations); null when not running.
  virtual ProjectService* project_service() { return nullptr; }
};

struct AdminReply {
  HttpResponse response;
  bool event_stream = false;          // Keep the connection and stream events.
  std::function<void()> after_write;  // Runs once the response is written.
};

AdminReply handle_admin_request(const HttpRequest& request, AdminBackend& backend);

// {"error": message} with the given status.
HttpResponse error_response(int status, std::string_view message);

}  // namespace shoal::agent
