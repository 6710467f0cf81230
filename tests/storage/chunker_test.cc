#include "storage/chunker.h"

#include <gtest/gtest.h>

#include <set>

#include "base/crypto.h"
#include "base/random.h"
#include "storage/chunk_store.h"
#include "storage/manifest.h"
#include "storage/retention.h"

namespace shoal::storage {
namespace {

Bytes random_data(std::uint64_t seed, std::size_t n) {
  Prng rng(seed);
  Bytes b(n);
  rng.fill(b);
  return b;
}

std::vector<std::size_t> cuts(const Chunker& c, ByteView data) {
  std::vector<std::size_t> out;
  std::size_t off = 0;
  while (off < data.size()) {
    const std::size_t len = c.cut(data.subspan(off));
    out.push_back(len);
    off += len;
  }
  return out;
}

std::vector<ChunkId> chunk_ids(const Chunker& c, ByteView data) {
  std::vector<ChunkId> out;
  std::size_t off = 0;
  for (std::size_t len : cuts(c, data)) {
    out.push_back(chunk_id_of(data.subspan(off, len)));
    off += len;
  }
  return out;
}

TEST(ChunkerTest, InputBelowMinimumIsOneChunk) {
  const Chunker c;
  const Bytes data = random_data(1, c.params().min_bytes);
  EXPECT_EQ(c.cut(data), data.size());
  EXPECT_EQ(c.cut({}), 0u);
}

TEST(ChunkerTest, ChunksRespectBoundsAndCoverInput) {
  const Chunker c;
  const Bytes data = random_data(2, 8 << 20);
  const auto lens = cuts(c, data);
  std::size_t total = 0;
  for (std::size_t i = 0; i < lens.size(); ++i) {
    EXPECT_LE(lens[i], c.params().max_bytes);
    if (i + 1 < lens.size()) {
      EXPECT_GE(lens[i], c.params().min_bytes);
    }
    total += lens[i];
  }
  EXPECT_EQ(total, data.size());
  // Normalized chunking keeps the mean near the target.
  const double mean = static_cast<double>(data.size()) / static_cast<double>(lens.size());
  EXPECT_GT(mean, 0.5 * c.params().avg_bytes);
  EXPECT_LT(mean, 2.0 * c.params().avg_bytes);
}

TEST(ChunkerTest, CutPointsAreFixedByTheFormat) {
  // Golden values: a change here changes every chunk id ever stored.
  const Chunker c;
  const Bytes data = random_data(42, 1 << 20);
  const auto lens = cuts(c, data);
  ASSERT_GE(lens.size(), 3u);
  EXPECT_EQ((std::vector<std::size_t>{lens[0], lens[1], lens[2]}), (std::vector<std::size_t>{75158, 81047, 95933}));
}

TEST(ChunkerTest, InsertionAtStartKeepsLaterChunks) {
  const Chunker c;
  const Bytes original = random_data(3, 4 << 20);
  Bytes edited = random_data(4, 100);
  edited.insert(edited.end(), original.begin(), original.end());
  const auto a = chunk_ids(c, original);
  const auto b = chunk_ids(c, edited);
  const std::set<ChunkId> before(a.begin(), a.end());
  std::size_t shared = 0;
  for (const auto& id : b) shared += before.count(id);
  // Only the chunk(s) around the edit change.
  EXPECT_GE(shared + 2, a.size());
}

TEST(ChunkerTest, InsertionInMiddleKeepsOtherChunks) {
  const Chunker c;
  const Bytes original = random_data(5, 4 << 20);
  Bytes edited = original;
  const Bytes insert = random_data(6, 5000);
  edited.insert(edited.begin() + (2 << 20), insert.begin(), insert.end());
  const auto a = chunk_ids(c, original);
  const auto b = chunk_ids(c, edited);
  const std::set<ChunkId> before(a.begin(), a.end());
  std::size_t shared = 0;
  for (const auto& id : b) shared += before.count(id);
  EXPECT_GE(shared + 3, a.size());
}

TEST(ChunkCodecTest, CompressibleChunkRoundTripsCompressed) {
  const Bytes plain(100000, 'a');
  const Bytes stored = encode_chunk(plain, 3);
  EXPECT_EQ(stored[0], static_cast<std::uint8_t>(ChunkCodec::kZstd));
  EXPECT_LT(stored.size(), 1000u);
  auto back = decode_chunk(stored, chunk_id_of(plain));
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(*back, plain);
}

TEST(ChunkCodecTest, IncompressibleChunkIsStoredRaw) {
  const Bytes plain = random_data(7, 65536);
  const Bytes stored = encode_chunk(plain, 3);
  EXPECT_EQ(stored[0], static_cast<std::uint8_t>(ChunkCodec::kRaw));
  EXPECT_EQ(stored.size(), plain.size() + kChunkHeaderBytes);
  EXPECT_TRUE(decode_chunk(stored, chunk_id_of(plain)));
}

TEST(ChunkCodecTest, FlippedByteIsCorruption) {
  for (bool compressible : {false, true}) {
    const Bytes plain = compressible ? Bytes(50000, 'z') : random_data(8, 50000);
    Bytes stored = encode_chunk(plain, 3);
    stored[stored.size() / 2] ^= 0x01;
    auto back = decode_chunk(stored, chunk_id_of(plain));
    ASSERT_FALSE(back);
    EXPECT_EQ(back.error().code, Code::kCorruption);
  }
}

TEST(ChunkCodecTest, TruncatedValueIsCorruption) {
  const Bytes plain = random_data(9, 50000);
  Bytes stored = encode_chunk(plain, 3);
  for (std::size_t keep : {std::size_t{0}, std::size_t{3}, stored.size() - 1}) {
    auto back = decode_chunk(ByteView(stored.data(), keep), chunk_id_of(plain));
    ASSERT_FALSE(back);
    EXPECT_EQ(back.error().code, Code::kCorruption);
  }
}

TEST(ChunkCodecTest, UnknownCodecIsCorruption) {
  const Bytes plain = random_data(10, 100);
  Bytes stored = encode_chunk(plain, 0);
  stored[0] = 9;
  auto back = decode_chunk(stored, chunk_id_of(plain));
  ASSERT_FALSE(back);
  EXPECT_EQ(back.error().code, Code::kCorruption);
}

TEST(ManifestTest, TreeRoundTrips) {
  std::vector<TreeEntry> entries;
  entries.push_back(TreeEntry{.name = "a\nb", .kind = EntryKind::kFile, .mode = 0755, .mtime_ns = -5, .size = 3,
                              .chunks = {chunk_id_of(as_bytes("abc"))}});
  entries.push_back(TreeEntry{.name = "d", .kind = EntryKind::kDir, .mode = 0700, .mtime_ns = 1, .tree = chunk_id_of(as_bytes("t"))});
  entries.push_back(TreeEntry{.name = "l\xff", .kind = EntryKind::kSymlink, .mode = 0777, .mtime_ns = 2, .target = "../x"});
  auto back = decode_tree(encode_tree(entries));
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(*back, entries);
}

TEST(ManifestTest, TruncatedTreeIsCorruption) {
  std::vector<TreeEntry> entries{TreeEntry{.name = "x", .kind = EntryKind::kFile, .mode = 0644, .mtime_ns = 0, .size = 0}};
  Bytes b = encode_tree(entries);
  b.pop_back();
  auto back = decode_tree(b);
  ASSERT_FALSE(back);
  EXPECT_EQ(back.error().code, Code::kCorruption);
}

TEST(ManifestTest, TreeWithSlashInNameIsCorruption) {
  std::vector<TreeEntry> entries{TreeEntry{.name = "a/b", .kind = EntryKind::kFile, .mode = 0644, .mtime_ns = 0, .size = 0}};
  auto back = decode_tree(encode_tree(entries));
  ASSERT_FALSE(back);
  EXPECT_EQ(back.error().code, Code::kCorruption);
}

TEST(ManifestTest, CommitRoundTrips) {
  Commit c{.project = "p-1", .time_ns = 1700000000123456789, .parent = chunk_id_of(as_bytes("p")),
           .tree = chunk_id_of(as_bytes("t")), .epoch = 7, .files = 3, .dirs = 2, .symlinks = 1,
           .logical_bytes = 1000, .new_bytes = 500};
  auto back = decode_commit(encode_commit(c));
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(*back, c);
  c.parent.reset();
  back = decode_commit(encode_commit(c));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, c);
}

// Retention as a table: times in hours since a Monday 00:00 UTC.
constexpr std::int64_t kHour = 3600LL * 1000000000;
constexpr std::int64_t kMonday = 1700438400LL * 1000000000;  // 2023-11-20T00:00Z, a Monday.

struct RetentionCase {
  const char* name;
  std::vector<double> hours;  // Snapshot times.
  RetentionPolicy policy;
  std::vector<bool> keep;
};

TEST(RetentionTest, Table) {
  const std::vector<RetentionCase> cases = {
      {"keep last 2", {0, 1, 2, 3}, {.keep_last = 2}, {false, false, true, true}},
      {"keep last more than exist", {0, 1}, {.keep_last = 5}, {true, true}},
      {"hourly keeps newest per hour", {0.1, 0.5, 1.2, 1.9, 2.5}, {.keep_hourly = 2}, {false, false, false, true, true}},
      {"daily over three days", {1, 5, 25, 30, 49, 50}, {.keep_daily = 2}, {false, false, false, true, false, true}},
      {"weekly crosses Monday", {-30, -2, 10, 24 * 7 + 1}, {.keep_weekly = 2}, {false, false, true, true}},
      {"union of rules", {0, 1, 24, 48}, {.keep_last = 1, .keep_daily = 3}, {false, true, true, true}},
      {"out of order input", {3, 0, 2, 1}, {.keep_last = 2}, {true, false, true, false}},
      {"empty policy keeps nothing", {0, 1}, {}, {false, false}},
  };
  for (const auto& tc : cases) {
    std::vector<std::int64_t> times;
    for (double h : tc.hours) times.push_back(kMonday + static_cast<std::int64_t>(h * static_cast<double>(kHour)));
    EXPECT_EQ(select_kept(times, tc.policy), tc.keep) << tc.name;
  }
}

}  // namespace
}  // namespace shoal::storage
