// AdminServer over a real loopback socket with a fake backend, driven by
// running the libuv loop until the client saw what it expects (no sleeps; a
// watchdog timer bounds each wait).

#include "node/agent/admin_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>

#include "node/agent/limits.h"
#include "tests/node/fake_backend.h"

namespace shoal::agent {
namespace {

class AdminServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    crypto_init();
    gossip::Member self;
    self.name = "self";
    self.addr = Address{"127.0.0.1", 7946};
    backend_.members_.push_back(self);
    ASSERT_EQ(uv_loop_init(&loop_), 0);
    server_ = std::make_unique<AdminServer>(&loop_, backend_);
    ASSERT_TRUE(server_->listen(Address{"127.0.0.1", 0}).has_value());
  }

  void TearDown() override {
    for (int fd : fds_) {
      ::close(fd);
    }
    server_->close();
    uv_run(&loop_, UV_RUN_DEFAULT);
    server_.reset();
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }

  int Connect(int receive_buffer_bytes = 0) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    EXPECT_GE(fd, 0);
    if (receive_buffer_bytes > 0) {
      ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &receive_buffer_bytes, sizeof receive_buffer_bytes);
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(server_->bound_address().port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::fcntl(fd, F_SETFL, O_NONBLOCK);
    fds_.push_back(fd);
    return fd;
  }

  bool RunUntil(const std::function<bool()>& done) {
    uv_timer_t watchdog;
    uv_timer_init(&loop_, &watchdog);
    bool expired = false;
    watchdog.data = &expired;
    uv_timer_start(&watchdog, [](uv_timer_t* t) { *static_cast<bool*>(t->data) = true; }, 5000, 0);
    while (!done() && !expired) {
      uv_run(&loop_, UV_RUN_NOWAIT);
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&watchdog), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    return done();
  }

  // Reads whatever is available; true once the server closed the connection.
  static bool Drain(int fd, std::string& out) {
    char buffer[4096];
    for (;;) {
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n > 0) {
        out.append(buffer, static_cast<std::size_t>(n));
        continue;
      }
      return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
    }
  }

  std::string Exchange(const std::string& request) {
    const int fd = Connect();
    EXPECT_EQ(::send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
    std::string response;
    EXPECT_TRUE(RunUntil([&] { return Drain(fd, response); }));
    return response;
  }

  uv_loop_t loop_{};
  FakeBackend backend_;
  std::unique_ptr<AdminServer> server_;
  std::vector<int> fds_;
};

TEST_F(AdminServerTest, AnswersAndCloses) {
  const std::string response = Exchange("GET /v1/self HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(response.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << response;
  EXPECT_NE(response.find("Connection: close"), std::string::npos);
  EXPECT_NE(response.find("\"name\":\"self\""), std::string::npos);
}

TEST_F(AdminServerTest, MalformedRequestIsBadRequest) {
  const std::string response = Exchange("BLAH\x01\r\n\r\n");
  EXPECT_EQ(response.rfind("HTTP/1.1 400", 0), 0u) << response;
  EXPECT_NE(response.find("\"error\""), std::string::npos);
}

TEST_F(AdminServerTest, LeaveRunsAfterTheReplyIsWritten) {
  const std::string response = Exchange("POST /v1/leave HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(response.rfind("HTTP/1.1 200", 0), 0u) << response;
  EXPECT_TRUE(backend_.left_);
}

TEST_F(AdminServerTest, EventStreamDeliversPublishedLines) {
  const int fd = Connect();
  const std::string request = "GET /v1/events HTTP/1.1\r\n\r\n";
  ASSERT_EQ(::send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  ASSERT_TRUE(RunUntil([&] { return server_->event_clients() == 1; }));
  server_->publish_event("{\"event\":\"joined\"}\n");
  std::string received;
  ASSERT_TRUE(RunUntil([&] {
    Drain(fd, received);
    return received.find("{\"event\":\"joined\"}\n") != std::string::npos;
  }));
  EXPECT_NE(received.find("Transfer-Encoding: chunked"), std::string::npos);
}

TEST_F(AdminServerTest, SlowEventClientIsDisconnectedInsteadOfBuffered) {
  const int fd = Connect(/*receive_buffer_bytes=*/4096);
  const std::string request = "GET /v1/events HTTP/1.1\r\n\r\n";
  ASSERT_EQ(::send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  ASSERT_TRUE(RunUntil([&] { return server_->event_clients() == 1; }));
  const std::string line(1024, 'x');
  // Never read: the kernel buffers fill, then the server's queue, then it gives up.
  for (int i = 0; i < 8 * 1024 && server_->event_clients() == 1; ++i) {
    server_->publish_event(line + "\n");
    uv_run(&loop_, UV_RUN_NOWAIT);
  }
  EXPECT_EQ(server_->event_clients(), 0u);
}

TEST_F(AdminServerTest, ConnectionsBeyondTheLimitGetServiceUnavailable) {
  for (std::size_t i = 0; i < kAdminConnectionsMax; ++i) {
    Connect();
    uv_run(&loop_, UV_RUN_NOWAIT);  // Accept it, so the listen backlog never fills.
  }
  const std::string response = Exchange("GET /v1/self HTTP/1.1\r\n\r\n");
  EXPECT_EQ(response.rfind("HTTP/1.1 503", 0), 0u) << response;
}

}  // namespace
}  // namespace shoal::agent
