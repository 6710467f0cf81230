#include <gtest/gtest.h>

#include "node/cli/admin_client.h"

namespace shoal::cli {
namespace {

TEST(ChunkedDecoderTest, DecodesWholeBody) {
  ChunkedDecoder d;
  std::string out;
  ASSERT_TRUE(d.feed("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", out));
  EXPECT_EQ(out, "hello world");
  EXPECT_TRUE(d.done());
}

TEST(ChunkedDecoderTest, DecodesByteByByte) {
  const std::string body = "3;ext=1\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n";
  ChunkedDecoder d;
  std::string out;
  for (char c : body) {
    ASSERT_TRUE(d.feed(std::string_view(&c, 1), out));
  }
  EXPECT_EQ(out, "abc0123456789");
  EXPECT_TRUE(d.done());
}

TEST(ChunkedDecoderTest, BadSizeIsAnError) {
  ChunkedDecoder d;
  std::string out;
  EXPECT_FALSE(d.feed("zz\r\n", out));
}

TEST(ChunkedDecoderTest, MissingChunkTerminatorIsAnError) {
  ChunkedDecoder d;
  std::string out;
  EXPECT_FALSE(d.feed("1\r\naXY\r\n", out));
}

TEST(ChunkedDecoderTest, OverlongSizeLineIsAnError) {
  ChunkedDecoder d;
  std::string out;
  EXPECT_FALSE(d.feed(std::string(100, '1'), out));
}

TEST(ClientTest, UnreachableAgentIsUnavailable) {
  AdminClient c("127.0.0.1:1");
  auto r = c.request("GET", "/v1/members");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kUnavailable);
  EXPECT_NE(r.error().message.find("shoal agent"), std::string::npos);
}

TEST(ClientTest, BadAdminAddressIsInvalidArgument) {
  AdminClient c("localhost");
  auto r = c.request("GET", "/v1/members");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kInvalidArgument);
}

}  // namespace
}  // namespace shoal::cli
