#include "node/agent/render.h"

#include <gtest/gtest.h>

namespace shoal::agent {
namespace {

gossip::Member SampleMember() {
  gossip::Member m;
  m.id.bytes[0] = 0xab;
  m.name = "node-1";
  m.dc = "dc2";
  m.addr = Address{"::1", 7946};
  m.incarnation = 7;
  m.status = gossip::MemberStatus::kSuspect;
  m.stalled = true;
  m.catalog_version = 42;
  m.health = gossip::Health{1500, 1 << 20, 2, 3, "0.1.0"};
  return m;
}

TEST(RenderTest, MemberJsonHasEveryField) {
  const auto j = member_json(SampleMember());
  EXPECT_EQ(j.at("name"), "node-1");
  EXPECT_EQ(j.at("id"), SampleMember().id.to_hex());
  EXPECT_EQ(j.at("dc"), "dc2");
  EXPECT_EQ(j.at("addr"), "[::1]:7946");
  EXPECT_EQ(j.at("status"), "suspect");
  EXPECT_EQ(j.at("stalled"), true);
  EXPECT_EQ(j.at("incarnation"), 7);
  EXPECT_EQ(j.at("catalog_version"), 42);
  const auto& h = j.at("health");
  EXPECT_DOUBLE_EQ(h.at("load").get<double>(), 1.5);
  EXPECT_EQ(h.at("free_disk_bytes"), 1 << 20);
  EXPECT_EQ(h.at("local_health"), 2);
  EXPECT_EQ(h.at("projects_hosted"), 3);
  EXPECT_EQ(h.at("version"), "0.1.0");
}

TEST(RenderTest, TimeIsRfc3339UtcWithMilliseconds) {
  const auto t = std::chrono::system_clock::time_point(std::chrono::milliseconds(1700000000123));
  EXPECT_EQ(rfc3339_utc_ms(t), "2023-11-14T22:13:20.123Z");
}

TEST(RenderTest, EventLineIsOneJsonObjectPerLine) {
  gossip::Event event{gossip::EventKind::kDead, Instant{}, SampleMember()};
  const std::string line = event_line(event, std::chrono::system_clock::time_point(std::chrono::milliseconds(5)));
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);
  const auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j.at("event"), "dead");
  EXPECT_EQ(j.at("time"), "1970-01-01T00:00:00.005Z");
  EXPECT_EQ(j.at("member").at("name"), "node-1");
}

TEST(RenderTest, EventNamesMatchTheAdminApi) {
  EXPECT_EQ(api_event_name(gossip::EventKind::kJoined), "joined");
  EXPECT_EQ(api_event_name(gossip::EventKind::kStalled), "stalled");
  EXPECT_EQ(api_event_name(gossip::EventKind::kHealthChanged), "health");
  EXPECT_EQ(api_event_name(gossip::EventKind::kCatalogChanged), "catalog");
  EXPECT_EQ(api_event_name(gossip::EventKind::kUpdated), "updated");
}

TEST(RenderTest, InvalidUtf8FromPeersDoesNotThrow) {
  auto m = SampleMember();
  m.name = std::string("bad\xff\xfe", 5);
  std::string text;
  EXPECT_NO_THROW(text = json_text(member_json(m)));
  EXPECT_NE(text.find("bad"), std::string::npos);
}

TEST(RenderTest, MetricsTextHasEveryFamily) {
  MetricsSnapshot m;
  m.members_by_status = {5, 1, 2, 0};
  m.core.probes_sent = 10;
  m.core.probes_failed = 1;
  m.core.suspicions = 3;
  m.core.refutations = 4;
  m.core.deaths_declared = 2;
  m.core.decode_errors = 6;
  m.drops.add(DropReason::kNoKey);
  m.drops.add(DropReason::kNoKey);
  m.drops.add(DropReason::kDecodeError);
  m.packets_in = 100;
  m.packets_out = 90;
  m.bytes_in = 1000;
  m.bytes_out = 900;
  m.local_health = 2;
  const std::string text = render_metrics(m);
  for (const char* line : {"shoal_members{status=\"alive\"} 5\n", "shoal_members{status=\"suspect\"} 1\n",
                           "shoal_members{status=\"dead\"} 2\n", "shoal_members{status=\"left\"} 0\n",
                           "shoal_probes_total 10\n", "shoal_probes_failed_total 1\n", "shoal_suspicions_total 3\n",
                           "shoal_refutations_total 4\n", "shoal_deaths_declared_total 2\n",
                           "shoal_packets_in_total 100\n", "shoal_packets_out_total 90\n",
                           "shoal_bytes_in_total 1000\n", "shoal_bytes_out_total 900\n",
                           "shoal_datagrams_dropped_total{reason=\"no_key\"} 2\n",
                           "shoal_datagrams_dropped_total{reason=\"decode_error\"} 7\n",
                           "shoal_datagrams_dropped_total{reason=\"too_short\"} 0\n",
                           "shoal_datagrams_dropped_total{reason=\"oversized\"} 0\n", "shoal_local_health 2\n",
                           "# TYPE shoal_probes_total counter\n", "# TYPE shoal_members gauge\n"}) {
    EXPECT_NE(text.find(line), std::string::npos) << line;
  }
}

}  // namespace
}  // namespace shoal::agent

namespace shoal::agent {
namespace {

HttpRequest PostWithBody(std::string body) {
  HttpRequest request;
  request.method = "POST";
  request.path = "/v1/replicate";
  request.body = std::move(body);
  return request;
}

TEST(ParseJsonBodyTest, EmptyBodyIsAnEmptyObject) {
  auto body = parse_json_body(PostWithBody(""));
  ASSERT_TRUE(body);
  EXPECT_TRUE(body->is_object());
  EXPECT_TRUE(body->empty());
}

TEST(ParseJsonBodyTest, GarbageIsInvalidArgumentSayingWhy) {
  for (const char* garbage : {"{not json", "\x01\x02\xff", "{\"a\": 1", "nul"}) {
    auto body = parse_json_body(PostWithBody(garbage));
    ASSERT_FALSE(body) << garbage;
    EXPECT_EQ(body.error().code, Code::kInvalidArgument);
    EXPECT_NE(body.error().message.find("not valid JSON"), std::string::npos);
  }
}

TEST(ParseJsonBodyTest, NonObjectIsRefused) {
  for (const char* other : {"[1, 2]", "42", "\"text\"", "null"}) {
    auto body = parse_json_body(PostWithBody(other));
    ASSERT_FALSE(body) << other;
    EXPECT_NE(body.error().message.find("must be a JSON object"), std::string::npos);
  }
}

TEST(ParseJsonBodyTest, ObjectIsReturned) {
  auto body = parse_json_body(PostWithBody(R"({"project": "p", "bytes_per_second": 5})"));
  ASSERT_TRUE(body);
  EXPECT_EQ(body->at("project"), "p");
}

}  // namespace
}  // namespace shoal::agent
