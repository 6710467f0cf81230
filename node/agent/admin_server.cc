#include "node/agent/admin_server.h"

#include <spdlog/spdlog.h>

#include "base/assert.h"
#include "node/agent/limits.h"
#include "node/agent/uv_util.h"

namespace shoal::agent {
namespace {

constexpr std::size_t kReadBufferBytes = 16 * 1024;

// One pending write: owns its bytes until libuv is done with them.
struct WriteRequest {
  uv_write_t req{};
  std::string bytes;
  std::function<void()> after_write;
  AdminServer::Client* client = nullptr;
};

}  // namespace

struct AdminServer::Client {
  AdminServer* server = nullptr;
  std::list<std::unique_ptr<Client>>::iterator self;
  uv_tcp_t tcp{};
  uv_timer_t timer{};
  int open_handles = 0;
  bool closing = false;
  bool responded = false;
  bool streaming = false;
  HttpRequestParser parser;
};

namespace {

void on_client_closed(uv_handle_t* handle) {
  auto* client = static_cast<AdminServer::Client*>(handle->data);
  SHOAL_ASSERT(client->open_handles > 0);
  if (--client->open_handles == 0) {
    client->server->erase(client->self);
  }
}

}  // namespace

AdminServer::AdminServer(uv_loop_t* loop, AdminBackend& backend)
    : loop_(loop), backend_(backend), read_buffer_(new char[kReadBufferBytes]) {}

AdminServer::~AdminServer() { SHOAL_ASSERT(clients_.empty()); }

Status AdminServer::listen(const Address& address) {
  auto addr = to_sockaddr(address);
  if (!addr) {
    return make_error(Code::kInvalidArgument, "--admin " + address.to_string() + ": " + addr.error().message +
                                                  "; use an IP address such as 127.0.0.1:7947");
  }
  SHOAL_ASSERT(uv_tcp_init(loop_, &tcp_) == 0);
  tcp_.data = this;
  open_ = true;
  int rc = uv_tcp_bind(&tcp_, reinterpret_cast<const sockaddr*>(&*addr), 0);
  if (rc == 0) {
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(&tcp_), 64, on_connection);
  }
  if (rc == 0) {
    sockaddr_storage bound{};
    int bound_len = sizeof bound;
    SHOAL_ASSERT(uv_tcp_getsockname(&tcp_, reinterpret_cast<sockaddr*>(&bound), &bound_len) == 0);
    bound_ = from_sockaddr(reinterpret_cast<const sockaddr*>(&bound));
  }
  if (rc != 0) {
    return make_error(from_uv(rc, "").code, "--admin " + address.to_string() + ": cannot listen (" +
                                                uv_strerror(rc) + "); stop the process using it or choose another --admin");
  }
  return ok_status();
}

void AdminServer::close() {
  closing_ = true;
  if (open_) {
    close_handle(reinterpret_cast<uv_handle_t*>(&tcp_), nullptr);
  }
  for (auto& client : clients_) {
    close_client(*client);
  }
}

std::size_t AdminServer::event_clients() const {
  std::size_t n = 0;
  for (const auto& c : clients_) {
    n += (c->streaming && !c->closing) ? 1 : 0;
  }
  return n;
}

void AdminServer::erase(std::list<std::unique_ptr<Client>>::iterator it) { clients_.erase(it); }

void AdminServer::on_connection(uv_stream_t* listener, int status) {
  auto* server = static_cast<AdminServer*>(listener->data);
  if (status < 0 || server->closing_) {
    return;
  }
  auto owned = std::make_unique<Client>();
  Client& c = *owned;
  c.server = server;
  SHOAL_ASSERT(uv_tcp_init(server->loop_, &c.tcp) == 0);
  c.tcp.data = &c;
  c.open_handles = 1;
  server->clients_.push_front(std::move(owned));
  c.self = server->clients_.begin();
  if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&c.tcp)) != 0) {
    server->close_client(c);
    return;
  }
  SHOAL_ASSERT(uv_timer_init(server->loop_, &c.timer) == 0);
  c.timer.data = &c;
  c.open_handles = 2;
  if (server->clients_.size() > kAdminConnectionsMax) {
    server->respond(c, serialize_response(error_response(503, "too many admin connections; retry later")), nullptr);
    return;
  }
  uv_timer_start(
      &c.timer,
      [](uv_timer_t* timer) {
        auto* self = static_cast<Client*>(timer->data);
        if (!self->streaming) {
          self->server->close_client(*self);
        }
      },
      static_cast<std::uint64_t>(kAdminIdleTimeout.count()), 0);
  const int rc = uv_read_start(
      reinterpret_cast<uv_stream_t*>(&c.tcp),
      [](uv_handle_t* handle, std::size_t, uv_buf_t* buf) {
        auto* self = static_cast<Client*>(handle->data);
        buf->base = self->server->read_buffer_.get();
        buf->len = kReadBufferBytes;
      },
      [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
        auto* self = static_cast<Client*>(stream->data);
        self->server->on_read(*self, nread, buf);
      });
  if (rc != 0) {
    server->close_client(c);
  }
}

void AdminServer::on_read(Client& client, ssize_t nread, const uv_buf_t* buf) {
  if (client.closing || nread == 0) {
    return;
  }
  if (nread < 0) {
    close_client(client);  // The client went away (or half-closed before a full request).
    return;
  }
  if (client.responded) {
    return;  // One request per connection; ignore anything after it.
  }
  const auto state = client.parser.feed(std::string_view(buf->base, static_cast<std::size_t>(nread)));
  if (state == HttpRequestParser::State::kIncomplete) {
    return;
  }
  client.responded = true;
  if (state == HttpRequestParser::State::kError) {
    respond(client, serialize_response(error_response(client.parser.error_status(), "malformed or oversized request")),
            nullptr);
    return;
  }
  AdminReply reply = handle_admin_request(client.parser.request(), backend_);
  if (reply.event_stream) {
    client.streaming = true;
    uv_timer_stop(&client.timer);
    write(client, chunked_response_head(200, reply.response.content_type), nullptr);
    return;
  }
  respond(client, serialize_response(reply.response), std::move(reply.after_write));
}

void AdminServer::publish_event(const std::string& line) {
  const std::string chunk = http_chunk(line);
  for (auto& client : clients_) {
    if (!client->streaming || client->closing) {
      continue;
    }
    const std::size_t queued = uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&client->tcp));
    if (queued + chunk.size() > kEventClientQueueBytesMax) {
      spdlog::warn("event stream client is {} bytes behind; disconnecting it", queued);
      close_client(*client);
      continue;
    }
    write(*client, chunk, nullptr);
  }
}

void AdminServer::respond(Client& client, std::string bytes, std::function<void()> after_write) {
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&client.tcp));
  Client* c = &client;
  auto then = [c, after = std::move(after_write)] {
    c->server->close_client(*c);
    if (after) {
      after();
    }
  };
  write(client, std::move(bytes), std::move(then));
}

void AdminServer::write(Client& client, std::string bytes, std::function<void()> after_write) {
  auto* request = new WriteRequest{};
  request->bytes = std::move(bytes);
  request->after_write = std::move(after_write);
  request->client = &client;
  request->req.data = request;
  uv_buf_t buf = uv_buf_init(request->bytes.data(), static_cast<unsigned>(request->bytes.size()));
  const int rc = uv_write(&request->req, reinterpret_cast<uv_stream_t*>(&client.tcp), &buf, 1,
                          [](uv_write_t* req, int status) {
                            std::unique_ptr<WriteRequest> done(static_cast<WriteRequest*>(req->data));
                            // The client is alive until its handles close, which
                            // happens only after pending writes are cancelled.
                            if (status != 0) {
                              done->client->server->close_client(*done->client);
                            }
                            if (done->after_write) {
                              done->after_write();
                            }
                          });
  if (rc != 0) {
    std::unique_ptr<WriteRequest> failed(request);
    close_client(client);
    if (failed->after_write) {
      failed->after_write();
    }
  }
}

void AdminServer::close_client(Client& client) {
  if (client.closing) {
    return;
  }
  client.closing = true;
  if (client.open_handles == 2) {
    close_handle(reinterpret_cast<uv_handle_t*>(&client.timer), on_client_closed);
  }
  close_handle(reinterpret_cast<uv_handle_t*>(&client.tcp), on_client_closed);
}

}  // namespace shoal::agent
