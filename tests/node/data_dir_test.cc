#include "node/agent/data_dir.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace shoal::agent {
namespace {

namespace fs = std::filesystem;

class DataDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    crypto_init();
    std::string pattern = (fs::temp_directory_path() / "shoal-node-test-XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    key_ = generate_cluster_key(random_);
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string WriteKeyFile(const std::string& name, const std::string& text, mode_t mode) {
    const std::string path = root_ + "/" + name;
    std::ofstream(path) << text << "\n";
    ::chmod(path.c_str(), mode);
    return path;
  }
  std::string DataPath() const { return root_ + "/data"; }
  Result<std::unique_ptr<DataDir>> Open(const ClusterKey& key) { return DataDir::open(DataPath(), key, random_); }

  Prng random_{1};
  std::string root_;
  ClusterKey key_{};
};

TEST_F(DataDirTest, KeyFileReadableByOthersIsRefusedWithChmodHint) {
  const std::string path = WriteKeyFile("loose.key", format_cluster_key(key_), 0644);
  auto key = read_cluster_key_file(path);
  ASSERT_FALSE(key.has_value());
  EXPECT_EQ(key.error().code, Code::kPermissionDenied);
  EXPECT_NE(key.error().message.find("chmod 600 " + path), std::string::npos) << key.error().message;
}

TEST_F(DataDirTest, KeyFileWritableByGroupIsRefused) {
  EXPECT_FALSE(read_cluster_key_file(WriteKeyFile("g.key", format_cluster_key(key_), 0620)).has_value());
}

TEST_F(DataDirTest, PrivateKeyFileIsRead) {
  auto key = read_cluster_key_file(WriteKeyFile("ok.key", format_cluster_key(key_), 0600));
  ASSERT_TRUE(key.has_value()) << key.error().message;
  EXPECT_EQ(*key, key_);
}

TEST_F(DataDirTest, MissingKeyFileNamesTheFile) {
  auto key = read_cluster_key_file(root_ + "/nope.key");
  ASSERT_FALSE(key.has_value());
  EXPECT_EQ(key.error().code, Code::kNotFound);
  EXPECT_NE(key.error().message.find("nope.key"), std::string::npos);
}

TEST_F(DataDirTest, InvalidKeyFileIsRefused) {
  auto key = read_cluster_key_file(WriteKeyFile("bad.key", "not a key", 0600));
  ASSERT_FALSE(key.has_value());
  EXPECT_EQ(key.error().code, Code::kInvalidArgument);
}

TEST_F(DataDirTest, DataDirThatIsAFileIsRefused) {
  std::ofstream(DataPath()) << "x";
  auto status = check_data_dir(DataPath());
  ASSERT_FALSE(status.has_value());
  EXPECT_NE(status.error().message.find("--data-dir"), std::string::npos);
}

TEST_F(DataDirTest, DataDirUnderMissingParentIsRefused) {
  EXPECT_FALSE(check_data_dir(root_ + "/missing/data").has_value());
}

TEST_F(DataDirTest, DataDirIsCreatedPrivate) {
  ASSERT_TRUE(check_data_dir(DataPath()).has_value());
  struct stat st {};
  ASSERT_EQ(::stat(DataPath().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_F(DataDirTest, DamagedLmdbIsRefused) {
  fs::create_directory(DataPath());
  std::ofstream(DataPath() + "/data.mdb") << std::string(64 * 1024, 'x');
  auto dir = Open(key_);
  ASSERT_FALSE(dir.has_value());
  EXPECT_NE(dir.error().message.find("LMDB"), std::string::npos) << dir.error().message;
}

TEST_F(DataDirTest, SecondAgentOnSameDirectoryIsRefused) {
  auto first = Open(key_);
  ASSERT_TRUE(first.has_value()) << first.error().message;
  auto second = Open(key_);
  ASSERT_FALSE(second.has_value());
  EXPECT_NE(second.error().message.find("in use"), std::string::npos);
}

TEST_F(DataDirTest, StatePersistsAcrossReopen) {
  NodeId id;
  ClusterKey rotated = generate_cluster_key(random_);
  {
    auto dir = Open(key_);
    ASSERT_TRUE(dir.has_value()) << dir.error().message;
    EXPECT_TRUE((*dir)->first_start());
    id = (*dir)->identity().node_id();
    EXPECT_EQ((*dir)->keyring().primary(), key_);
    Keyring ring = (*dir)->keyring();
    ASSERT_TRUE(ring.install(rotated));
    ASSERT_TRUE(ring.use(rotated));
    ASSERT_TRUE((*dir)->save_keyring(ring));
    ASSERT_TRUE((*dir)->save_incarnation(5));
    ASSERT_TRUE((*dir)->save_incarnation(3));  // Lower values never go back.
    ASSERT_TRUE((*dir)->save_known_members({Address{"127.0.0.1", 1}, Address{"::1", 2}}));
  }
  auto dir = Open(key_);
  ASSERT_TRUE(dir.has_value()) << dir.error().message;
  EXPECT_FALSE((*dir)->first_start());
  EXPECT_EQ((*dir)->identity().node_id(), id);
  // The stored ring wins over the (older) key file once rotated.
  EXPECT_EQ((*dir)->keyring().primary(), rotated);
  EXPECT_TRUE((*dir)->keyring().contains(key_));
  EXPECT_EQ((*dir)->incarnation(), 5u);
  EXPECT_EQ((*dir)->known_members(), (std::vector<Address>{Address{"127.0.0.1", 1}, Address{"::1", 2}}));
}

TEST_F(DataDirTest, KeyFileWithUnknownKeyBecomesPrimary) {
  { ASSERT_TRUE(Open(key_).has_value()); }
  // The agent missed a rotation; the operator hands it the cluster's new key.
  const ClusterKey fresh = generate_cluster_key(random_);
  auto dir = Open(fresh);
  ASSERT_TRUE(dir.has_value()) << dir.error().message;
  EXPECT_EQ((*dir)->keyring().primary(), fresh);
  EXPECT_TRUE((*dir)->keyring().contains(key_));
}

}  // namespace
}  // namespace shoal::agent
