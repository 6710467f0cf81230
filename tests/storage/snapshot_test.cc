#include "storage/snapshot_store.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <grp.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <filesystem>
#include <map>
#include <set>
#include <tuple>

#include "storage/snapshot_internal.h"
#include "tests/storage/tree_util.h"

namespace shoal::storage {
namespace {

namespace fs = std::filesystem;
using testing::describe;
using testing::make_random_tree;
using testing::random_bytes;
using testing::read_file;
using testing::write_file;

// Far enough after any file's ctime that the racy-cache rule never applies.
std::int64_t test_now_ns(int offset_s = 0) {
  struct timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return (static_cast<std::int64_t>(ts.tv_sec) + 100 + offset_s) * 1'000'000'000;
}

class SnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::temp_directory_path() / ("shoal-snap-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    fs::create_directories(base_);
    store_dir_ = (base_ / "store").string();
    src_ = (base_ / "src").string();
    Open();
  }
  void TearDown() override {
    store_.reset();
    fs::remove_all(base_);
  }
  void Open() {
    store_.reset();
    auto s = SnapshotStore::open(store_dir_);
    ASSERT_TRUE(s) << s.error().to_string();
    store_ = std::move(*s);
  }
  Result<CreateResult> Create(const std::string& project, const std::string& dir, int now_offset_s = 0) {
    return store_->create(CreateOptions{.project = project, .source_dir = dir, .now_ns = test_now_ns(now_offset_s)});
  }
  SnapshotInfo Save(const std::string& project, const std::string& dir, int now_offset_s = 0) {
    auto r = Create(project, dir, now_offset_s);
    EXPECT_TRUE(r) << r.error().to_string();
    return r ? r->snapshot : SnapshotInfo{};
  }

  // Project p saved with a (700 KB) and b (500 KB), then again without a,
  // and the first snapshot pruned: its data pack is 500 of 1,200 KB live.
  // Sets b's bytes and the remaining snapshot.
  void SaveAndPruneToAMostlyDeadPack(Prng& rng, Bytes& b, SnapshotInfo& s2) {
    fs::create_directories(src_);
    write_file(src_ + "/a", random_bytes(rng, 700000, false));
    b = random_bytes(rng, 500000, false);
    write_file(src_ + "/b", b);
    Save("p", src_, 0);
    fs::remove(src_ + "/a");
    s2 = Save("p", src_, 1);
    ASSERT_TRUE(store_->prune("p", RetentionPolicy{.keep_last = 1}));
  }
  std::string Target(const std::string& name) { return (base_ / name).string(); }
  // The chunk ids of one file in a snapshot.
  std::vector<ChunkId> ChunksOf(const SnapshotInfo& s, const std::string& path) {
    auto txn = Txn::begin_read(store_->env());
    auto commit = internal::load_commit(*txn, store_->chunks(), s.id);
    std::vector<ChunkId> out;
    internal::WalkVisitor v;
    v.entry = [&](const std::string& p, const TreeEntry& e) {
      if (p == path) out = e.chunks;
    };
    EXPECT_TRUE(internal::walk_tree(*txn, store_->chunks(), commit->tree, v));
    return out;
  }
  ChunkLocation Locate(const ChunkId& id) {
    auto txn = Txn::begin_read(store_->env());
    auto loc = store_->chunks().locate(*txn, id);
    EXPECT_TRUE(loc && *loc);
    return loc && *loc ? **loc : ChunkLocation{};
  }
  // Damages a chunk's bytes where they lie, in its pack file.
  void FlipByteOfChunk(const ChunkId& id) {
    const ChunkLocation loc = Locate(id);
    const std::string path = pack_path(store_dir_, loc.pack);
    const int fd = ::open(path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    std::uint8_t b = 0;
    const off_t at = static_cast<off_t>(loc.offset + loc.length / 2);
    ASSERT_EQ(::pread(fd, &b, 1, at), 1);
    b ^= 0x40;
    ASSERT_EQ(::pwrite(fd, &b, 1, at), 1);
    ::close(fd);
  }
  // Cuts the chunk's pack file in the middle of the chunk.
  void TruncatePackInside(const ChunkId& id) {
    const ChunkLocation loc = Locate(id);
    ASSERT_EQ(::truncate(pack_path(store_dir_, loc.pack).c_str(), loc.offset + loc.length / 2), 0);
  }
  void DeleteChunk(const ChunkId& id) {
    auto txn = Txn::begin_write(store_->env());
    ASSERT_TRUE(*txn->del(store_->chunks().table(), id));
    ASSERT_TRUE(txn->commit());
  }
  Bytes RawChunk(const ChunkId& id) {
    auto raw = store_->get_raw_chunk(id);
    EXPECT_TRUE(raw && *raw);
    return raw && *raw ? **raw : Bytes{};
  }
  // Pack files no index entry points into.
  std::size_t DeadPacks() {
    std::set<std::uint64_t> used;
    auto txn = Txn::begin_read(store_->env());
    EXPECT_TRUE(txn->scan(store_->chunks().table(), {}, [&](ByteView, ByteView v) {
      used.insert(decode_location(v)->pack);
      return true;
    }));
    std::size_t dead = 0;
    auto packs = internal::list_packs(store_dir_);
    EXPECT_TRUE(packs);
    for (const auto& p : packs.value_or(std::vector<internal::PackFileInfo>{})) dead += used.contains(p.id) ? 0 : 1;
    return dead;
  }
  std::uint64_t ChunkCount() {
    auto s = store_->stats();
    return s ? s->chunks : 0;
  }

  fs::path base_;
  std::string store_dir_;
  std::string src_;
  std::unique_ptr<SnapshotStore> store_;
};

TEST_F(SnapshotTest, RestoredTreeEqualsSavedTree) {
  for (std::uint64_t seed : {1u, 2u, 3u}) {
    const std::string src = src_ + std::to_string(seed);
    make_random_tree(src, seed);
    const SnapshotInfo s = Save("p", src);
    const std::string out = Target("out" + std::to_string(seed));
    auto r = store_->restore(s, out);
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_TRUE(r->damaged.empty());
    const auto want = describe(src);
    const auto got = describe(out);
    EXPECT_EQ(got.size(), want.size());
    for (const auto& [path, node] : want) {
      auto it = got.find(path);
      ASSERT_NE(it, got.end()) << "missing " << path;
      EXPECT_EQ(it->second.kind, node.kind) << path;
      EXPECT_EQ(it->second.mode, node.mode) << path;
      EXPECT_EQ(it->second.mtime_ns, node.mtime_ns) << path;
      EXPECT_TRUE(it->second.content == node.content) << path;
    }
  }
}

TEST_F(SnapshotTest, SameTreeGivesSameRootWhateverTheThreadCount) {
  make_random_tree(src_, 11);
  std::vector<ChunkId> trees;
  for (unsigned threads : {1u, 2u, 4u}) {
    auto r = store_->create(CreateOptions{.project = "t" + std::to_string(threads), .source_dir = src_,
                                          .now_ns = test_now_ns(), .threads = threads});
    ASSERT_TRUE(r) << r.error().to_string();
    trees.push_back(r->snapshot.commit.tree);
  }
  EXPECT_EQ(trees[0], trees[1]);
  EXPECT_EQ(trees[0], trees[2]);
}

TEST_F(SnapshotTest, InsertAtStartOfFileDedupsTheRest) {
  fs::create_directories(src_);
  Prng rng(5);
  Bytes data = random_bytes(rng, 4 << 20, false);
  write_file(src_ + "/big", data);
  const SnapshotInfo first = Save("p", src_);
  data.insert(data.begin(), {1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  write_file(src_ + "/big", data);
  const SnapshotInfo second = Save("p", src_, 1);
  EXPECT_GT(first.commit.new_bytes, 4u << 20);
  // Only the chunk around the edit (at most the 256 KiB maximum) plus manifests are new.
  EXPECT_LT(second.commit.new_bytes, 300u << 10);
  EXPECT_EQ(second.commit.parent, first.id);
}

TEST_F(SnapshotTest, SameContentInTwoProjectsIsStoredOnce) {
  make_random_tree(src_, 6);
  const SnapshotInfo a = Save("alpha", src_);
  const std::uint64_t chunks_after_a = ChunkCount();
  const SnapshotInfo b = Save("beta", src_);
  EXPECT_EQ(a.commit.tree, b.commit.tree);
  EXPECT_EQ(ChunkCount(), chunks_after_a + 1);  // Only beta's commit object.
  EXPECT_LT(b.commit.new_bytes, 200u);
}

TEST_F(SnapshotTest, NoChangeSnapshotReadsNoFileContents) {
  make_random_tree(src_, 7);
  auto first = Create("p", src_);
  ASSERT_TRUE(first);
  EXPECT_GT(first->files_read, 0u);
  auto second = Create("p", src_, 1);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->files_read, 0u);
  EXPECT_EQ(second->bytes_read, 0u);
  EXPECT_EQ(second->cache_hits, first->files_read);
  EXPECT_EQ(second->snapshot.commit.tree, first->snapshot.commit.tree);
  EXPECT_NE(second->snapshot.id, first->snapshot.id);  // A new snapshot, with its own time and parent.
}

TEST_F(SnapshotTest, ChangedFileIsReadAgainDespiteCache) {
  fs::create_directories(src_);
  write_file(src_ + "/a", Bytes(1000, 'a'));
  write_file(src_ + "/b", Bytes(1000, 'b'));
  ASSERT_TRUE(Create("p", src_));
  write_file(src_ + "/a", Bytes(1000, 'c'));  // Same size; mtime and ctime change.
  auto second = Create("p", src_, 1);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->files_read, 1u);
  auto r = store_->restore(second->snapshot, Target("out"));
  ASSERT_TRUE(r);
  EXPECT_EQ(read_file(Target("out") + "/a"), Bytes(1000, 'c'));
}

TEST_F(SnapshotTest, RacyFileIsNotCached) {
  fs::create_directories(src_);
  write_file(src_ + "/a", Bytes(10, 'a'));
  // The snapshot's time equals the file's ctime: a later same-size write in
  // the same timestamp tick would be invisible, so the file must be re-read.
  struct stat st{};
  ::stat((src_ + "/a").c_str(), &st);
  const std::int64_t ctime = st.st_ctim.tv_sec * 1'000'000'000LL + st.st_ctim.tv_nsec;
  ASSERT_TRUE(store_->create(CreateOptions{.project = "p", .source_dir = src_, .now_ns = ctime}));
  auto second = store_->create(CreateOptions{.project = "p", .source_dir = src_, .now_ns = ctime + 1});
  ASSERT_TRUE(second);
  EXPECT_EQ(second->files_read, 1u);
}

// Many small files in nested directories: a file cache of several 64 KiB blocks.
void MakeManySmallFiles(const std::string& root, int dirs, int files_per_dir) {
  for (int d = 0; d < dirs; ++d) {
    const std::string dir = root + "/d" + std::to_string(d % 5) + "/sub" + std::to_string(d);
    fs::create_directories(dir);
    for (int f = 0; f < files_per_dir; ++f) {
      const std::string text = "file " + std::to_string(d) + "/" + std::to_string(f);
      write_file(dir + "/file-with-a-long-name-" + std::to_string(f), Bytes(text.begin(), text.end()));
    }
  }
  write_file(root + "/top", Bytes(10, 't'));
}

std::string CacheFile(const std::string& store_dir, const std::string& project) {
  return store_dir + "/caches/" + project + ".cache";
}

TEST_F(SnapshotTest, FileCacheIsOneFilePerProjectOutsideLmdb) {
  make_random_tree(src_, 31);
  auto first = Create("p", src_);
  ASSERT_TRUE(first);
  EXPECT_TRUE(fs::exists(CacheFile(store_dir_, "p")));
  EXPECT_FALSE(fs::exists(CacheFile(store_dir_, "p") + ".tmp"));
  {
    auto txn = Txn::begin_read(store_->env());
    MDB_dbi dbi = 0;
    EXPECT_EQ(mdb_dbi_open(txn->raw(), "snap.file_cache", 0, &dbi), MDB_NOTFOUND);
  }
  auto second = Create("p", src_, 1);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->files_read, 0u);
  EXPECT_EQ(second->cache_hits, first->files_read);
  auto stats = store_->stats();
  ASSERT_TRUE(stats);
  EXPECT_GT(stats->cache_file_bytes, 0u);
}

TEST_F(SnapshotTest, LegacyFileCacheTablesAreDroppedAtOpen) {
  {
    auto dbi = store_->env().table("snap.file_cache");
    ASSERT_TRUE(dbi);
    auto txn = Txn::begin_write(store_->env());
    ASSERT_TRUE(txn->put(*dbi, Bytes{'p', 0, 1}, Bytes{1, 2, 3}));
    ASSERT_TRUE(txn->commit());
  }
  Open();
  auto txn = Txn::begin_read(store_->env());
  MDB_dbi dbi = 0;
  EXPECT_EQ(mdb_dbi_open(txn->raw(), "snap.file_cache", 0, &dbi), MDB_NOTFOUND);
}

// A damaged cache file costs only re-reads: a truncated file keeps the blocks
// before the cut, a flipped byte fails its block's hash, garbage or an empty
// file misses everything. The snapshot is the same each time.
TEST_F(SnapshotTest, TruncatedOrGarbageFileCacheOnlyCausesReReads) {
  MakeManySmallFiles(src_, 80, 60);  // 4,801 files: several cache blocks.
  auto first = Create("p", src_);
  ASSERT_TRUE(first);
  ASSERT_EQ(first->files_read, 4801u);
  const std::string cache = CacheFile(store_dir_, "p");
  const auto cache_size = fs::file_size(cache);
  ASSERT_GT(cache_size, 3u * 65536);
  Prng rng(5);
  int offset = 1;
  auto damage_and_save = [&](const std::function<void()>& damage, bool some_hits) {
    SCOPED_TRACE(offset);
    damage();
    auto r = Create("p", src_, offset++);
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_EQ(r->snapshot.commit.tree, first->snapshot.commit.tree);
    EXPECT_GT(r->files_read, 0u);
    EXPECT_EQ(r->files_read + r->cache_hits, 4801u);
    EXPECT_EQ(r->cache_hits > 0, some_hits);
    auto again = Create("p", src_, offset++);  // The cache was written anew.
    ASSERT_TRUE(again);
    EXPECT_EQ(again->files_read, 0u);
  };
  damage_and_save([&] { fs::resize_file(cache, fs::file_size(cache) / 2); }, true);
  damage_and_save([&] {
    Bytes b = read_file(cache);
    b[b.size() / 2] ^= 0x40;
    write_file(cache, b, 0600);
  }, true);
  damage_and_save([&] { write_file(cache, random_bytes(rng, cache_size, false), 0600); }, false);
  damage_and_save([&] { write_file(cache, {}, 0600); }, false);
  damage_and_save([&] { fs::resize_file(cache, 50); }, false);  // Inside the header.
  auto all = store_->list("p");
  auto v = store_->verify(*all);
  ASSERT_TRUE(v);
  EXPECT_TRUE(v->clean());
}

// A cache whose snapshot is gone (pruned, then gc) is not trusted wholesale:
// each hit's chunks are looked up, and a file whose chunks gc removed is read.
TEST_F(SnapshotTest, CacheOfADeletedSnapshotIsCheckedChunkByChunk) {
  fs::create_directories(src_);
  write_file(src_ + "/a", Bytes(5000, 'a'));
  write_file(src_ + "/b", Bytes(5000, 'b'));
  ASSERT_TRUE(Create("p", src_));
  const std::string cache = CacheFile(store_dir_, "p");
  const Bytes saved_cache = read_file(cache);
  ASSERT_TRUE(store_->forget_project("p"));
  EXPECT_FALSE(fs::exists(cache));
  ASSERT_TRUE(store_->gc());
  EXPECT_EQ(ChunkCount(), 0u);
  // b's bytes come back through another project; a's do not.
  const std::string other = Target("other");
  fs::create_directories(other);
  write_file(other + "/b", Bytes(5000, 'b'));
  ASSERT_TRUE(Create("q", other));
  write_file(cache, saved_cache, 0600);
  auto r = Create("p", src_, 1);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->files_read, 1u);  // a: its chunk is gone.
  EXPECT_EQ(r->cache_hits, 1u);  // b: its chunk is present.
  auto v = store_->verify({r->snapshot});
  ASSERT_TRUE(v);
  EXPECT_TRUE(v->clean());
  ASSERT_TRUE(store_->restore(r->snapshot, Target("out")));
  EXPECT_EQ(read_file(Target("out") + "/a"), Bytes(5000, 'a'));
}

TEST_F(SnapshotTest, GcRemovesCachesOfProjectsWithoutSnapshotsAndLeftoverTemporaries) {
  make_random_tree(src_, 32, 10);
  ASSERT_TRUE(Create("keep", src_));
  write_file(CacheFile(store_dir_, "gone"), Bytes(100, 1), 0600);
  write_file(CacheFile(store_dir_, "keep") + ".tmp", Bytes(100, 2), 0600);
  ASSERT_TRUE(store_->gc());
  EXPECT_TRUE(fs::exists(CacheFile(store_dir_, "keep")));
  EXPECT_FALSE(fs::exists(CacheFile(store_dir_, "gone")));
  EXPECT_FALSE(fs::exists(CacheFile(store_dir_, "keep") + ".tmp"));
}

TEST_F(SnapshotTest, SecondSaveOfSameProjectIsRefusedAtOnce) {
  make_random_tree(src_, 8, 20);
  bool checked = false;
  auto r = store_->create(CreateOptions{
      .project = "p", .source_dir = src_, .now_ns = test_now_ns(),
      .progress = [&](const Progress&) {
        if (checked) return;
        checked = true;
        auto second = store_->create(CreateOptions{.project = "p", .source_dir = src_, .now_ns = test_now_ns()});
        ASSERT_FALSE(second);
        EXPECT_EQ(second.error().code, Code::kFailedPrecondition);
        EXPECT_NE(second.error().message.find("save in progress"), std::string::npos);
        // The lock is a flock: another process sees it too.
        const pid_t child = ::fork();
        if (child == 0) {
          auto fd = internal::lock_file(store_dir_, "p.save", true, false);
          ::_exit(!fd && fd.error().code == Code::kUnavailable ? 0 : 1);
        }
        int status = 0;
        ::waitpid(child, &status, 0);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
      }});
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(checked);
  // Once the first save is done, the lock is free again.
  EXPECT_TRUE(Create("p", src_, 1));
}

TEST_F(SnapshotTest, VerifyNamesFilesOfCorruptAndMissingChunks) {
  fs::create_directories(src_ + "/sub");
  Prng rng(9);
  write_file(src_ + "/sub/corrupt_me", random_bytes(rng, 100000, false));
  write_file(src_ + "/missing_me", random_bytes(rng, 50000, true));
  write_file(src_ + "/fine", random_bytes(rng, 70000, false));
  const SnapshotInfo s = Save("p", src_);
  auto clean = store_->verify({s});
  ASSERT_TRUE(clean);
  EXPECT_TRUE(clean->clean());

  const ChunkId bad = ChunksOf(s, "sub/corrupt_me").at(0);
  FlipByteOfChunk(bad);
  const ChunkId gone = ChunksOf(s, "missing_me").at(0);
  DeleteChunk(gone);

  auto r = store_->verify({s});
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->clean());
  ASSERT_EQ(r->snapshots.size(), 1u);
  const auto& damage = r->snapshots[0].damage;
  ASSERT_EQ(damage.size(), 2u);
  std::map<std::string, Damage> by_path;
  for (const auto& d : damage) by_path[d.path] = d;
  ASSERT_TRUE(by_path.contains("sub/corrupt_me"));
  EXPECT_EQ(by_path["sub/corrupt_me"].chunk, bad);
  EXPECT_TRUE(by_path["sub/corrupt_me"].problem.starts_with("corrupt"));
  ASSERT_TRUE(by_path.contains("missing_me"));
  EXPECT_EQ(by_path["missing_me"].chunk, gone);
  EXPECT_EQ(by_path["missing_me"].problem, "missing");
}

// A pack file cut short (a crash of the file system, a bad copy): the chunks
// past the cut are damaged, verify names their files, restore leaves exactly
// those files out. Files are read in name order and directory listings go to
// a pack of their own, so "z_bad" (one chunk: below the minimum chunk size)
// is the last chunk of the data pack.
TEST_F(SnapshotTest, TruncatedPackIsCorruptionAndRestoreKeepsTheRest) {
  fs::create_directories(src_ + "/d");
  Prng rng(10);
  const Bytes good = random_bytes(rng, 80000, true);
  write_file(src_ + "/a_good", good);
  write_file(src_ + "/z_bad", random_bytes(rng, 10000, false));
  const SnapshotInfo s = Save("p", src_);
  const ChunkId id = ChunksOf(s, "z_bad").at(0);
  ASSERT_NE(Locate(id).pack, Locate(s.commit.tree).pack);
  // Chunks are hashed and compressed by two threads, so whether a chunk of
  // "a_good" was appended after "z_bad" varies from run to run: the files
  // damaged are exactly those with a chunk at or past the cut.
  const ChunkLocation cut = Locate(id);
  std::set<std::string> past_cut{"z_bad"};
  for (const ChunkId& c : ChunksOf(s, "a_good")) {
    const ChunkLocation l = Locate(c);
    if (l.pack == cut.pack && l.offset >= cut.offset) past_cut.insert("a_good");
  }
  TruncatePackInside(id);

  auto txn = Txn::begin_read(store_->env());
  auto got = store_->chunks().get(*txn, id);
  txn->abort();
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, Code::kCorruption);
  EXPECT_NE(got.error().message.find("truncated"), std::string::npos) << got.error().message;

  auto r = store_->restore(s, Target("out"));
  ASSERT_TRUE(r) << r.error().to_string();
  std::set<std::string> damaged;
  for (const auto& d : r->damaged) damaged.insert(d.path);
  EXPECT_EQ(damaged, past_cut);
  EXPECT_FALSE(fs::exists(Target("out") + "/z_bad"));  // No file with wrong contents.
  if (!past_cut.contains("a_good")) {
    EXPECT_EQ(read_file(Target("out") + "/a_good"), good);
  }
  EXPECT_TRUE(fs::is_directory(Target("out") + "/d"));
  // The store itself lost nothing else.
  auto v = store_->verify({s});
  ASSERT_TRUE(v);
  std::set<std::string> verified_damage;
  bool names_the_cut_chunk = false;
  for (const auto& d : v->snapshots[0].damage) {
    verified_damage.insert(d.path);
    names_the_cut_chunk = names_the_cut_chunk || (d.path == "z_bad" && d.chunk == id);
  }
  EXPECT_EQ(verified_damage, past_cut);
  EXPECT_TRUE(names_the_cut_chunk);
  EXPECT_EQ(v->snapshots[0].snapshot.id, s.id);
}

// A pack file deleted outright: every file with a chunk in it is reported.
TEST_F(SnapshotTest, MissingPackNamesItsFiles) {
  fs::create_directories(src_);
  Prng rng(11);
  write_file(src_ + "/a", random_bytes(rng, 10000, false));
  const SnapshotInfo first = Save("p", src_);
  write_file(src_ + "/b", random_bytes(rng, 10000, false));
  const SnapshotInfo second = Save("p", src_, 1);
  const ChunkId b = ChunksOf(second, "b").at(0);
  ASSERT_NE(Locate(b).pack, Locate(ChunksOf(first, "a").at(0)).pack);
  ASSERT_EQ(::unlink(pack_path(store_dir_, Locate(b).pack).c_str()), 0);
  auto v = store_->verify({first, second});
  ASSERT_TRUE(v);
  EXPECT_TRUE(v->snapshots[0].damage.empty());
  ASSERT_EQ(v->snapshots[1].damage.size(), 1u);
  EXPECT_EQ(v->snapshots[1].damage[0].path, "b");
  EXPECT_NE(v->snapshots[1].damage[0].problem.find("missing"), std::string::npos) << v->snapshots[1].damage[0].problem;
}

TEST_F(SnapshotTest, RestoreRefusesNonEmptyTargetUnlessForced) {
  make_random_tree(src_, 12, 10);
  const SnapshotInfo s = Save("p", src_);
  const std::string out = Target("out");
  fs::create_directories(out);
  write_file(out + "/precious", Bytes(5, 'x'));
  auto r = store_->restore(s, out);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kFailedPrecondition);
  EXPECT_NE(r.error().message.find("--force"), std::string::npos);
  EXPECT_EQ(read_file(out + "/precious"), Bytes(5, 'x'));
  EXPECT_EQ(describe(out).size(), 1u);
  auto forced = store_->restore(s, out, RestoreOptions{.force = true});
  ASSERT_TRUE(forced) << forced.error().to_string();
  auto want = describe(src_);
  want["precious"] = describe(out)["precious"];
  EXPECT_EQ(describe(out), want);
}

TEST_F(SnapshotTest, LiveQuotaRefusalNamesProjectLimitAndUsageAndTouchesNothing) {
  make_random_tree(src_, 13, 20);
  const SnapshotInfo first = Save("p", src_);
  ASSERT_TRUE(store_->set_quota("p", Quota{.live_bytes_max = 1000, .stored_bytes_max = 0}));
  const std::uint64_t chunks_before = ChunkCount();
  auto r = Create("p", src_, 1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kResourceExhausted);
  EXPECT_NE(r.error().message.find("'p'"), std::string::npos);
  EXPECT_NE(r.error().message.find("1000 B"), std::string::npos);
  EXPECT_NE(r.error().message.find(std::to_string(first.commit.logical_bytes)), std::string::npos);
  EXPECT_NE(r.error().message.find("quota set"), std::string::npos);
  EXPECT_EQ(ChunkCount(), chunks_before);
  auto list = store_->list("p");
  ASSERT_TRUE(list);
  EXPECT_EQ(list->size(), 1u);
  auto v = store_->verify(*list);
  ASSERT_TRUE(v);
  EXPECT_TRUE(v->clean());
}

TEST_F(SnapshotTest, StoredQuotaRefusalLeavesExistingSnapshots) {
  make_random_tree(src_, 14, 20);
  const SnapshotInfo first = Save("p", src_);
  ASSERT_TRUE(store_->set_quota("p", Quota{.live_bytes_max = 0, .stored_bytes_max = first.commit.new_bytes + 100}));
  write_file(src_ + "/new_big", random_bytes(*std::make_unique<Prng>(1).get(), 200000, false));
  auto r = Create("p", src_, 1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, Code::kResourceExhausted);
  EXPECT_NE(r.error().message.find("stored-size limit"), std::string::npos);
  auto list = store_->list("p");
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ(list->at(0).id, first.id);
  auto v = store_->verify(*list);
  ASSERT_TRUE(v && v->clean());
  // The refused save's chunks are orphans; gc takes them and nothing else.
  auto gc = store_->gc();
  ASSERT_TRUE(gc);
  EXPECT_GT(gc->chunks_removed, 0u);
  v = store_->verify(*list);
  ASSERT_TRUE(v && v->clean());
}

TEST_F(SnapshotTest, PruneKeepsTheRightSnapshots) {
  fs::create_directories(src_);
  write_file(src_ + "/f", Bytes(10, 'f'));
  std::vector<SnapshotInfo> saved;
  const std::int64_t hour = 3600LL * 1'000'000'000;
  const std::int64_t t0 = test_now_ns();
  for (int i = 0; i < 6; ++i) {  // Two per hour over three hours.
    auto r = store_->create(CreateOptions{.project = "p", .source_dir = src_, .now_ns = t0 + i * hour / 2});
    ASSERT_TRUE(r);
    saved.push_back(r->snapshot);
  }
  auto dry = store_->prune("p", RetentionPolicy{.keep_last = 1, .keep_hourly = 2}, /*dry_run=*/true);
  ASSERT_TRUE(dry);
  EXPECT_EQ(store_->list("p")->size(), 6u);
  auto r = store_->prune("p", RetentionPolicy{.keep_last = 1, .keep_hourly = 2});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->removed.size(), dry->removed.size());
  auto left = store_->list("p");
  ASSERT_TRUE(left);
  std::vector<ChunkId> ids;
  for (const auto& s : *left) ids.push_back(s.id);
  // t0 may fall anywhere in an hour, so compute the expectation the same way the rule reads.
  std::vector<std::int64_t> times;
  for (const auto& s : saved) times.push_back(s.commit.time_ns);
  const auto keep = select_kept(times, RetentionPolicy{.keep_last = 1, .keep_hourly = 2});
  std::vector<ChunkId> want;
  for (std::size_t i = 0; i < saved.size(); ++i)
    if (keep[i]) want.push_back(saved[i].id);
  EXPECT_EQ(ids, want);
  EXPECT_GE(want.size(), 2u);
  EXPECT_LE(want.size(), 3u);
  EXPECT_EQ(ids.back(), saved.back().id);
  auto empty = store_->prune("p", RetentionPolicy{});
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, Code::kInvalidArgument);
}

TEST_F(SnapshotTest, GcRemovesOnlyUnreferencedChunks) {
  fs::create_directories(src_);
  Prng rng(15);
  write_file(src_ + "/keep", random_bytes(rng, 300000, false));
  write_file(src_ + "/drop", random_bytes(rng, 300000, false));
  const SnapshotInfo old = Save("p", src_);
  const std::vector<ChunkId> dropped = ChunksOf(old, "drop");
  fs::remove(src_ + "/drop");
  const SnapshotInfo now = Save("p", src_, 1);
  const SnapshotInfo other = Save("q", src_, 2);
  ASSERT_TRUE(store_->put_raw_chunk(chunk_id_of(as_bytes("orphan")), encode_chunk(as_bytes("orphan"), 0)));

  auto nothing = store_->gc();
  ASSERT_TRUE(nothing);
  EXPECT_EQ(nothing->chunks_removed, 1u);  // Just the orphan.
  ASSERT_TRUE(store_->prune("p", RetentionPolicy{.keep_last = 1}));
  auto gc = store_->gc();
  ASSERT_TRUE(gc) << gc.error().to_string();
  auto txn = Txn::begin_read(store_->env());
  for (const auto& id : dropped) EXPECT_FALSE(*store_->chunks().contains(*txn, id));
  EXPECT_FALSE(*store_->chunks().contains(*txn, old.id));
  txn->abort();
  auto v = store_->verify({now, other});
  ASSERT_TRUE(v);
  EXPECT_TRUE(v->clean());
  auto s = store_->stats();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->unreferenced_chunks, 0u);
}

// gc marks without a lock: a save of another project runs to completion while
// gc is marking (it would deadlock here if gc held the gc lock), and that save
// reuses chunks that were unreferenced when gc marked them; gc must keep them.
TEST_F(SnapshotTest, SaveOfAnotherProjectRunsWhileGcMarksAndItsChunksSurvive) {
  fs::create_directories(src_);
  Prng rng(30);
  const Bytes old_data = random_bytes(rng, 300000, false);
  write_file(src_ + "/f", old_data);
  Save("a", src_, 0);
  write_file(src_ + "/f", random_bytes(rng, 300000, false));
  Save("a", src_, 1);
  ASSERT_TRUE(store_->prune("a", RetentionPolicy{.keep_last = 1}));  // old_data's chunks are now unreferenced.
  const std::string other = Target("other");
  fs::create_directories(other);
  write_file(other + "/same_as_pruned", old_data);
  write_file(other + "/new", random_bytes(rng, 100000, false));
  std::optional<SnapshotInfo> during;
  store_->set_fault_hook([&](std::string_view point) {
    if (point == "gc_marked" && !during) {
      auto r = Create("b", other, 2);
      ASSERT_TRUE(r) << r.error().to_string();
      during = r->snapshot;
    }
  });
  auto gc = store_->gc();
  store_->set_fault_hook(nullptr);
  ASSERT_TRUE(gc) << gc.error().to_string();
  ASSERT_TRUE(during.has_value());
  EXPECT_FALSE(gc->waited_for_saves);
  auto all = store_->list();
  ASSERT_TRUE(all);
  auto v = store_->verify(*all);
  ASSERT_TRUE(v && v->clean());  // b's snapshot (and old_data's chunks it reuses) survived.
  auto out = store_->restore(*during, Target("out"));
  ASSERT_TRUE(out);
  EXPECT_EQ(read_file(Target("out") + "/same_as_pruned"), old_data);
  auto again = store_->gc();  // Nothing left to collect: the first gc removed everything it could.
  ASSERT_TRUE(again);
  EXPECT_EQ(again->chunks_removed, 0u);
  EXPECT_EQ(store_->stats()->unreferenced_chunks, 0u);
}

TEST_F(SnapshotTest, ForgetProjectRemovesOnlyThatProjectAndGcFreesItsChunks) {
  fs::create_directories(src_);
  Prng rng(17);
  write_file(src_ + "/a", random_bytes(rng, 200000, false));
  const SnapshotInfo p1 = Save("p", src_);
  write_file(src_ + "/b", random_bytes(rng, 200000, false));
  const SnapshotInfo p2 = Save("p", src_, 1);
  const SnapshotInfo q = Save("q", src_, 2);
  auto forgot = store_->forget_project("p");
  ASSERT_TRUE(forgot) << forgot.error().to_string();
  EXPECT_EQ(forgot->removed.size(), 2u);
  EXPECT_TRUE(store_->list("p")->empty());
  ASSERT_EQ(store_->list("q")->size(), 1u);
  ASSERT_TRUE(store_->gc());
  auto txn = Txn::begin_read(store_->env());
  EXPECT_FALSE(*store_->chunks().contains(*txn, p1.id));
  EXPECT_FALSE(*store_->chunks().contains(*txn, p2.id));
  txn->abort();
  auto v = store_->verify({q});
  ASSERT_TRUE(v);
  EXPECT_TRUE(v->clean());  // q shares the file chunks and keeps them.
}

TEST_F(SnapshotTest, GcRefusesWhenAManifestIsUnreadable) {
  make_random_tree(src_, 16, 10);
  const SnapshotInfo s = Save("p", src_);
  ASSERT_TRUE(store_->put_raw_chunk(chunk_id_of(as_bytes("orphan")), encode_chunk(as_bytes("orphan"), 0)));
  DeleteChunk(s.commit.tree);
  const std::uint64_t before = ChunkCount();
  auto gc = store_->gc();
  ASSERT_FALSE(gc);
  EXPECT_EQ(gc.error().code, Code::kFailedPrecondition);
  EXPECT_EQ(ChunkCount(), before);  // No deletion on doubt.
}

TEST_F(SnapshotTest, DiffListsAddedRemovedAndChangedPaths) {
  fs::create_directories(src_ + "/d");
  write_file(src_ + "/same", Bytes(10, 's'));
  write_file(src_ + "/changed", Bytes(10, 'c'));
  write_file(src_ + "/gone", Bytes(10, 'g'));
  write_file(src_ + "/d/inner", Bytes(10, 'i'));
  const SnapshotInfo a = Save("p", src_);
  write_file(src_ + "/changed", Bytes(11, 'c'));
  fs::remove(src_ + "/gone");
  fs::create_directories(src_ + "/newdir");
  write_file(src_ + "/newdir/x", Bytes(1, 'x'));
  testing::set_mtime(src_ + "/d", 1600000000, 0);
  const SnapshotInfo b = Save("p", src_, 1);
  auto d = store_->diff(a, b);
  ASSERT_TRUE(d);
  std::vector<std::string> lines;
  for (const auto& e : *d) lines.push_back(std::string(1, e.change) + " " + e.path);
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(lines, (std::vector<std::string>{"+ newdir/", "+ newdir/x", "- gone", "M changed", "m d/"}));
}

TEST_F(SnapshotTest, FindResolvesPrefixAndLatest) {
  make_random_tree(src_, 17, 5);
  const SnapshotInfo a = Save("p", src_);
  const SnapshotInfo b = Save("p", src_, 1);
  EXPECT_EQ(store_->find(to_hex(a.id).substr(0, 10))->id, a.id);
  EXPECT_EQ(store_->find("latest", std::string("p"))->id, b.id);
  EXPECT_EQ(store_->find("latest").error().code, Code::kInvalidArgument);
  EXPECT_EQ(store_->find("zzzzzz").error().code, Code::kInvalidArgument);
  EXPECT_EQ(store_->find("000000000000").error().code, Code::kNotFound);
}

TEST_F(SnapshotTest, TransferApiCopiesASnapshotBetweenStores) {
  make_random_tree(src_, 18, 30);
  const SnapshotInfo s = Save("p", src_);
  auto other = SnapshotStore::open((base_ / "other").string());
  ASSERT_TRUE(other);
  auto fence = (*other)->hold_gc();
  ASSERT_TRUE(fence);
  for (int round = 0; round < 100; ++round) {
    auto lacking = (*other)->lacking(s.id);
    ASSERT_TRUE(lacking);
    if (lacking->empty()) break;
    for (const auto& id : *lacking) {
      auto raw = store_->get_raw_chunk(id);
      ASSERT_TRUE(raw && *raw);
      ASSERT_TRUE((*other)->put_raw_chunk(id, **raw));
    }
  }
  // A chunk that does not match its id is refused.
  auto bad = (*other)->put_raw_chunk(chunk_id_of(as_bytes("x")), encode_chunk(as_bytes("y"), 0));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Code::kCorruption);
  auto committed = (*other)->commit_received(s.id);
  ASSERT_TRUE(committed) << committed.error().to_string();
  EXPECT_EQ(committed->commit, s.commit);
  auto r = (*other)->restore(s, Target("out"));
  ASSERT_TRUE(r);
  EXPECT_EQ(describe(Target("out")), describe(src_));
}

TEST_F(SnapshotTest, SpecialFilesAndVanishedEntriesAreReportedNotFatal) {
  fs::create_directories(src_);
  write_file(src_ + "/ok", Bytes(3, 'o'));
  ASSERT_EQ(::mkfifo((src_ + "/fifo").c_str(), 0600), 0);
  auto r = Create("p", src_);
  ASSERT_TRUE(r) << r.error().to_string();
  ASSERT_EQ(r->warnings.size(), 1u);
  EXPECT_NE(r->warnings[0].find("fifo"), std::string::npos);
  EXPECT_EQ(r->snapshot.commit.files, 1u);
}

TEST_F(SnapshotTest, SparseFileRestoresSparse) {
  fs::create_directories(src_);
  const std::string path = src_ + "/sparse";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_EQ(::ftruncate(fd, 64 << 20), 0);
  ASSERT_EQ(::pwrite(fd, "end", 3, (64 << 20) - 3), 3);
  ::close(fd);
  const SnapshotInfo s = Save("p", src_);
  EXPECT_LT(s.commit.new_bytes, 64u << 10);  // 64 MiB of zeros: a few compressed chunks.
  auto r = store_->restore(s, Target("out"));
  ASSERT_TRUE(r);
  struct stat st{};
  ASSERT_EQ(::stat((Target("out") + "/sparse").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 64 << 20);
  EXPECT_LT(st.st_blocks * 512, 4 << 20);  // Holes were kept.
  EXPECT_EQ(read_file(Target("out") + "/sparse"), read_file(path));
}

// 20,000 here: creating, saving, restoring and checking 100,000 files takes
// 60-90 s on the shared 2-core test machine (creating 100,000 empty files
// alone takes ~20 s of system time there). The 100,000-file case runs
// through the CLI in `bench/storage/run.sh bad-input` (docs/benchmarks.md).
TEST_F(SnapshotTest, ManyFilesInOneDirectory) {
  constexpr int kFiles = 20000;
  fs::create_directories(src_);
  for (int i = 0; i < kFiles; ++i) {
    const int fd = ::open((src_ + "/" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 0);
    if (i % 1000 == 0) {
      ASSERT_EQ(::write(fd, "x", 1), 1);
    }
    ::close(fd);
  }
  const SnapshotInfo s = Save("p", src_);
  EXPECT_EQ(s.commit.files, static_cast<std::uint64_t>(kFiles));
  auto r = store_->restore(s, Target("out"));
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->files, static_cast<std::uint64_t>(kFiles));
  // Exactly the same names, sizes, modes and mtimes (lstat), and the same
  // bytes in the non-empty files (describe() would open every file twice).
  auto listing = [](const std::string& dir) {
    std::map<std::string, std::tuple<off_t, mode_t, std::int64_t>> out;
    for (const auto& e : fs::directory_iterator(dir)) {
      struct stat st{};
      ::lstat(e.path().c_str(), &st);
      out[e.path().filename().string()] = {st.st_size, st.st_mode, st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec};
    }
    return out;
  };
  const auto want = listing(src_);
  ASSERT_EQ(want.size(), static_cast<std::size_t>(kFiles));
  EXPECT_TRUE(listing(Target("out")) == want);
  for (const auto& [name, meta] : want) {
    if (std::get<0>(meta) != 0) {
      EXPECT_EQ(read_file(Target("out") + "/" + name), read_file(src_ + "/" + name)) << name;
    }
  }
}

TEST_F(SnapshotTest, DeepTreeRoundTrips) {
  std::string dir = src_;
  for (int i = 0; i < 300; ++i) dir += "/d" + std::to_string(i % 10);
  fs::create_directories(dir);
  write_file(dir + "/leaf", Bytes(7, 'l'));
  const SnapshotInfo s = Save("p", src_);
  EXPECT_EQ(s.commit.dirs, 300u);
  auto r = store_->restore(s, Target("out"));
  ASSERT_TRUE(r) << r.error().to_string();
  std::string out = Target("out");
  for (int i = 0; i < 300; ++i) out += "/d" + std::to_string(i % 10);
  EXPECT_EQ(read_file(out + "/leaf"), Bytes(7, 'l'));
  EXPECT_TRUE(describe(Target("out")) == describe(src_));
  auto v = store_->verify({s});
  ASSERT_TRUE(v && v->clean());
}

TEST_F(SnapshotTest, FileVanishingDuringSaveIsReportedAndSkipped) {
  fs::create_directories(src_);
  write_file(src_ + "/a_first", Bytes(10, 'a'));
  write_file(src_ + "/z_vanishes", Bytes(10, 'z'));
  auto r = store_->create(CreateOptions{.project = "p", .source_dir = src_, .now_ns = test_now_ns(),
                                        .progress = [&](const Progress&) { fs::remove(src_ + "/z_vanishes"); }});
  ASSERT_TRUE(r) << r.error().to_string();
  ASSERT_EQ(r->warnings.size(), 1u) << r->snapshot.commit.files << " read=" << r->files_read << " hits=" << r->cache_hits;
  EXPECT_NE(r->warnings[0].find("z_vanishes: vanished"), std::string::npos);
  EXPECT_EQ(r->snapshot.commit.files, 1u);
  auto v = store_->verify({r->snapshot});
  ASSERT_TRUE(v && v->clean());
}

TEST_F(SnapshotTest, FileGrowingDuringSaveIsSavedAsReadAndNotCached) {
  fs::create_directories(src_);
  write_file(src_ + "/a_first", Bytes(10, 'a'));
  write_file(src_ + "/z_grows", Bytes(10, 'z'));
  auto r = store_->create(CreateOptions{.project = "p", .source_dir = src_, .now_ns = test_now_ns(),
                                        .progress = [&](const Progress& p) {
                                          if (p.files_done == 1) write_file(src_ + "/z_grows", Bytes(20, 'z'));
                                        }});
  ASSERT_TRUE(r) << r.error().to_string();
  ASSERT_EQ(r->warnings.size(), 1u);
  EXPECT_NE(r->warnings[0].find("changed while being saved"), std::string::npos);
  auto again = Create("p", src_, 1);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->files_read, 1u);  // Re-read: its first save was not trusted.
  auto out = store_->restore(again->snapshot, Target("out"));
  ASSERT_TRUE(out);
  EXPECT_EQ(read_file(Target("out") + "/z_grows"), Bytes(20, 'z'));
}

TEST_F(SnapshotTest, FullStoreRefusesSaveAndStaysConsistent) {
  make_random_tree(src_, 21, 10);
  const SnapshotInfo first = Save("p", src_);
  store_.reset();
  // A map too small for the next save's index entries stands in for a full
  // disk: LMDB reports MDB_MAP_FULL exactly where a write would get ENOSPC.
  // (Chunk bytes go to pack files; thousands of small files fill the index.)
  struct stat st{};
  ASSERT_EQ(::stat((store_dir_ + "/data.mdb").c_str(), &st), 0);
  {
    auto small = SnapshotStore::open(store_dir_, StoreOptions{.map_size_bytes = static_cast<std::size_t>(st.st_size) + (128 << 10)});
    ASSERT_TRUE(small);
    const std::string big = (base_ / "big").string();
    fs::create_directories(big);
    Prng rng(22);
    for (int i = 0; i < 6000; ++i) write_file(big + "/f" + std::to_string(i), random_bytes(rng, 100, false));
    auto r = (*small)->create(CreateOptions{.project = "p", .source_dir = big, .now_ns = test_now_ns(1)});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, Code::kResourceExhausted);
  }
  Open();
  auto list = store_->list("p");
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ(list->at(0).id, first.id);
  auto v = store_->verify(*list);
  ASSERT_TRUE(v && v->clean());
  EXPECT_TRUE(Create("p", src_, 2));  // The save lock was released.
}

// Packs whose chunks all died are deleted, mostly-dead ones rewritten (their
// live chunks copied, entries re-pointed), the others get holes punched over
// their garbage; every snapshot left still verifies and restores.
// The CLI and an agent, or two agents' saves, write one store from separate
// processes: each save appends to its own pack (one writer per file), chunks
// both add race only in the index, and both snapshots come out complete.
TEST_F(SnapshotTest, TwoProcessesSaveDifferentProjectsAtOnce) {
  Prng rng(42);
  const Bytes shared = random_bytes(rng, 2 << 20, false);
  for (const char* p : {"a", "b"}) {
    const std::string dir = Target(std::string("src_") + p);
    fs::create_directories(dir);
    write_file(dir + "/shared", shared);  // New to the store in both saves at once.
    write_file(dir + "/own", random_bytes(rng, 1 << 20, false));
    make_random_tree(dir + "/tree", p[0] == 'a' ? 43 : 44, 20);
  }
  store_.reset();
  std::vector<pid_t> children;
  for (const char* p : {"a", "b"}) {
    const pid_t child = ::fork();
    if (child == 0) {
      auto s = SnapshotStore::open(store_dir_);
      if (!s) ::_exit(3);
      auto r = (*s)->create(CreateOptions{.project = p, .source_dir = Target(std::string("src_") + p), .now_ns = test_now_ns()});
      ::_exit(r ? 0 : 4);
    }
    children.push_back(child);
  }
  for (pid_t c : children) {
    int status = 0;
    ::waitpid(c, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  Open();
  auto all = store_->list();
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u);
  auto v = store_->verify(*all);
  ASSERT_TRUE(v && v->clean());
  for (const auto& snap : *all) {
    const std::string out = Target("out_" + snap.commit.project);
    auto r = store_->restore(snap, out);
    ASSERT_TRUE(r && r->damaged.empty());
    EXPECT_EQ(describe(out), describe(Target("src_" + snap.commit.project)));
  }
  auto gc = store_->gc();
  ASSERT_TRUE(gc);
  EXPECT_EQ(gc->chunks_removed, 0u);
  EXPECT_EQ(DeadPacks(), 0u);
  v = store_->verify(*all);
  ASSERT_TRUE(v && v->clean());
}

TEST_F(SnapshotTest, GcDeletesDeadPacksRewritesMostlyDeadOnesAndPunchesHoles) {
  Prng rng(40);
  Bytes b;
  SnapshotInfo s2;
  ASSERT_NO_FATAL_FAILURE(SaveAndPruneToAMostlyDeadPack(rng, b, s2));
  const ChunkLocation before = Locate(ChunksOf(s2, "b").at(0));
  auto gc = store_->gc();
  ASSERT_TRUE(gc) << gc.error().to_string();
  EXPECT_GE(gc->packs_deleted, 1u);  // s1's listings.
  EXPECT_EQ(gc->packs_rewritten, 1u);  // s1's data: 500 of 1,200 KB live.
  EXPECT_GE(gc->bytes_copied, 500000u);
  EXPECT_GT(gc->bytes_reclaimed, 600000u);
  EXPECT_NE(Locate(ChunksOf(s2, "b").at(0)).pack, before.pack);
  EXPECT_FALSE(fs::exists(pack_path(store_dir_, before.pack)));
  auto v = store_->verify({s2});
  ASSERT_TRUE(v && v->clean());

  // Mostly live: 300 KB dead before 1 MB live -> a hole, no copy.
  const std::string src2 = Target("src2");
  fs::create_directories(src2);
  write_file(src2 + "/c", random_bytes(rng, 300000, false));
  const Bytes d = random_bytes(rng, 1000000, false);
  write_file(src2 + "/d", d);
  Save("q", src2, 2);
  fs::remove(src2 + "/c");
  const SnapshotInfo q2 = Save("q", src2, 3);
  ASSERT_TRUE(store_->prune("q", RetentionPolicy{.keep_last = 1}));
  const auto stats_before = store_->stats();
  ASSERT_TRUE(stats_before);
  gc = store_->gc();
  ASSERT_TRUE(gc) << gc.error().to_string();
  EXPECT_EQ(gc->packs_rewritten, 0u);
  EXPECT_EQ(gc->bytes_copied, 0u);
  const auto stats_after = store_->stats();
  ASSERT_TRUE(stats_after);
  EXPECT_EQ(stats_after->unreferenced_chunks, 0u);
  // ext4, xfs, btrfs and tmpfs punch holes; elsewhere the garbage waits for a rewrite.
  std::printf("pack bytes allocated before %llu, after %llu\n",
              static_cast<unsigned long long>(stats_before->pack_file_bytes),
              static_cast<unsigned long long>(stats_after->pack_file_bytes));
  v = store_->verify({s2, q2});
  ASSERT_TRUE(v && v->clean());
  auto out = store_->restore(q2, Target("out"));
  ASSERT_TRUE(out);
  EXPECT_EQ(read_file(Target("out") + "/d"), d);
  auto out2 = store_->restore(s2, Target("out2"));
  ASSERT_TRUE(out2);
  EXPECT_EQ(read_file(Target("out2") + "/b"), b);
}

// Runs `body` in a forked child (never sharing the LMDB environment across
// fork) and returns what it returns: "" for success, "SKIP: why" to skip, any
// other text is a failure. With `drop_root`, a child running as root first
// becomes nobody (65534), so permission checks apply to it.
std::string InChild(const std::function<std::string()>& body, bool drop_root = false) {
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(fds[0]);
    std::string out;
    if (drop_root && ::geteuid() == 0 &&
        (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)) {
      out = std::string("SKIP: running as root and cannot switch to uid 65534 (") + std::strerror(errno) + ")";
    } else {
      out = body();
    }
    (void)!::write(fds[1], out.data(), out.size());
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "child died, status " + std::to_string(status) + ": " + out;
  return out;
}

// chmod 000 stops everyone but root; as root the save runs in a child that
// has become nobody, so the test means the same thing in CI containers.
TEST_F(SnapshotTest, UnreadableFileAndDirectoryAreReportedAndTheRestSaved) {
  fs::create_directories(src_ + "/c_closed_dir");
  write_file(src_ + "/a_ok", Bytes(100, 'a'));
  write_file(src_ + "/b_secret", Bytes(100, 'b'), 0000);
  write_file(src_ + "/c_closed_dir/inner", Bytes(5, 'c'));
  write_file(src_ + "/d_ok", Bytes(100, 'd'));
  ASSERT_EQ(::chmod((src_ + "/c_closed_dir").c_str(), 0000), 0);
  store_.reset();
  if (::geteuid() == 0) {
    for (const auto& root : {src_, store_dir_}) {
      ASSERT_EQ(::lchown(root.c_str(), 65534, 65534), 0);
      for (const auto& e : fs::recursive_directory_iterator(root)) ASSERT_EQ(::lchown(e.path().c_str(), 65534, 65534), 0);
    }
  }
  const std::string out = InChild(
      [&]() -> std::string {
        auto store = SnapshotStore::open(store_dir_);
        if (!store) return "open: " + store.error().to_string();
        auto r = (*store)->create(CreateOptions{.project = "p", .source_dir = src_, .now_ns = test_now_ns()});
        if (!r) return "create: " + r.error().to_string();
        std::string w;
        for (const auto& x : r->warnings) w += "W:" + x + "\n";
        return w;
      },
      /*drop_root=*/true);
  if (out.starts_with("SKIP")) GTEST_SKIP() << out;
  EXPECT_NE(out.find("W:b_secret: not readable (Permission denied), skipped"), std::string::npos) << out;
  EXPECT_NE(out.find("W:c_closed_dir: directory not readable (Permission denied), saved empty"), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2) << out;  // Exactly one warning per unreadable path.
  Open();
  auto list = store_->list("p");
  ASSERT_TRUE(list && list->size() == 1u);
  EXPECT_EQ(list->at(0).commit.files, 2u);
  auto v = store_->verify(*list);
  ASSERT_TRUE(v && v->clean());
  auto r = store_->restore(list->at(0), Target("out"));
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(read_file(Target("out") + "/a_ok"), Bytes(100, 'a'));
  EXPECT_EQ(read_file(Target("out") + "/d_ok"), Bytes(100, 'd'));
  EXPECT_FALSE(fs::exists(Target("out") + "/b_secret"));
  EXPECT_TRUE(fs::is_directory(Target("out") + "/c_closed_dir"));
}

// A regular file at scan time that is a fifo when it is read (root cannot be
// kept out by modes, but this makes open(2) block forever without O_NONBLOCK).
TEST_F(SnapshotTest, FileReplacedByFifoDuringSaveIsSkippedNotWaitedFor) {
  fs::create_directories(src_);
  write_file(src_ + "/a_first", Bytes(10, 'a'));
  write_file(src_ + "/z_becomes_fifo", Bytes(10, 'z'));
  const std::string fifo = src_ + "/z_becomes_fifo";
  std::atomic<bool> done{false};
  std::thread watchdog([&] {  // If the save blocks in open(), unblock it so the test fails instead of hanging.
    for (int i = 0; i < 200 && !done; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!done) {
      const int fd = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
      if (fd >= 0) ::close(fd);
    }
  });
  auto r = store_->create(CreateOptions{.project = "p", .source_dir = src_, .now_ns = test_now_ns(),
                                        .progress = [&](const Progress& p) {
                                          if (p.files_done == 1) {
                                            fs::remove(fifo);
                                            ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
                                          }
                                        }});
  done = true;
  watchdog.join();
  ASSERT_TRUE(r) << r.error().to_string();
  ASSERT_EQ(r->warnings.size(), 1u);
  EXPECT_NE(r->warnings[0].find("z_becomes_fifo: no longer a regular file"), std::string::npos) << r->warnings[0];
  EXPECT_EQ(r->snapshot.commit.files, 1u);
  auto v = store_->verify({r->snapshot});
  ASSERT_TRUE(v && v->clean());
}

// Data segments of a file (SEEK_DATA/SEEK_HOLE); the rest reads as zeros.
std::vector<std::pair<off_t, off_t>> DataSegments(int fd, off_t size) {
  std::vector<std::pair<off_t, off_t>> out;
  for (off_t off = 0; off < size;) {
    const off_t d = ::lseek(fd, off, SEEK_DATA);
    if (d < 0) break;
    const off_t h = ::lseek(fd, d, SEEK_HOLE);
    out.emplace_back(d, h);
    off = h;
  }
  return out;
}

// Same size and same bytes, comparing only where either file has data (both
// read as zeros everywhere else), so 5 GiB compare in milliseconds.
::testing::AssertionResult SameSparseContents(const std::string& a, const std::string& b) {
  const int fa = ::open(a.c_str(), O_RDONLY);
  const int fb = ::open(b.c_str(), O_RDONLY);
  struct stat sa{}, sb{};
  ::fstat(fa, &sa);
  ::fstat(fb, &sb);
  auto fail = [&](const std::string& why) {
    ::close(fa);
    ::close(fb);
    return ::testing::AssertionFailure() << why;
  };
  if (fa < 0 || fb < 0) return fail("cannot open");
  if (sa.st_size != sb.st_size) return fail("sizes differ: " + std::to_string(sa.st_size) + " vs " + std::to_string(sb.st_size));
  auto segs = DataSegments(fa, sa.st_size);
  const auto more = DataSegments(fb, sb.st_size);
  segs.insert(segs.end(), more.begin(), more.end());
  std::vector<char> x(1 << 20), y(1 << 20);
  for (auto [begin, end] : segs) {
    for (off_t off = begin; off < end;) {
      const std::size_t n = static_cast<std::size_t>(std::min<off_t>(end - off, 1 << 20));
      if (::pread(fa, x.data(), n, off) != static_cast<ssize_t>(n) || ::pread(fb, y.data(), n, off) != static_cast<ssize_t>(n)) {
        return fail("short read at " + std::to_string(off));
      }
      if (std::memcmp(x.data(), y.data(), n) != 0) return fail("bytes differ near offset " + std::to_string(off));
      off += static_cast<off_t>(n);
    }
  }
  ::close(fa);
  ::close(fb);
  return ::testing::AssertionSuccess();
}

TEST_F(SnapshotTest, FiveGiBSparseFileIsSavedWithoutReadingItsHolesAndRestoredSparse) {
  fs::create_directories(src_);
  const std::string path = src_ + "/sparse";
  constexpr off_t kSize = off_t{5} << 30;
  Prng rng(5);
  const Bytes middle = random_bytes(rng, 100000, false);
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_EQ(::ftruncate(fd, kSize), 0);
  ASSERT_EQ(::pwrite(fd, "head", 4, 0), 4);
  ASSERT_EQ(::pwrite(fd, middle.data(), middle.size(), (off_t{1} << 30) + 12345), static_cast<ssize_t>(middle.size()));
  ASSERT_EQ(::pwrite(fd, "tail", 4, kSize - 4), 4);
  ::close(fd);
  write_file(src_ + "/small", Bytes(10, 's'));
  const auto t0 = std::chrono::steady_clock::now();
  auto r = Create("p", src_);
  const auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(r) << r.error().to_string();
  // Only the neighbourhoods of the three data blocks were read (a 4 MiB read-ahead each).
  EXPECT_GE(r->bytes_skipped_in_holes, static_cast<std::uint64_t>(kSize) - (16u << 20));
  EXPECT_LT(r->snapshot.commit.new_bytes, 1u << 20);
  EXPECT_EQ(r->snapshot.commit.logical_bytes, static_cast<std::uint64_t>(kSize) + 10);
  auto out = store_->restore(r->snapshot, Target("out"));
  const auto t2 = std::chrono::steady_clock::now();
  ASSERT_TRUE(out) << out.error().to_string();
  ASSERT_TRUE(out->damaged.empty());
  struct stat st{};
  ASSERT_EQ(::stat((Target("out") + "/sparse").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, kSize);
  EXPECT_LT(st.st_blocks * 512, 8 << 20) << "restored file is not sparse";
  EXPECT_TRUE(SameSparseContents(path, Target("out") + "/sparse"));
  auto v = store_->verify({r->snapshot});
  ASSERT_TRUE(v && v->clean());
  auto again = Create("p", src_, 1);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->files_read, 0u);  // The file cache applies as to any file.
  std::printf("5 GiB sparse file: save %.2f s, restore %.2f s\n", std::chrono::duration<double>(t1 - t0).count(),
              std::chrono::duration<double>(t2 - t1).count());
}

// Skipping holes is an optimisation only: a sparse file and a dense file with
// the same bytes are cut into the same chunks (same ids, same snapshot).
TEST_F(SnapshotTest, SparseAndDenseCopiesOfTheSameBytesGiveTheSameChunks) {
  fs::create_directories(src_);
  constexpr off_t kSize = (off_t{3} << 20) + 100;
  Prng rng(6);
  const Bytes data = random_bytes(rng, 10000, false);
  const int fd = ::open((src_ + "/sparse").c_str(), O_WRONLY | O_CREAT, 0644);
  ASSERT_EQ(::ftruncate(fd, kSize), 0);
  ASSERT_EQ(::pwrite(fd, data.data(), data.size(), (off_t{1} << 20) + 7), static_cast<ssize_t>(data.size()));
  ASSERT_EQ(::pwrite(fd, "x", 1, kSize - 1), 1);
  ::close(fd);
  write_file(src_ + "/dense", read_file(src_ + "/sparse"));
  struct stat st{};
  ASSERT_EQ(::stat((src_ + "/dense").c_str(), &st), 0);
  ASSERT_GE(st.st_blocks * 512, kSize);  // Really dense.
  auto r = Create("p", src_);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_GT(r->bytes_skipped_in_holes, 0u);
  const auto sparse = ChunksOf(r->snapshot, "sparse");
  EXPECT_GT(sparse.size(), 4u);
  EXPECT_EQ(sparse, ChunksOf(r->snapshot, "dense"));
}

// Disk full at the two places a save writes (a chunk batch, the final
// commit): the error names the store and what to do; no snapshot appears;
// verify stays clean; gc removes what the failed save left; saving works again.
TEST_F(SnapshotTest, DiskFullDuringSaveNamesTheStoreAndLeavesItConsistent) {
  make_random_tree(src_, 23, 10);
  const SnapshotInfo first = Save("p", src_);
  const std::string big = (base_ / "big").string();
  fs::create_directories(big);
  Prng rng(24);
  for (int i = 0; i < 3; ++i) write_file(big + "/r" + std::to_string(i), random_bytes(rng, 16 << 20, false));
  for (const std::string point : {"chunk_batch_commit", "before_final_commit"}) {
    int batches = 0;
    store_->set_fault_error_hook([&](std::string_view p) {
      // The second chunk batch fails (the first one commits: its chunks are orphans);
      // or the final commit.
      if (p != point) return 0;
      return p == "chunk_batch_commit" && batches++ == 0 ? 0 : ENOSPC;
    });
    auto r = Create("p", big, 1);
    store_->set_fault_error_hook(nullptr);
    ASSERT_FALSE(r) << point;
    EXPECT_EQ(r.error().code, Code::kResourceExhausted);
    const std::string& m = r.error().message;
    EXPECT_NE(m.find("store " + store_dir_ + " is full"), std::string::npos) << m;
    EXPECT_NE(m.find("No space left on device"), std::string::npos) << m;
    EXPECT_NE(m.find("No snapshot was added"), std::string::npos) << m;
    EXPECT_NE(m.find("Free space on the file system holding " + store_dir_), std::string::npos) << m;
    EXPECT_NE(m.find("shoal snapshot gc --store " + store_dir_), std::string::npos) << m;
    auto list = store_->list("p");
    ASSERT_TRUE(list);
    ASSERT_EQ(list->size(), 1u) << point;
    EXPECT_EQ(list->at(0).id, first.id);
    auto v = store_->verify(*list);
    ASSERT_TRUE(v && v->clean());
    auto gc = store_->gc();
    ASSERT_TRUE(gc);
    if (point == "chunk_batch_commit") {
      EXPECT_GT(gc->chunks_removed, 0u);  // The first batch's chunks.
    }
    EXPECT_EQ(store_->stats()->unreferenced_chunks, 0u);
  }
  auto again = Create("p", big, 2);  // The save lock was released; space is back.
  ASSERT_TRUE(again) << again.error().to_string();
  auto out = store_->restore(again->snapshot, Target("out"));
  ASSERT_TRUE(out);
  EXPECT_EQ(describe(Target("out")), describe(big));
}

// The same with a real full file system: a 6 MiB tmpfs mounted in a private
// mount namespace of a child process (needs root or user namespaces).
TEST_F(SnapshotTest, RealFullFileSystemDuringSaveLeavesTheStoreConsistent) {
  const std::string mnt = (base_ / "tmpfs").string();
  fs::create_directories(mnt);
  make_random_tree(src_, 25, 10);
  const std::string big = (base_ / "big").string();
  fs::create_directories(big);
  Prng rng(26);
  write_file(big + "/random", random_bytes(rng, 12 << 20, false));
  store_.reset();
  const std::string out = InChild([&]() -> std::string {
    const uid_t uid = ::geteuid();
    const gid_t gid = ::getegid();
    if (::unshare(CLONE_NEWNS) != 0) {
      if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return std::string("SKIP: no mount namespace: ") + std::strerror(errno);
      auto put = [](const char* file, const std::string& text) {
        const int fd = ::open(file, O_WRONLY);
        const bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
        if (fd >= 0) ::close(fd);
        return ok;
      };
      put("/proc/self/setgroups", "deny");
      if (!put("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1") ||
          !put("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1")) {
        return "SKIP: cannot map ids in a user namespace";
      }
    }
    if (::mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=6m") != 0) {
      return std::string("SKIP: cannot mount a tmpfs: ") + std::strerror(errno);
    }
    const std::string dir = mnt + "/store";
    auto store = SnapshotStore::open(dir);
    if (!store) return "open: " + store.error().to_string();
    auto& s = **store;
    auto first = s.create(CreateOptions{.project = "p", .source_dir = src_, .now_ns = test_now_ns()});
    if (!first) return "first save: " + first.error().to_string();
    auto r = s.create(CreateOptions{.project = "p", .source_dir = big, .now_ns = test_now_ns(1)});
    if (r) return "a 12 MiB save into a 6 MiB file system succeeded";
    if (r.error().code != Code::kResourceExhausted) return "wrong code: " + r.error().to_string();
    if (r.error().message.find("store " + dir + " is full") == std::string::npos ||
        r.error().message.find("Free space on the file system holding " + dir) == std::string::npos) {
      return "unclear message: " + r.error().message;
    }
    auto list = s.list("p");
    if (!list || list->size() != 1 || list->at(0).id != first->snapshot.id) return "catalog changed";
    auto v = s.verify(*list);
    if (!v || !v->clean()) return "verify not clean after ENOSPC";
    auto gc = s.gc();
    if (!gc) return "gc: " + gc.error().to_string();
    auto again = s.create(CreateOptions{.project = "p", .source_dir = src_, .now_ns = test_now_ns(2)});
    if (!again) return "save after ENOSPC: " + again.error().to_string();
    auto all = s.list("p");
    v = s.verify(*all);
    if (!v || !v->clean() || all->size() != 2) return "store not consistent after the retry";
    return "OK: " + r.error().message;
  });
  if (out.starts_with("SKIP")) GTEST_SKIP() << out;
  EXPECT_TRUE(out.starts_with("OK: ")) << out;
  std::printf("error on a full tmpfs: %s\n", out.c_str() + 4);
  Open();
}

// kill -9 at many points of create, prune and gc: the store opens, verify is
// clean, the interrupted snapshot is absent or complete, gc collects orphans.
class CrashTest : public SnapshotTest {
 protected:
  // Runs `op` in a child process that SIGKILLs itself at the k-th fault point
  // (counting only points whose name starts with `prefix`). Returns true if
  // the child was killed (false: op finished before reaching the point).
  bool RunAndKill(const std::function<void(SnapshotStore&)>& op, const std::string& prefix, int k) {
    store_.reset();  // Never share an LMDB environment across fork().
    const pid_t child = ::fork();
    if (child == 0) {
      auto s = SnapshotStore::open(store_dir_);
      if (!s) ::_exit(3);
      int seen = 0;
      (*s)->set_fault_hook([&](std::string_view point) {
        if (point.starts_with(prefix) && seen++ == k) ::raise(SIGKILL);
      });
      op(**s);
      ::_exit(0);
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    Open();
    EXPECT_TRUE(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) == 0)) << "child status " << status;
    return WIFSIGNALED(status);
  }
  void ExpectConsistent() {
    auto all = store_->list();
    ASSERT_TRUE(all);
    auto v = store_->verify(*all);
    ASSERT_TRUE(v);
    EXPECT_TRUE(v->clean());
  }
};

TEST_F(CrashTest, KillDuringCreateLeavesSnapshotAbsentOrComplete) {
  make_random_tree(src_, 19, 40);
  const SnapshotInfo base = Save("p", src_);
  testing::write_file(src_ + "/extra", random_bytes(*std::make_unique<Prng>(2).get(), 2 << 20, false));
  int killed = 0;
  for (int k = 0; k < 40; k += 3) {
    const std::string point = k % 2 == 0 ? "chunk_put" : "before_final_commit";
    const bool was_killed = RunAndKill(
        [&](SnapshotStore& s) {
          (void)s.create(CreateOptions{.project = "p", .source_dir = src_, .now_ns = test_now_ns(k + 1), .threads = 2});
        },
        point, point == "chunk_put" ? k : 0);
    killed += was_killed ? 1 : 0;
    ExpectConsistent();
    auto list = store_->list("p");
    ASSERT_TRUE(list);
    if (was_killed) {
      // Saves that finished before (when the point was not reached) may exist; each is complete (verify above).
      EXPECT_GE(list->size(), 1u);
    }
    // The save lock died with the child: a new save works at once.
    ASSERT_TRUE(Create("p", src_, 1000 + k));
  }
  EXPECT_GT(killed, 3);
  auto gc = store_->gc();
  ASSERT_TRUE(gc);
  auto stats = store_->stats();
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->unreferenced_chunks, 0u);
  EXPECT_EQ(DeadPacks(), 0u);  // The killed saves' packs (unindexed or all garbage) are gone.
  ExpectConsistent();
  EXPECT_TRUE(store_->find(to_hex(base.id)));
}

// The snapshot commits first, then the file cache is renamed into place. A
// kill between the two leaves the previous cache, whose base is the parent
// snapshot (its chunks are referenced); a kill before the commit leaves a
// temporary cache that nothing reads and gc removes.
TEST_F(CrashTest, KillBetweenSnapshotCommitAndCacheWriteIsSafe) {
  fs::create_directories(src_);
  write_file(src_ + "/a", Bytes(5000, 'a'));
  write_file(src_ + "/b", Bytes(5000, 'b'));
  const SnapshotInfo s1 = Save("p", src_);
  const std::string cache = store_dir_ + "/caches/p.cache";
  const Bytes cache1 = read_file(cache);
  write_file(src_ + "/a", Bytes(6000, 'A'));
  for (const std::string point : {"after_final_commit", "before_final_commit"}) {
    SCOPED_TRACE(point);
    const int before = static_cast<int>(store_->list("p")->size());
    ASSERT_TRUE(RunAndKill(
        [&](SnapshotStore& s) {
          (void)s.create(CreateOptions{.project = "p", .source_dir = src_, .now_ns = test_now_ns(before), .threads = 2});
        },
        point, 0));
    ExpectConsistent();
    EXPECT_EQ(store_->list("p")->size(), before + (point == "after_final_commit" ? 1u : 0u));
    EXPECT_EQ(read_file(cache), cache1);  // Still the cache of s1.
  }
  EXPECT_TRUE(fs::exists(cache + ".tmp"));  // Left by the kill before the commit.
  // Prune s1 away and collect its chunks: the cache's base is gone, so its
  // hits are checked; b's chunk is still referenced by the later snapshot.
  auto pruned = store_->prune("p", RetentionPolicy{.keep_last = 1});
  ASSERT_TRUE(pruned);
  ASSERT_TRUE(store_->gc());
  EXPECT_FALSE(fs::exists(cache + ".tmp"));
  auto r = Create("p", src_, 100);
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->files_read, 1u);  // a changed since s1.
  EXPECT_EQ(r->cache_hits, 1u);
  ExpectConsistent();
  ASSERT_TRUE(store_->restore(r->snapshot, Target("out")));
  EXPECT_EQ(read_file(Target("out") + "/a"), Bytes(6000, 'A'));
  EXPECT_NE(r->snapshot.commit.tree, s1.commit.tree);
  auto next = Create("p", src_, 101);  // The new cache is complete.
  ASSERT_TRUE(next);
  EXPECT_EQ(next->files_read, 0u);
}

TEST_F(CrashTest, KillDuringPruneAndGcKeepsStoreConsistent) {
  fs::create_directories(src_);
  Prng rng(20);
  for (int i = 0; i < 6; ++i) {
    write_file(src_ + "/f" + std::to_string(i), random_bytes(rng, 100000, false));
    Save("p", src_, i);
  }
  const std::size_t before = store_->list("p")->size();
  EXPECT_TRUE(RunAndKill([](SnapshotStore& s) { (void)s.prune("p", RetentionPolicy{.keep_last = 2}); }, "prune_", 1));
  EXPECT_EQ(store_->list("p")->size(), before);  // All or nothing: nothing.
  ExpectConsistent();
  ASSERT_TRUE(store_->prune("p", RetentionPolicy{.keep_last = 2}));
  for (int k = 0; k < 4; ++k) {
    EXPECT_TRUE(RunAndKill([](SnapshotStore& s) { (void)s.gc(); }, "gc_", k));
    ExpectConsistent();
  }
  auto gc = store_->gc();
  ASSERT_TRUE(gc);
  EXPECT_GT(gc->chunks_removed, 0u);
  ExpectConsistent();
  auto stats = store_->stats();
  EXPECT_EQ(stats->unreferenced_chunks, 0u);
}

// kill -9 while gc deletes dead packs and rewrites a mostly-dead one: before
// the copy is indexed, between re-pointing the entries and deleting the old
// pack, and so on. The store stays consistent and a final gc leaves no pack
// without a live chunk.
TEST_F(CrashTest, KillDuringPackCompactionKeepsStoreConsistent) {
  Prng rng(41);
  Bytes b;
  SnapshotInfo s2;
  ASSERT_NO_FATAL_FAILURE(SaveAndPruneToAMostlyDeadPack(rng, b, s2));
  int killed = 0;
  for (int k = 0; k < 4; ++k) {
    killed += RunAndKill([](SnapshotStore& s) { (void)s.gc(); }, "gc_pack_", k) ? 1 : 0;
    ExpectConsistent();
    auto out = store_->restore(s2, Target("out" + std::to_string(k)));
    ASSERT_TRUE(out) << out.error().to_string();
    EXPECT_TRUE(out->damaged.empty());
    EXPECT_EQ(read_file(Target("out" + std::to_string(k)) + "/b"), b);
  }
  EXPECT_GE(killed, 2);
  auto gc = store_->gc();
  ASSERT_TRUE(gc);
  ExpectConsistent();
  EXPECT_EQ(DeadPacks(), 0u);
  EXPECT_EQ(store_->stats()->unreferenced_chunks, 0u);
}

}  // namespace
}  // namespace shoal::storage
