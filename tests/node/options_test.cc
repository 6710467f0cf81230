#include "node/agent/options.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace shoal::agent {
namespace {

namespace fs = std::filesystem;

class OptionsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (fs::temp_directory_path() / "shoal-options-test-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
  }
  void TearDown() override { fs::remove_all(root_); }

  Status Load(const std::string& toml) {
    const std::string path = root_ + "/agent.toml";
    std::ofstream(path) << toml;
    return load_config_file(path, settings_);
  }
  void Require() {
    settings_.values["name"] = "n";
    settings_.values["dc"] = "d";
    settings_.values["data_dir"] = "/tmp/x";
    settings_.values["cluster_key_file"] = "/tmp/k";
  }

  std::string root_;
  Settings settings_;
};

TEST_F(OptionsTest, ConfigFileSetsEveryKey) {
  ASSERT_TRUE(Load(R"(
name = "node-1"
dc = "dc1"
data_dir = "/var/lib/shoal"
bind = "[::1]:7946"
admin = "127.0.0.1:8000"
cluster_key_file = "/etc/shoal/key"
advertise = "10.0.0.1:7946"
join = ["10.0.0.2:7946", "10.0.0.3:7946"]
profile = "wan"
enable_fault_injection = true
)").has_value());
  auto options = build_options(settings_);
  ASSERT_TRUE(options.has_value()) << options.error().message;
  EXPECT_EQ(options->name, "node-1");
  EXPECT_EQ(options->dc, "dc1");
  EXPECT_EQ(options->data_dir, "/var/lib/shoal");
  EXPECT_EQ(options->bind, (Address{"::1", 7946}));
  EXPECT_EQ(options->admin, (Address{"127.0.0.1", 8000}));
  EXPECT_EQ(options->cluster_key_file, "/etc/shoal/key");
  ASSERT_TRUE(options->advertise.has_value());
  EXPECT_EQ(*options->advertise, (Address{"10.0.0.1", 7946}));
  EXPECT_EQ(options->join.size(), 2u);
  EXPECT_EQ(options->profile, gossip::Profile::kWan);
  EXPECT_TRUE(options->fault_injection);
}

TEST_F(OptionsTest, UnknownKeyIsRefused) {
  auto loaded = Load("nmae = \"typo\"\n");
  ASSERT_FALSE(loaded.has_value());
  EXPECT_NE(loaded.error().message.find("nmae"), std::string::npos);
}

TEST_F(OptionsTest, WrongTypeIsRefused) {
  EXPECT_FALSE(Load("name = 3\n").has_value());
  EXPECT_FALSE(Load("join = \"10.0.0.1:1\"\n").has_value());
  EXPECT_FALSE(Load("enable_fault_injection = \"yes\"\n").has_value());
}

TEST_F(OptionsTest, SyntaxErrorNamesTheLine) {
  auto loaded = Load("name = \"a\"\ndc = \n");
  ASSERT_FALSE(loaded.has_value());
  EXPECT_NE(loaded.error().message.find("line 2"), std::string::npos) << loaded.error().message;
}

TEST_F(OptionsTest, MissingFileIsRefused) {
  EXPECT_FALSE(load_config_file(root_ + "/nope.toml", settings_).has_value());
}

TEST_F(OptionsTest, RequiredSettingIsNamedAsAFlag) {
  Require();
  settings_.values.erase("data_dir");
  auto options = build_options(settings_);
  ASSERT_FALSE(options.has_value());
  EXPECT_NE(options.error().message.find("--data-dir"), std::string::npos);
}

TEST_F(OptionsTest, DefaultsAreLoopback) {
  Require();
  auto options = build_options(settings_);
  ASSERT_TRUE(options.has_value());
  EXPECT_EQ(options->bind, (Address{"127.0.0.1", 7946}));
  EXPECT_EQ(options->admin, (Address{"127.0.0.1", 7947}));
  EXPECT_FALSE(options->advertise.has_value());
  EXPECT_EQ(options->profile, gossip::Profile::kLan);
  EXPECT_FALSE(options->fault_injection);
}

TEST_F(OptionsTest, AdvertiseWithoutPortIsRefused) {
  Require();
  settings_.values["advertise"] = "10.0.0.1";
  auto options = build_options(settings_);
  ASSERT_FALSE(options.has_value());
  EXPECT_NE(options.error().message.find("--advertise"), std::string::npos);
  EXPECT_NE(options.error().message.find("port"), std::string::npos);
}

TEST_F(OptionsTest, BadProfileAndJoinAreRefused) {
  Require();
  settings_.values["profile"] = "fast";
  EXPECT_FALSE(build_options(settings_).has_value());
  settings_.values.erase("profile");
  settings_.join = {"10.0.0.1"};
  EXPECT_FALSE(build_options(settings_).has_value());
}

}  // namespace
}  // namespace shoal::agent
