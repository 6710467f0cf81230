// Tests for storage/transfer_store.h: snapshots synced between two real
// snapshot stores in temporary directories, through two TransferConnections
// wired back to back in memory.

#include "storage/transfer_store.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "storage/snapshot_internal.h"
#include "tests/storage/tree_util.h"
#include "transfer/connection.h"

namespace shoal::storage {
namespace {

namespace fs = std::filesystem;
using testing::describe;
using testing::make_random_tree;
using transfer::ConnectionConfig;
using transfer::ConnectionEvent;
using transfer::TransferConnection;
using Kind = ConnectionEvent::Kind;

std::int64_t test_now_ns() {
  struct timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return (static_cast<std::int64_t>(ts.tv_sec) + 100) * 1'000'000'000;  // Past the racy window.
}

// Damages the stored bytes of chosen reads, once each: a sender with a bad disk.
class CorruptingSource final : public transfer::SyncSource {
 public:
  explicit CorruptingSource(SnapshotStore& store) : inner_(store) {}
  Result<Bytes> read(const ChunkId& id) override {
    auto bytes = inner_.read(id);
    ++reads;
    if (bytes && reads == corrupt_read && !bytes->empty()) {
      bytes->back() ^= 0x40;
      ++corrupted;
    }
    return bytes;
  }
  std::uint64_t reads = 0;
  std::uint64_t corrupt_read = 0;  // 1-based; 0 = none.
  std::uint64_t corrupted = 0;

 private:
  StoreSource inner_;
};

class TransferStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    crypto_init();
    base_ = fs::temp_directory_path() / ("shoal-xstore-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    fs::create_directories(base_);
    auto a = SnapshotStore::open((base_ / "a").string());
    auto b = SnapshotStore::open((base_ / "b").string());
    ASSERT_TRUE(a && b);
    store_a_ = std::move(*a);
    store_b_ = std::move(*b);
    source_ = std::make_unique<CorruptingSource>(*store_a_);
  }
  void TearDown() override {
    a_.reset();
    b_.reset();
    sinks_.clear();
    store_a_.reset();
    store_b_.reset();
    fs::remove_all(base_);
  }

  SnapshotInfo Save(const std::string& project, std::uint64_t seed, int files = 40) {
    const std::string src = (base_ / ("src" + std::to_string(seed))).string();
    make_random_tree(src, seed, files);
    auto r = store_a_->create(CreateOptions{.project = project, .source_dir = src, .now_ns = test_now_ns()});
    EXPECT_TRUE(r) << r.error().to_string();
    sources_[r->snapshot.id] = src;
    return r->snapshot;
  }
  ConnectionConfig Config(transfer::ChannelRole role, const Identity& peer) {
    ConnectionConfig c;
    c.channel.role = role;
    c.channel.keyring = Keyring(key_);
    c.channel.expected_peer_key = peer.public_key();
    c.sync = store_sync_config();
    c.sync.window_chunks = 16;
    c.accept_offer = [this](const std::string& project, const ChunkId& snapshot) -> Result<transfer::SyncSink*> {
      sinks_.push_back(std::make_unique<StoreSink>(*store_b_, project, snapshot));
      return sinks_.back().get();
    };
    return c;
  }
  void Connect() {
    events_a_.clear();
    events_b_.clear();
    a_ = std::make_unique<TransferConnection>(Config(transfer::ChannelRole::kInitiator, bob_), alice_, rng_a_, now_);
    b_ = std::make_unique<TransferConnection>(Config(transfer::ChannelRole::kResponder, alice_), bob_, rng_b_, now_);
    Pump();
    ASSERT_TRUE(a_->channel().established());
  }
  // Drops both ends without a close, as a cut TCP connection would.
  void Disconnect() {
    a_.reset();
    b_.reset();
  }
  bool Step() {
    bool moved = false;
    if (auto tx = a_->poll_transmit(now_)) {
      moved = true;
      b_->on_bytes(now_, *tx);
    }
    if (auto tx = b_->poll_transmit(now_)) {
      moved = true;
      a_->on_bytes(now_, *tx);
    }
    while (auto e = a_->poll_event()) {
      events_a_.push_back(std::move(*e));
    }
    while (auto e = b_->poll_event()) {
      events_b_.push_back(std::move(*e));
    }
    return moved;
  }
  // Moves bytes until nothing moves. A receiver whose last chunks are still
  // with its sink's verifier thread asks to be polled again in
  // kVerifyPollInterval: wait that long (real time, the thread is real) and
  // fire the timers, a bounded number of times.
  void Pump(int steps_max = 1'000'000) {
    int idle = 0;
    for (int i = 0; i < steps_max; ++i) {
      if (Step()) {
        idle = 0;
        continue;
      }
      std::optional<Instant> d = b_->next_deadline();
      if (auto da = a_->next_deadline(); da && (!d || *da < *d)) {
        d = da;
      }
      if (!d || *d > now_ + transfer::kVerifyPollInterval || ++idle > 10'000) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      now_ += transfer::kVerifyPollInterval;
      a_->on_timer(now_);
      b_->on_timer(now_);
    }
  }
  void Offer(const SnapshotInfo& s) {
    auto id = a_->offer(now_, *source_, s.commit.project, s.id, s.commit.logical_bytes);
    ASSERT_TRUE(id) << id.error().to_string();
  }
  // The last session-end event of one side.
  static const ConnectionEvent* Last(const std::vector<ConnectionEvent>& events) {
    for (auto it = events.rbegin(); it != events.rend(); ++it) {
      if (it->kind == Kind::kSessionDone || it->kind == Kind::kSessionFailed) {
        return &*it;
      }
    }
    return nullptr;
  }
  void ExpectRestoresIdentical(const SnapshotInfo& s) {
    auto found = store_b_->find(to_hex(s.id), s.commit.project);
    ASSERT_TRUE(found) << found.error().to_string();
    const std::string out = (base_ / ("out-" + to_hex(s.id).substr(0, 8))).string();
    auto r = store_b_->restore(*found, out);
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_TRUE(r->damaged.empty());
    const auto want = describe(sources_.at(s.id));
    const auto got = describe(out);
    EXPECT_EQ(got.size(), want.size());
    for (const auto& [path, node] : want) {
      auto it = got.find(path);
      ASSERT_NE(it, got.end()) << "missing " << path;
      EXPECT_EQ(it->second, node) << path;
    }
  }
  void ExpectVerifyClean() {
    auto all = store_b_->list();
    ASSERT_TRUE(all);
    auto report = store_b_->verify(*all);
    ASSERT_TRUE(report) << report.error().to_string();
    EXPECT_TRUE(report->clean());
  }
  // How many chunks of a snapshot of store A store B holds.
  std::uint64_t HeldInB(const SnapshotInfo& s) {
    auto txn = Txn::begin_read(store_a_->env());
    ChunkIdSet set;
    EXPECT_TRUE(internal::mark_reachable(*txn, store_a_->chunks(), s.id, set));
    std::vector<ChunkId> ids(set.begin(), set.end());
    auto txn_b = Txn::begin_read(store_b_->env());
    auto missing = store_b_->chunks().missing(*txn_b, ids);
    EXPECT_TRUE(missing);
    return ids.size() - missing->size();
  }
  // Chunks reachable from a snapshot in store A (commit, trees, data).
  std::uint64_t ChunksOf(const SnapshotInfo& s) {
    auto txn = Txn::begin_read(store_a_->env());
    ChunkIdSet set;
    EXPECT_TRUE(internal::mark_reachable(*txn, store_a_->chunks(), s.id, set));
    return set.size();
  }

  fs::path base_;
  std::unique_ptr<SnapshotStore> store_a_, store_b_;
  std::unique_ptr<CorruptingSource> source_;
  std::map<ChunkId, std::string> sources_;
  std::vector<std::unique_ptr<StoreSink>> sinks_;
  Prng rng_{21};
  Identity alice_ = Identity::generate(rng_);
  Identity bob_ = Identity::generate(rng_);
  ClusterKey key_ = generate_cluster_key(rng_);
  Prng rng_a_{22}, rng_b_{23};
  Instant now_ = instant_from_us(1'000'000);
  std::unique_ptr<TransferConnection> a_, b_;
  std::vector<ConnectionEvent> events_a_, events_b_;
};

TEST_F(TransferStoreTest, SyncedSnapshotRestoresByteIdenticalAndVerifiesClean) {
  const SnapshotInfo s = Save("p", 1);
  Connect();
  Offer(s);
  Pump();
  const ConnectionEvent* done = Last(events_b_);
  ASSERT_NE(done, nullptr);
  ASSERT_EQ(done->kind, Kind::kSessionDone) << done->error.to_string();
  ASSERT_NE(Last(events_a_), nullptr);
  EXPECT_EQ(Last(events_a_)->kind, Kind::kSessionDone);
  EXPECT_EQ(done->progress.chunks_transferred, ChunksOf(s));
  ASSERT_TRUE(sinks_.back()->committed());
  EXPECT_FALSE(sinks_.back()->holds_gc_fence());
  ExpectRestoresIdentical(s);
  ExpectVerifyClean();
}

TEST_F(TransferStoreTest, SecondSyncOfAHeldSnapshotSendsNothing) {
  const SnapshotInfo s = Save("p", 2, 20);
  Connect();
  Offer(s);
  Pump();
  Offer(s);
  Pump();
  const ConnectionEvent* done = Last(events_b_);
  ASSERT_EQ(done->kind, Kind::kSessionDone);
  EXPECT_TRUE(done->progress.snapshot_already_held);
  EXPECT_EQ(done->progress.chunks_transferred, 0u);
  EXPECT_EQ(done->progress.chunks_requested, 0u);
}

TEST_F(TransferStoreTest, InterruptedSyncResumesSendingOnlyMissingChunks) {
  const SnapshotInfo s = Save("p", 3);
  const std::uint64_t total = ChunksOf(s);
  Connect();
  Offer(s);
  // Run until a good part of the chunks are stored, then cut the connection.
  for (int i = 0; i < 1'000'000 && sinks_.empty(); ++i) {
    ASSERT_TRUE(Step());
  }
  // chunks_accepted counts chunks the sink's verifier has passed, so it may lag what has arrived.
  for (int i = 0; i < 1'000'000 && sinks_.back()->counters().chunks_accepted < total / 2; ++i) {
    if (!Step()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      (void)sinks_.back()->verifying();  // Takes in what the verifier finished.
    }
  }
  Disconnect();
  sinks_.clear();  // Stores its open batch; the gc fence of the dead session is released with it.
  const std::uint64_t stored_first = HeldInB(s);
  ASSERT_GE(stored_first, total / 2);
  ASSERT_LT(stored_first, total);
  EXPECT_FALSE(store_b_->find(to_hex(s.id), "p")) << "committed before every chunk arrived";

  Connect();
  Offer(s);
  Pump();
  const ConnectionEvent* done = Last(events_b_);
  ASSERT_NE(done, nullptr);
  ASSERT_EQ(done->kind, Kind::kSessionDone) << done->error.to_string();
  EXPECT_EQ(done->progress.chunks_transferred, total - stored_first);
  EXPECT_EQ(sinks_.back()->counters().chunks_duplicate, 0u);
  EXPECT_GE(done->progress.chunks_already_held, 1u);
  ExpectRestoresIdentical(s);
  ExpectVerifyClean();
}

TEST_F(TransferStoreTest, CorruptedChunkIsRefusedAndFetchedAgain) {
  const SnapshotInfo s = Save("p", 4, 20);
  source_->corrupt_read = 5;
  Connect();
  Offer(s);
  Pump();
  EXPECT_EQ(source_->corrupted, 1u);
  const ConnectionEvent* done = Last(events_b_);
  ASSERT_EQ(done->kind, Kind::kSessionDone) << done->error.to_string();
  EXPECT_EQ(done->progress.chunks_refused, 1u);
  EXPECT_EQ(sinks_.back()->counters().chunks_refused, 1u);
  EXPECT_EQ(done->progress.chunks_transferred, ChunksOf(s));
  ExpectRestoresIdentical(s);
  ExpectVerifyClean();
}

// Damages the first read of each of the given chunks.
class CorruptFirstReadOf final : public transfer::SyncSource {
 public:
  CorruptFirstReadOf(SnapshotStore& store, std::set<ChunkId> targets) : inner_(store), targets_(std::move(targets)) {}
  Result<Bytes> read(const ChunkId& id) override {
    auto bytes = inner_.read(id);
    ++reads[id];
    if (bytes && !bytes->empty() && targets_.contains(id) && reads[id] == 1) {
      (*bytes)[bytes->size() / 2] ^= 0x08;
    }
    return bytes;
  }
  std::map<ChunkId, int> reads;

 private:
  StoreSource inner_;
  std::set<ChunkId> targets_;
};

// "A chunk whose bytes do not hash to its id: refused, counted, fetched
// again", for both ways a receiving store checks: a manifest (verified at
// once, the walk reads it next) and a data chunk (verified by the sink's
// verifier thread, refusal reported later through take_refused()).
TEST_F(TransferStoreTest, DamagedManifestAndDataChunkAreRefusedCountedAndFetchedAgain) {
  const SnapshotInfo s = Save("p", 12, 20);
  // Find a data chunk by walking the trees as the receiver would.
  StoreSink probe(*store_a_, "p", s.id);
  std::optional<ChunkId> data;
  std::vector<ChunkId> manifests = {s.commit.tree};
  while (!data && !manifests.empty()) {
    const ChunkId m = manifests.back();
    manifests.pop_back();
    auto raw = store_a_->get_raw_chunk(m);
    ASSERT_TRUE(raw && *raw);
    auto refs = probe.references(m, **raw);
    ASSERT_TRUE(refs) << refs.error().to_string();
    for (const transfer::ChunkRef& r : *refs) {
      if (r.kind == transfer::ChunkKind::kData) {
        data = r.id;
        break;
      }
      manifests.push_back(r.id);
    }
  }
  ASSERT_TRUE(data);
  CorruptFirstReadOf bad(*store_a_, {s.commit.tree, *data});
  Connect();
  ASSERT_TRUE(a_->offer(now_, bad, "p", s.id, 0));
  Pump();
  const ConnectionEvent* done = Last(events_b_);
  ASSERT_NE(done, nullptr);
  ASSERT_EQ(done->kind, Kind::kSessionDone) << done->error.to_string();
  EXPECT_EQ(bad.reads[s.commit.tree], 2);  // Fetched again...
  EXPECT_EQ(bad.reads[*data], 2);
  EXPECT_EQ(done->progress.chunks_refused, 2u);  // ...after being refused and counted.
  EXPECT_EQ(sinks_.back()->counters().chunks_refused, 2u);
  EXPECT_EQ(done->progress.chunks_transferred, ChunksOf(s));
  ExpectRestoresIdentical(s);
  ExpectVerifyClean();
}

// Damages every read: a sender whose disk holds bad copies.
class AlwaysCorruptSource final : public transfer::SyncSource {
 public:
  explicit AlwaysCorruptSource(SnapshotStore& store) : inner_(store) {}
  Result<Bytes> read(const ChunkId& id) override {
    auto bytes = inner_.read(id);
    if (bytes && !bytes->empty()) {
      bytes->back() ^= 0x01;
    }
    return bytes;
  }

 private:
  StoreSource inner_;
};

TEST_F(TransferStoreTest, ChunkDamagedEveryTimeFailsAsCorruptionAndCommitsNothing) {
  const SnapshotInfo s = Save("p", 5, 10);
  AlwaysCorruptSource bad(*store_a_);
  Connect();
  auto id = a_->offer(now_, bad, "p", s.id, 0);
  ASSERT_TRUE(id);
  Pump();
  const ConnectionEvent* failed = Last(events_b_);
  ASSERT_NE(failed, nullptr);
  ASSERT_EQ(failed->kind, Kind::kSessionFailed);
  EXPECT_EQ(failed->error.code, Code::kCorruption);
  EXPECT_EQ(sinks_.back()->counters().chunks_refused, 3u);  // chunk_attempts_max.
  EXPECT_EQ(sinks_.back()->counters().chunks_stored, 0u);
  EXPECT_FALSE(store_b_->find(to_hex(s.id), "p"));
}

TEST_F(TransferStoreTest, OfferUnderAnotherProjectNameIsRefused) {
  const SnapshotInfo s = Save("real", 7, 10);
  Connect();
  auto id = a_->offer(now_, *source_, "other", s.id, 0);
  ASSERT_TRUE(id);
  Pump();
  const ConnectionEvent* failed = Last(events_b_);
  ASSERT_EQ(failed->kind, Kind::kSessionFailed);
  EXPECT_EQ(failed->error.code, Code::kFailedPrecondition) << failed->error.to_string();
  auto listed = store_b_->list();
  ASSERT_TRUE(listed);
  EXPECT_TRUE(listed->empty());
}

TEST_F(TransferStoreTest, SinkRefusesWhileGcHoldsTheStoreAndSyncsAfterwards) {
  const SnapshotInfo s = Save("p", 8, 10);
  auto gc = internal::lock_file(store_b_->dir(), "gc", /*exclusive=*/true, /*blocking=*/true);
  ASSERT_TRUE(gc);
  Connect();
  Offer(s);
  Pump();
  const ConnectionEvent* failed = Last(events_b_);
  ASSERT_EQ(failed->kind, Kind::kSessionFailed);
  EXPECT_EQ(failed->error.code, Code::kUnavailable) << failed->error.to_string();
  internal::unlock_file(*gc);
  Offer(s);
  Pump();
  EXPECT_EQ(Last(events_b_)->kind, Kind::kSessionDone);
  ExpectRestoresIdentical(s);
}

TEST_F(TransferStoreTest, SyncConfigCarriesTheLargestStoredChunk) {
  EXPECT_EQ(store_sync_config().chunk_bytes_max, kStoredChunkBytesMax);
  EXPECT_GE(kStoredChunkBytesMax, std::uint64_t{kStoredChunkPlainMax});
}

}  // namespace
}  // namespace shoal::storage
