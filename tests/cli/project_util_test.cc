#include "node/cli/project_util.h"

#include <gtest/gtest.h>

namespace shoal::cli {
namespace {

using nlohmann::json;

TEST(ParseSizeTest, PlainBytesAndUnits) {
  EXPECT_EQ(parse_size("0"), 0u);
  EXPECT_EQ(parse_size("1234"), 1234u);
  EXPECT_EQ(parse_size("512B"), 512u);
  EXPECT_EQ(parse_size("1K"), 1024u);
  EXPECT_EQ(parse_size("500M"), 500ull << 20);
  EXPECT_EQ(parse_size("10G"), 10ull << 30);
  EXPECT_EQ(parse_size("2T"), 2ull << 40);
  EXPECT_EQ(parse_size("3P"), 3ull << 50);
}

TEST(ParseSizeTest, UnitSpellingsAreCaseInsensitive) {
  for (const char* s : {"10G", "10g", "10GB", "10gb", "10GiB", "10gib"}) {
    EXPECT_EQ(parse_size(s), 10ull << 30) << s;
  }
  EXPECT_EQ(parse_size("4kib"), 4096u);
}

TEST(ParseSizeTest, DecimalsThatAreWholeBytes) {
  EXPECT_EQ(parse_size("1.5G"), 3ull << 29);
  EXPECT_EQ(parse_size("0.5K"), 512u);
  EXPECT_EQ(parse_size("2.25M"), 9ull << 18);
  EXPECT_EQ(parse_size("1.0"), 1u);
  EXPECT_FALSE(parse_size("1.5"));     // Half a byte.
  EXPECT_FALSE(parse_size("0.001K"));  // 1.024 bytes.
}

TEST(ParseSizeTest, RejectsGarbage) {
  for (const char* s : {"", "G", "-1", "+1", " 1G", "1G ", "1 G", "1.G", ".5G", "1X", "1GG", "1Gx", "1iB", "1e3",
                        "0x10", "1,5G", "１G"}) {
    auto r = parse_size(s);
    EXPECT_FALSE(r) << "'" << s << "' parsed as " << (r ? *r : 0);
    if (!r) {
      EXPECT_NE(r.error().message.find("is not a size"), std::string::npos);
    }
  }
}

TEST(ParseSizeTest, Overflow) {
  EXPECT_EQ(parse_size("18446744073709551615"), UINT64_MAX);
  EXPECT_FALSE(parse_size("18446744073709551616"));
  EXPECT_FALSE(parse_size("99999999999999999999999"));
  EXPECT_EQ(parse_size("16383P"), 16383ull << 50);
  EXPECT_FALSE(parse_size("16384P"));  // 2^64.
  EXPECT_EQ(parse_size("16383.5P"), (16383ull << 50) + (1ull << 49));
  EXPECT_FALSE(parse_size("1.1234567891G"));  // Over 9 decimals.
}

TEST(ProjectIdTest, RefusesWhatCannotBeAPathSegment) {
  EXPECT_TRUE(check_project_id("p1"));
  EXPECT_TRUE(check_project_id("team.web-2_x"));
  for (const char* s : {"", "a/b", "a?b", "a#b", "a%2f", "a b", "a\nb"}) {
    EXPECT_FALSE(check_project_id(s)) << s;
  }
}

json placement() {
  return json::parse(R"({"project": "p1", "generation": 1, "version": 4, "epoch": 2,
    "primary": "node-3", "primary_id": "9f3c", "replicas": ["node-3", "node-0", "node-5"],
    "replica_ids": ["9f3c", "a", "b"], "state": "stopped",
    "last_ack": {"snapshot": "ab12cd34ef56ab12cd34ef56", "seq": 2}, "preferred_dc": "b", "quota_bytes": 0})");
}

TEST(RenderTest, WhereLine) {
  EXPECT_EQ(where_line(placement()),
            "p1: epoch 2, primary node-3, replicas node-3 node-0 node-5, last ack ab12cd34ef56 (seq 2)");
  json empty = placement();
  empty["last_ack"] = {{"snapshot", ""}, {"seq", 0}};
  empty["primary"] = "";
  empty["replicas"] = json::array();
  EXPECT_EQ(where_line(empty), "p1: epoch 2, primary -, replicas -, last ack none");
  // Missing or mistyped fields never throw.
  EXPECT_EQ(where_line(json::object()), ": epoch 0, primary -, replicas -, last ack none");
  EXPECT_EQ(where_line(json("x")), ": epoch 0, primary -, replicas -, last ack none");
  EXPECT_EQ(last_ack_text(json{{"last_ack", 5}}), "none");
  EXPECT_EQ(replicas_text(json{{"replicas", {1, "n1"}}}), "n1");
}

TEST(RenderTest, TimeText) {
  EXPECT_EQ(time_text(json("2024-01-02T03:04:05Z")), "2024-01-02T03:04:05Z");
  EXPECT_EQ(time_text(json(0)), "1970-01-01T00:00:00Z");
  EXPECT_EQ(time_text(json(1704164645)), "2024-01-02T03:04:05Z");
  EXPECT_EQ(time_text(json(1704164645123456789ll)), "2024-01-02T03:04:05Z");
  EXPECT_EQ(time_text(json()), "-");
}

TEST(RenderTest, SpinnerLine) {
  json op{{"id", 7}, {"kind", "save"}, {"project", "p1"}, {"state", "running"}};
  EXPECT_EQ(spinner_line(0, op, 1.25), "| save p1: running 1.2 s");
  EXPECT_EQ(spinner_line(5, op, 0), "/ save p1: running 0.0 s");
  op["progress"] = 0.4;
  EXPECT_EQ(spinner_line(2, op, 3), "- save p1: running 3.0 s 40%");
  op["progress"] = 7;  // Out of range: not shown.
  EXPECT_EQ(spinner_line(3, op, 3), "\\ save p1: running 3.0 s");
}

}  // namespace
}  // namespace shoal::cli
