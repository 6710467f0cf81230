#include "node/cli/flags.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace shoal::cli {
namespace {

Result<ParsedFlags> Parse(std::vector<std::string_view> args) {
  return parse_flags(args, FlagSpec{{"admin", "join"}, {"json"}});
}

TEST(FlagsTest, ValuesSwitchesAndPositionals) {
  auto f = Parse({"--admin", "h:1", "--json", "x", "--join=a:1", "--join", "b:2"});
  ASSERT_TRUE(f);
  EXPECT_EQ(f->get("admin"), "h:1");
  EXPECT_TRUE(f->has("json"));
  EXPECT_EQ(f->all("join"), (std::vector<std::string>{"a:1", "b:2"}));
  EXPECT_EQ(f->positionals, (std::vector<std::string>{"x"}));
}

TEST(FlagsTest, UnknownFlagIsNamed) {
  auto f = Parse({"--nope"});
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().message.find("--nope"), std::string::npos);
}

TEST(FlagsTest, MissingValueIsAnError) {
  auto f = Parse({"--admin"});
  ASSERT_FALSE(f);
  EXPECT_NE(f.error().message.find("needs a value"), std::string::npos);
}

TEST(FlagsTest, SwitchWithValueIsAnError) { EXPECT_FALSE(Parse({"--json=yes"})); }

TEST(FlagsTest, AdminFromFlagThenEnvironmentThenDefault) {
  ::unsetenv("SHOAL_ADMIN");
  EXPECT_EQ(admin_address(*Parse({})), kDefaultAdmin);
  ::setenv("SHOAL_ADMIN", "127.0.0.1:9", 1);
  EXPECT_EQ(admin_address(*Parse({})), "127.0.0.1:9");
  EXPECT_EQ(admin_address(*Parse({"--admin", "127.0.0.1:8"})), "127.0.0.1:8");
  ::unsetenv("SHOAL_ADMIN");
}

}  // namespace
}  // namespace shoal::cli
