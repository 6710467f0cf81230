#pragma once
// node/agent/http.h: just enough HTTP/1.1 for the admin API. Owns request
// parsing (over libhttp-parser, incremental, bounded by kAdminRequestBytesMax
// and kAdminHeaderCountMax) and response serialisation. One request per
// connection: every response says "Connection: close". No I/O here.

#include <http_parser.h>

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace shoal::agent {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // Without the query string, e.g. "/v1/members".
  std::map<std::string, std::string> query;  // Decoded; a repeated key keeps the last value.
  std::vector<std::pair<std::string, std::string>> headers;  // Names lower-cased.
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
};

std::string_view http_reason(int status);
// A complete response with Content-Length and Connection: close.
std::string serialize_response(const HttpResponse& response);
// The head of a chunked streaming response, and one chunk of it.
std::string chunked_response_head(int status, std::string_view content_type);
std::string http_chunk(std::string_view data);

class HttpRequestParser {
 public:
  enum class State { kIncomplete, kComplete, kError };

  HttpRequestParser();
  HttpRequestParser(const HttpRequestParser&) = delete;
  HttpRequestParser& operator=(const HttpRequestParser&) = delete;

  // Feeds received bytes. After kComplete, request() is valid and further
  // bytes are ignored; after kError, error_status() is the status to answer
  // with (400 malformed, 413 too large, 431 too many headers).
  State feed(std::string_view bytes);
  State state() const { return state_; }
  const HttpRequest& request() const { return request_; }
  int error_status() const { return error_status_; }

 private:
  static int on_url(http_parser* p, const char* at, std::size_t n);
  static int on_header_field(http_parser* p, const char* at, std::size_t n);
  static int on_header_value(http_parser* p, const char* at, std::size_t n);
  static int on_headers_complete(http_parser* p);
  static int on_body(http_parser* p, const char* at, std::size_t n);
  static int on_message_complete(http_parser* p);
  void fail(int status);

  http_parser parser_{};
  http_parser_settings settings_{};
  State state_ = State::kIncomplete;
  int error_status_ = 0;
  std::size_t bytes_seen_ = 0;
  std::string url_;
  bool last_was_value_ = false;
  HttpRequest request_;
};

// Splits "a=1&b=x%20y" into a map, percent- and plus-decoding.
std::map<std::string, std::string> parse_query(std::string_view query);

}  // namespace shoal::agent
