#include "storage/lmdb.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace shoal::storage {
namespace {

class LmdbTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("shoal-lmdb-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    auto env = Env::open(dir_.string(), EnvOptions{.map_size_bytes = 64 << 20});
    ASSERT_TRUE(env) << env.error().to_string();
    env_ = std::move(*env);
    auto t = env_->table("t");
    ASSERT_TRUE(t);
    table_ = *t;
  }
  void TearDown() override {
    env_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Put(std::string_view k, std::string_view v) {
    auto txn = Txn::begin_write(*env_);
    ASSERT_TRUE(txn);
    ASSERT_TRUE(txn->put(table_, as_bytes(k), as_bytes(v)));
    ASSERT_TRUE(txn->commit());
  }
  std::optional<std::string> Get(std::string_view k) {
    auto txn = Txn::begin_read(*env_);
    auto v = txn->get(table_, as_bytes(k));
    if (!v || !*v) return std::nullopt;
    return std::string(as_string_view(**v));
  }

  std::filesystem::path dir_;
  std::unique_ptr<Env> env_;
  MDB_dbi table_ = 0;
};

TEST_F(LmdbTest, PutGetDelete) {
  Put("a", "1");
  EXPECT_EQ(Get("a"), "1");
  EXPECT_EQ(Get("b"), std::nullopt);
  auto txn = Txn::begin_write(*env_);
  EXPECT_EQ(txn->del(table_, as_bytes("a")).value(), true);
  EXPECT_EQ(txn->del(table_, as_bytes("a")).value(), false);
  ASSERT_TRUE(txn->commit());
  EXPECT_EQ(Get("a"), std::nullopt);
}

TEST_F(LmdbTest, AbortedWriteIsInvisible) {
  {
    auto txn = Txn::begin_write(*env_);
    ASSERT_TRUE(txn->put(table_, as_bytes("k"), as_bytes("v")));
  }  // Destructor aborts.
  EXPECT_EQ(Get("k"), std::nullopt);
}

TEST_F(LmdbTest, ScanVisitsInOrderFromStart) {
  Put("b", "2");
  Put("a", "1");
  Put("c", "3");
  auto txn = Txn::begin_read(*env_);
  std::string seen;
  ASSERT_TRUE(txn->scan(table_, as_bytes("b"), [&](ByteView k, ByteView) {
    seen += as_string_view(k);
    return true;
  }));
  EXPECT_EQ(seen, "bc");
}

TEST_F(LmdbTest, SurvivesReopen) {
  Put("durable", "yes");
  env_.reset();
  auto env = Env::open(dir_.string(), EnvOptions{.map_size_bytes = 64 << 20});
  ASSERT_TRUE(env);
  env_ = std::move(*env);
  table_ = *env_->table("t");
  EXPECT_EQ(Get("durable"), "yes");
}

TEST_F(LmdbTest, UnwritableDirectoryIsAnError) {
  auto env = Env::open("/proc/shoal-cannot-exist");
  ASSERT_FALSE(env);
}

}  // namespace
}  // namespace shoal::storage
