#include "node/agent/http.h"

#include <gtest/gtest.h>

#include <string>

#include "node/agent/limits.h"

namespace shoal::agent {
namespace {

class HttpRequestParserTest : public ::testing::Test {
 protected:
  HttpRequestParser::State Feed(std::string_view bytes) { return parser_.feed(bytes); }
  HttpRequestParser::State FeedByteByByte(std::string_view bytes) {
    auto state = parser_.state();
    for (char c : bytes) {
      state = parser_.feed(std::string_view(&c, 1));
    }
    return state;
  }
  HttpRequestParser parser_;
};

TEST_F(HttpRequestParserTest, ParsesGetWithQuery) {
  ASSERT_EQ(Feed("GET /v1/members?status=alive&x=a%20b HTTP/1.1\r\nHost: x\r\n\r\n"),
            HttpRequestParser::State::kComplete);
  const auto& r = parser_.request();
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.path, "/v1/members");
  EXPECT_EQ(r.query.at("status"), "alive");
  EXPECT_EQ(r.query.at("x"), "a b");
  ASSERT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(r.headers[0].first, "host");
}

TEST_F(HttpRequestParserTest, ParsesPostBodyFedByteByByte) {
  const std::string body = R"({"addrs": ["127.0.0.1:7946"]})";
  const std::string request = "POST /v1/join HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(FeedByteByByte(request), HttpRequestParser::State::kComplete);
  EXPECT_EQ(parser_.request().method, "POST");
  EXPECT_EQ(parser_.request().body, body);
}

TEST_F(HttpRequestParserTest, IncompleteUntilBodyArrives) {
  EXPECT_EQ(Feed("POST /v1/leave HTTP/1.1\r\nContent-Length: 2\r\n\r\n{"), HttpRequestParser::State::kIncomplete);
  EXPECT_EQ(Feed("}"), HttpRequestParser::State::kComplete);
}

TEST_F(HttpRequestParserTest, GarbageIsBadRequest) {
  EXPECT_EQ(Feed("\x01\x02 not http\r\n\r\n"), HttpRequestParser::State::kError);
  EXPECT_EQ(parser_.error_status(), 400);
}

TEST_F(HttpRequestParserTest, OversizedRequestIsPayloadTooLarge) {
  const std::string head = "POST /v1/join HTTP/1.1\r\nContent-Length: " + std::to_string(kAdminRequestBytesMax) +
                           "\r\n\r\n";
  EXPECT_EQ(Feed(head), HttpRequestParser::State::kIncomplete);
  EXPECT_EQ(Feed(std::string(kAdminRequestBytesMax, 'x')), HttpRequestParser::State::kError);
  EXPECT_EQ(parser_.error_status(), 413);
}

TEST_F(HttpRequestParserTest, TooManyHeadersIsRefused) {
  std::string request = "GET /v1/self HTTP/1.1\r\n";
  for (std::size_t i = 0; i <= kAdminHeaderCountMax; ++i) {
    request += "X-H" + std::to_string(i) + ": v\r\n";
  }
  request += "\r\n";
  EXPECT_EQ(Feed(request), HttpRequestParser::State::kError);
  EXPECT_EQ(parser_.error_status(), 431);
}

TEST_F(HttpRequestParserTest, BytesAfterCompleteRequestAreIgnored) {
  ASSERT_EQ(Feed("GET /v1/self HTTP/1.1\r\n\r\nGET /v1/members HTTP/1.1\r\n\r\n"),
            HttpRequestParser::State::kComplete);
  EXPECT_EQ(parser_.request().path, "/v1/self");
}

TEST(HttpResponseTest, SerializedResponseHasLengthAndClose) {
  const std::string text = serialize_response(HttpResponse{404, "{}\n", "application/json"});
  EXPECT_EQ(text,
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 3\r\n"
            "Connection: close\r\n\r\n{}\n");
}

TEST(HttpResponseTest, ChunkHasHexLength) {
  EXPECT_EQ(http_chunk(std::string(26, 'a')), "1a\r\n" + std::string(26, 'a') + "\r\n");
  EXPECT_NE(chunked_response_head(200, "application/x-ndjson").find("Transfer-Encoding: chunked"), std::string::npos);
}

TEST(HttpQueryTest, DecodesPlusAndPercent) {
  auto q = parse_query("a=1+2&b=%41%zz&c");
  EXPECT_EQ(q.at("a"), "1 2");
  EXPECT_EQ(q.at("b"), "A%zz");
  EXPECT_EQ(q.at("c"), "");
}

}  // namespace
}  // namespace shoal::agent
