#include "base/address.h"

#include <gtest/gtest.h>

namespace shoal {
namespace {

TEST(AddressTest, ParsesIpv4AndName) {
  auto a = parse_address("127.0.0.1:7946");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 7946);
  EXPECT_EQ(a->to_string(), "127.0.0.1:7946");
  EXPECT_TRUE(parse_address("localhost:1"));
}

TEST(AddressTest, ParsesBracketedIpv6) {
  auto a = parse_address("[::1]:8000");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->host, "::1");
  EXPECT_TRUE(a->is_ipv6());
  EXPECT_EQ(a->to_string(), "[::1]:8000");
}

TEST(AddressTest, MissingPortIsAnError) {
  auto a = parse_address("127.0.0.1");
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, Code::kInvalidArgument);
  EXPECT_NE(a.error().message.find("missing port"), std::string::npos);
  EXPECT_FALSE(parse_address("[::1]"));
  EXPECT_FALSE(parse_address("::1:80"));
}

TEST(AddressTest, BadPortIsAnError) {
  EXPECT_FALSE(parse_address("h:"));
  EXPECT_FALSE(parse_address("h:65536"));
  EXPECT_FALSE(parse_address("h:12x"));
  EXPECT_FALSE(parse_address(":80"));
}

}  // namespace
}  // namespace shoal
