#include "node/agent/admin_api.h"

#include <gtest/gtest.h>

#include "tests/node/fake_backend.h"

namespace shoal::agent {
namespace {

using nlohmann::json;

class AdminApiTest : public ::testing::Test {
 protected:
  AdminApiTest() {
    crypto_init();
    AddMember("a", gossip::MemberStatus::kAlive);
    AddMember("b", gossip::MemberStatus::kDead);
  }
  void AddMember(const std::string& name, gossip::MemberStatus status) {
    gossip::Member m;
    m.name = name;
    m.status = status;
    m.addr = Address{"127.0.0.1", static_cast<std::uint16_t>(7000 + backend_.members_.size())};
    backend_.members_.push_back(m);
  }
  AdminReply Call(const std::string& method, const std::string& target, const std::string& body = "") {
    HttpRequest request;
    request.method = method;
    const auto q = target.find('?');
    request.path = target.substr(0, q);
    if (q != std::string::npos) {
      request.query = parse_query(target.substr(q + 1));
    }
    request.body = body;
    return handle_admin_request(request, backend_);
  }
  static json Body(const AdminReply& reply) { return json::parse(reply.response.body); }

  FakeBackend backend_;
};

TEST_F(AdminApiTest, MembersListsEveryone) {
  auto reply = Call("GET", "/v1/members");
  EXPECT_EQ(reply.response.status, 200);
  EXPECT_EQ(Body(reply).size(), 2u);
}

TEST_F(AdminApiTest, MembersFiltersByStatus) {
  auto body = Body(Call("GET", "/v1/members?status=dead"));
  ASSERT_EQ(body.size(), 1u);
  EXPECT_EQ(body[0].at("name"), "b");
}

TEST_F(AdminApiTest, UnknownStatusIsBadRequest) {
  auto reply = Call("GET", "/v1/members?status=zombie");
  EXPECT_EQ(reply.response.status, 400);
  EXPECT_TRUE(Body(reply).contains("error"));
}

TEST_F(AdminApiTest, SelfIncludesLocalHealth) {
  auto body = Body(Call("GET", "/v1/self"));
  EXPECT_EQ(body.at("name"), "a");
  EXPECT_EQ(body.at("local_health"), 1);
}

TEST_F(AdminApiTest, JoinReportsContacted) {
  auto reply = Call("POST", "/v1/join", R"({"addrs": ["127.0.0.1:1", "[::1]:2"]})");
  EXPECT_EQ(reply.response.status, 200);
  EXPECT_EQ(Body(reply).at("contacted"), 2);
  EXPECT_EQ(backend_.joined_.size(), 2u);
}

TEST_F(AdminApiTest, JoinWithoutPortIsBadRequest) {
  EXPECT_EQ(Call("POST", "/v1/join", R"({"addrs": ["127.0.0.1"]})").response.status, 400);
  EXPECT_EQ(Call("POST", "/v1/join", R"({"addrs": "127.0.0.1:1"})").response.status, 400);
  EXPECT_EQ(Call("POST", "/v1/join", R"({"addrs": []})").response.status, 400);
  EXPECT_EQ(Call("POST", "/v1/join", "{not json").response.status, 400);
  EXPECT_EQ(Call("POST", "/v1/join", "[1]").response.status, 400);
}

TEST_F(AdminApiTest, LeaveHappensAfterTheReplyIsWritten) {
  auto reply = Call("POST", "/v1/leave");
  EXPECT_EQ(reply.response.status, 200);
  EXPECT_FALSE(backend_.left_);
  ASSERT_TRUE(reply.after_write);
  reply.after_write();
  EXPECT_TRUE(backend_.left_);
}

TEST_F(AdminApiTest, EventsStartsAStream) {
  EXPECT_TRUE(Call("GET", "/v1/events").event_stream);
}

TEST_F(AdminApiTest, KeysRotateThroughInstallUseRemove) {
  const std::string fresh = format_cluster_key(FakeBackend::Key(2));
  const std::string old = format_cluster_key(FakeBackend::Key(1));
  EXPECT_EQ(Call("POST", "/v1/keys/install", R"({"key": ")" + fresh + "\"}").response.status, 200);
  EXPECT_EQ(Call("POST", "/v1/keys/use", R"({"key": ")" + fresh + "\"}").response.status, 200);
  EXPECT_EQ(Call("POST", "/v1/keys/remove", R"({"key": ")" + old + "\"}").response.status, 200);
  auto keys = Body(Call("GET", "/v1/keys")).at("keys");
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].at("key"), fresh);
  EXPECT_EQ(keys[0].at("primary"), true);
  EXPECT_EQ(keys[0].at("fingerprint"), cluster_key_fingerprint(FakeBackend::Key(2)));
}

TEST_F(AdminApiTest, RemovingThePrimaryKeyIsAConflict) {
  const std::string old = format_cluster_key(FakeBackend::Key(1));
  EXPECT_EQ(Call("POST", "/v1/keys/remove", R"({"key": ")" + old + "\"}").response.status, 409);
}

TEST_F(AdminApiTest, UsingAnUninstalledKeyIsNotFound) {
  const std::string fresh = format_cluster_key(FakeBackend::Key(3));
  EXPECT_EQ(Call("POST", "/v1/keys/use", R"({"key": ")" + fresh + "\"}").response.status, 404);
  EXPECT_EQ(Call("POST", "/v1/keys/install", R"({"key": "nope"})").response.status, 400);
}

TEST_F(AdminApiTest, CatalogVersionSetsOrBumps) {
  EXPECT_EQ(Body(Call("POST", "/v1/catalog-version", R"({"version": 10})")).at("catalog_version"), 10);
  EXPECT_EQ(Body(Call("POST", "/v1/catalog-version", "{}")).at("catalog_version"), 11);
  EXPECT_EQ(Call("POST", "/v1/catalog-version", R"({"version": -1})").response.status, 400);
}

TEST_F(AdminApiTest, DebugDropIsForbiddenByDefault) {
  EXPECT_EQ(Call("POST", "/v1/debug/drop", R"({"peers": ["127.0.0.1:1"]})").response.status, 403);
  EXPECT_TRUE(backend_.dropped_.empty());
}

TEST_F(AdminApiTest, DebugDropWhenEnabled) {
  backend_.fault_injection_ = true;
  EXPECT_EQ(Call("POST", "/v1/debug/drop", R"({"peers": ["127.0.0.1:1"]})").response.status, 200);
  EXPECT_EQ(backend_.dropped_.size(), 1u);
  EXPECT_EQ(Call("POST", "/v1/debug/drop", R"({"peers": []})").response.status, 200);
  EXPECT_TRUE(backend_.dropped_.empty());
}

TEST_F(AdminApiTest, MetricsIsPrometheusText) {
  auto reply = Call("GET", "/metrics");
  EXPECT_EQ(reply.response.status, 200);
  EXPECT_EQ(reply.response.content_type.rfind("text/plain", 0), 0u);
}

TEST_F(AdminApiTest, UnknownPathAndWrongMethod) {
  EXPECT_EQ(Call("GET", "/v2/nothing").response.status, 404);
  EXPECT_EQ(Call("POST", "/v1/members").response.status, 405);
  EXPECT_EQ(Call("GET", "/v1/join").response.status, 405);
}

}  // namespace
}  // namespace shoal::agent
