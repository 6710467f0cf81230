#pragma once
// node/cli/admin_client.h: the CLI's blocking HTTP/1.1 client for the agent's
// admin API on 127.0.0.1. One request per connection (Connection: close).
// Owns nothing between calls. Not for use inside the agent's event loop.

#include <functional>
#include <string>
#include <string_view>

#include "base/address.h"
#include "base/result.h"

namespace shoal::cli {

struct HttpResponse {
  int status = 0;
  std::string body;
};

// Decodes an HTTP/1.1 chunked body incrementally. Bounded: a chunk size line
// over 16 hex digits or a malformed framing is an error.
class ChunkedDecoder {
 public:
  // Appends decoded payload to out. Returns InvalidArgument on bad framing.
  Status feed(std::string_view input, std::string& out);
  bool done() const { return state_ == State::kDone; }

 private:
  enum class State { kSize, kData, kDataEnd, kTrailer, kDone };
  State state_ = State::kSize;
  std::string line_;
  std::size_t remaining_ = 0;
};

class AdminClient {
 public:
  explicit AdminClient(std::string admin_text) : admin_text_(std::move(admin_text)) {}

  // Unavailable when the agent cannot be reached; the message says how to fix it.
  Result<HttpResponse> request(std::string_view method, std::string_view path, std::string_view body = {});
  // GETs path and calls on_line for each line of the (chunked) body until the
  // server closes or on_line returns false.
  Status stream_lines(std::string_view path, const std::function<bool(std::string_view)>& on_line);

 private:
  Result<int> connect_to_agent();
  std::string admin_text_;
};

// Prints "shoal: <message>" on stderr for an error from the client and
// returns the exit code (2: unreachable agent or usage).
int report_client_error(const Error& error);

}  // namespace shoal::cli
