#pragma once
// node/agent/admin_server.h: the admin API's HTTP server over libuv. Owns the
// listening socket, the client connections (at most kAdminConnectionsMax,
// one request each, idle timeout kAdminIdleTimeout) and the event-stream
// clients. Routing lives in admin_api.h. An event-stream client that falls
// kEventClientQueueBytesMax behind is disconnected; the loop never waits for
// a reader. Single-threaded: runs on the loop thread.

#include <uv.h>

#include <list>
#include <memory>
#include <string>

#include "base/address.h"
#include "base/result.h"
#include "node/agent/admin_api.h"

namespace shoal::agent {

class AdminServer {
 public:
  AdminServer(uv_loop_t* loop, AdminBackend& backend);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Listens on `address`; the error message names the flag and the fix.
  // Port 0 lets the kernel choose (tests); bound_address() tells which.
  Status listen(const Address& address);
  const Address& bound_address() const { return bound_; }
  // Sends one newline-terminated JSON line to every event-stream client.
  void publish_event(const std::string& line);
  void close();
  std::size_t event_clients() const;

  struct Client;  // Public for the libuv callbacks; opaque elsewhere.
  void erase(std::list<std::unique_ptr<Client>>::iterator it);

 private:
  static void on_connection(uv_stream_t* server, int status);
  void on_read(Client& client, ssize_t nread, const uv_buf_t* buf);
  void respond(Client& client, std::string bytes, std::function<void()> after_write);
  void write(Client& client, std::string bytes, std::function<void()> after_write);
  void close_client(Client& client);

  uv_loop_t* loop_;
  AdminBackend& backend_;
  uv_tcp_t tcp_{};
  Address bound_;
  bool open_ = false;
  bool closing_ = false;
  std::list<std::unique_ptr<Client>> clients_;
  std::unique_ptr<char[]> read_buffer_;
};

}  // namespace shoal::agent
