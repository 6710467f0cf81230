#include "node/cli/admin_client.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <optional>

namespace shoal::cli {
namespace {

constexpr int kConnectTimeoutMs = 5000;
constexpr std::size_t kResponseBytesMax = 64 << 20;

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

Status send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(Code::kUnavailable, std::string("send to agent failed: ") + std::strerror(errno));
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

// Splits "HTTP/1.1 200 OK\r\nHeaders\r\n\r\n" off the front of buffer.
struct Head {
  int status = 0;
  bool chunked = false;
  std::size_t header_bytes = 0;
};

Result<std::optional<Head>> parse_head(std::string_view buffer) {
  const auto end = buffer.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (buffer.size() > 64 * 1024) {
      return make_error(Code::kInvalidArgument, "agent sent an oversized response header");
    }
    return std::optional<Head>();
  }
  Head head;
  head.header_bytes = end + 4;
  std::string_view headers = buffer.substr(0, end);
  if (!headers.starts_with("HTTP/1.")) {
    return make_error(Code::kInvalidArgument, "agent sent something that is not HTTP");
  }
  const auto sp = headers.find(' ');
  if (sp == std::string_view::npos || sp + 4 > headers.size()) {
    return make_error(Code::kInvalidArgument, "agent sent a malformed status line");
  }
  std::from_chars(headers.data() + sp + 1, headers.data() + sp + 4, head.status);
  std::string lower(headers);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  head.chunked = lower.find("transfer-encoding: chunked") != std::string::npos;
  return std::optional<Head>(head);
}

}  // namespace

Status ChunkedDecoder::feed(std::string_view input, std::string& out) {
  for (std::size_t i = 0; i < input.size() && state_ != State::kDone;) {
    switch (state_) {
      case State::kSize:
      case State::kTrailer:
      case State::kDataEnd: {
        const char c = input[i++];
        if (c != '\n') {
          line_ += c;
          if (line_.size() > 32) {
            return make_error(Code::kInvalidArgument, "malformed chunked encoding from agent");
          }
          break;
        }
        if (!line_.empty() && line_.back() == '\r') line_.pop_back();
        if (state_ == State::kDataEnd) {
          if (!line_.empty()) return make_error(Code::kInvalidArgument, "malformed chunk end from agent");
          state_ = State::kSize;
        } else if (state_ == State::kTrailer) {
          if (line_.empty()) state_ = State::kDone;
        } else {
          std::size_t size = 0;
          const auto semi = line_.find(';');
          const std::string_view digits = std::string_view(line_).substr(0, semi);
          auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), size, 16);
          if (digits.empty() || ec != std::errc() || p != digits.data() + digits.size() || digits.size() > 16) {
            return make_error(Code::kInvalidArgument, "malformed chunk size from agent");
          }
          remaining_ = size;
          state_ = size == 0 ? State::kTrailer : State::kData;
        }
        line_.clear();
        break;
      }
      case State::kData: {
        const std::size_t n = std::min(remaining_, input.size() - i);
        out.append(input.substr(i, n));
        i += n;
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::kDataEnd;
        break;
      }
      case State::kDone: break;
    }
  }
  return {};
}

Result<int> AdminClient::connect_to_agent() {
  auto addr = parse_address(admin_text_);
  if (!addr) {
    return make_error(Code::kInvalidArgument, "admin " + addr.error().message);
  }
  const std::string hint = " at " + admin_text_ + "; is `shoal agent` running there? (set --admin or SHOAL_ADMIN)";
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(addr->port);
  if (int rc = ::getaddrinfo(addr->host.c_str(), port.c_str(), &hints, &found); rc != 0) {
    return make_error(Code::kUnavailable, std::string("cannot resolve the agent address: ") + gai_strerror(rc) + hint);
  }
  std::string last_error = "no address";
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      rc = ::poll(&p, 1, kConnectTimeoutMs);
      if (rc == 1) {
        int err = 0;
        socklen_t len = sizeof err;
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
        errno = err;
        rc = err == 0 ? 0 : -1;
      } else {
        errno = rc == 0 ? ETIMEDOUT : errno;
        rc = -1;
      }
    }
    if (rc == 0) {
      // Back to blocking mode for the simple request/response exchange.
      ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
      ::freeaddrinfo(found);
      return fd;
    }
    last_error = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return make_error(Code::kUnavailable, "cannot reach the agent (" + last_error + ")" + hint);
}

Result<HttpResponse> AdminClient::request(std::string_view method, std::string_view path, std::string_view body) {
  auto fd_or = connect_to_agent();
  if (!fd_or) return std::unexpected(fd_or.error());
  Fd fd(*fd_or);
  std::string req;
  req.append(method).append(" ").append(path).append(" HTTP/1.1\r\nHost: shoal\r\nConnection: close\r\n");
  if (!body.empty() || method == "POST") {
    req.append("Content-Type: application/json\r\nContent-Length: ").append(std::to_string(body.size())).append("\r\n");
  }
  req.append("\r\n").append(body);
  SHOAL_TRY_STATUS(send_all(fd.get(), req));

  std::string raw;
  char buf[16384];
  for (;;) {
    const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(Code::kUnavailable, std::string("reading from the agent failed: ") + std::strerror(errno));
    }
    if (n == 0) break;
    raw.append(buf, static_cast<std::size_t>(n));
    if (raw.size() > kResponseBytesMax) {
      return make_error(Code::kResourceExhausted, "agent response exceeds " + std::to_string(kResponseBytesMax) + " bytes");
    }
  }
  auto head = parse_head(raw);
  if (!head) return std::unexpected(head.error());
  if (!*head) return make_error(Code::kUnavailable, "the agent closed the connection before answering");
  HttpResponse response;
  response.status = (*head)->status;
  const std::string_view rest = std::string_view(raw).substr((*head)->header_bytes);
  if ((*head)->chunked) {
    ChunkedDecoder decoder;
    SHOAL_TRY_STATUS(decoder.feed(rest, response.body));
  } else {
    response.body = std::string(rest);
  }
  return response;
}

Status AdminClient::stream_lines(std::string_view path, const std::function<bool(std::string_view)>& on_line) {
  auto fd_or = connect_to_agent();
  if (!fd_or) return std::unexpected(fd_or.error());
  Fd fd(*fd_or);
  std::string req = "GET " + std::string(path) + " HTTP/1.1\r\nHost: shoal\r\nConnection: close\r\n\r\n";
  SHOAL_TRY_STATUS(send_all(fd.get(), req));
  std::string raw;
  std::optional<Head> head;
  ChunkedDecoder decoder;
  std::string pending;
  char buf[16384];
  for (;;) {
    const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return make_error(Code::kUnavailable, std::string("reading from the agent failed: ") + std::strerror(errno));
    }
    if (n == 0) return {};
    std::string_view data(buf, static_cast<std::size_t>(n));
    if (!head) {
      raw.append(data);
      auto parsed = parse_head(raw);
      if (!parsed) return std::unexpected(parsed.error());
      if (!*parsed) continue;
      head = *parsed;
      if (head->status != 200) {
        return make_error(Code::kUnavailable, "agent answered HTTP " + std::to_string(head->status) + ": " +
                                                  raw.substr(head->header_bytes));
      }
      data = std::string_view(raw).substr(head->header_bytes);
    }
    if (head->chunked) {
      SHOAL_TRY_STATUS(decoder.feed(data, pending));
    } else {
      pending.append(data);
    }
    std::size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      if (nl > 0 && !on_line(std::string_view(pending).substr(0, nl))) return {};
      pending.erase(0, nl + 1);
    }
    if (pending.size() > (1 << 20)) {
      return make_error(Code::kResourceExhausted, "event line from the agent exceeds 1 MiB");
    }
    if (decoder.done()) return {};
  }
}

int report_client_error(const Error& error) {
  std::fprintf(stderr, "shoal: %s\n", error.message.c_str());
  return 2;
}

}  // namespace shoal::cli
