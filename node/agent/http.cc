#include "node/agent/http.h"

#include <cctype>

#include "base/assert.h"
#include "node/agent/limits.h"

namespace shoal::agent {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

HttpRequestParser* self_of(http_parser* p) { return static_cast<HttpRequestParser*>(p->data); }

}  // namespace

std::string_view http_reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

std::string serialize_response(const HttpResponse& response) {
  std::string out = "HTTP/1.1 " + std::to_string(response.status) + " " + std::string(http_reason(response.status)) +
                    "\r\nContent-Type: " + response.content_type +
                    "\r\nContent-Length: " + std::to_string(response.body.size()) + "\r\nConnection: close\r\n\r\n";
  out += response.body;
  return out;
}

std::string chunked_response_head(int status, std::string_view content_type) {
  return "HTTP/1.1 " + std::to_string(status) + " " + std::string(http_reason(status)) +
         "\r\nContent-Type: " + std::string(content_type) +
         "\r\nTransfer-Encoding: chunked\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
}

std::string http_chunk(std::string_view data) {
  SHOAL_ASSERT(!data.empty());  // An empty chunk would end the stream.
  char size[32];
  const int n = std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  std::string out(size, static_cast<std::size_t>(n));
  out.append(data);
  out += "\r\n";
  return out;
}

std::map<std::string, std::string> parse_query(std::string_view query) {
  std::map<std::string, std::string> out;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) {
      continue;
    }
    const std::size_t eq = pair.find('=');
    if (eq == std::string_view::npos) {
      out[percent_decode(pair)] = "";
    } else {
      out[percent_decode(pair.substr(0, eq))] = percent_decode(pair.substr(eq + 1));
    }
  }
  return out;
}

HttpRequestParser::HttpRequestParser() {
  http_parser_init(&parser_, HTTP_REQUEST);
  parser_.data = this;
  http_parser_settings_init(&settings_);
  settings_.on_url = on_url;
  settings_.on_header_field = on_header_field;
  settings_.on_header_value = on_header_value;
  settings_.on_headers_complete = on_headers_complete;
  settings_.on_body = on_body;
  settings_.on_message_complete = on_message_complete;
}

void HttpRequestParser::fail(int status) {
  if (state_ != State::kError) {
    state_ = State::kError;
    error_status_ = status;
  }
}

HttpRequestParser::State HttpRequestParser::feed(std::string_view bytes) {
  if (state_ != State::kIncomplete || bytes.empty()) {
    return state_;
  }
  bytes_seen_ += bytes.size();
  if (bytes_seen_ > kAdminRequestBytesMax) {
    fail(413);
    return state_;
  }
  const std::size_t parsed = http_parser_execute(&parser_, &settings_, bytes.data(), bytes.size());
  if (state_ == State::kIncomplete && (parsed != bytes.size() || HTTP_PARSER_ERRNO(&parser_) != HPE_OK)) {
    fail(400);
  }
  // On completion the parser paused itself: nothing more is read from this connection.
  return state_;
}

int HttpRequestParser::on_url(http_parser* p, const char* at, std::size_t n) {
  self_of(p)->url_.append(at, n);
  return 0;
}

int HttpRequestParser::on_header_field(http_parser* p, const char* at, std::size_t n) {
  auto* self = self_of(p);
  auto& headers = self->request_.headers;
  if (headers.empty() || self->last_was_value_) {
    if (headers.size() >= kAdminHeaderCountMax) {
      self->fail(431);
      return 1;
    }
    headers.emplace_back();
  }
  self->last_was_value_ = false;
  for (std::size_t i = 0; i < n; ++i) {
    headers.back().first.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(at[i]))));
  }
  return 0;
}

int HttpRequestParser::on_header_value(http_parser* p, const char* at, std::size_t n) {
  auto* self = self_of(p);
  if (self->request_.headers.empty()) {
    self->fail(400);
    return 1;
  }
  self->last_was_value_ = true;
  self->request_.headers.back().second.append(at, n);
  return 0;
}

int HttpRequestParser::on_headers_complete(http_parser* p) {
  auto* self = self_of(p);
  self->request_.method = http_method_str(static_cast<http_method>(p->method));
  http_parser_url url{};
  http_parser_url_init(&url);
  if (http_parser_parse_url(self->url_.data(), self->url_.size(), 0, &url) != 0 ||
      (url.field_set & (1 << UF_PATH)) == 0) {
    self->fail(400);
    return 1;
  }
  self->request_.path = percent_decode(
      std::string_view(self->url_).substr(url.field_data[UF_PATH].off, url.field_data[UF_PATH].len));
  if ((url.field_set & (1 << UF_QUERY)) != 0) {
    self->request_.query =
        parse_query(std::string_view(self->url_).substr(url.field_data[UF_QUERY].off, url.field_data[UF_QUERY].len));
  }
  return 0;
}

int HttpRequestParser::on_body(http_parser* p, const char* at, std::size_t n) {
  self_of(p)->request_.body.append(at, n);
  return 0;
}

int HttpRequestParser::on_message_complete(http_parser* p) {
  auto* self = self_of(p);
  if (self->state_ == State::kIncomplete) {
    self->state_ = State::kComplete;
  }
  // Stop here: one request per connection, pipelined bytes are ignored.
  http_parser_pause(p, 1);
  return 0;
}

}  // namespace shoal::agent
