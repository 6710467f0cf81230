// Tests for transfer/chunk_sync.h against in-memory fake stores: full
// transfer, resume, damaged chunks, window bounds, commit rules, message
// decoding, and one run through a pair of secure channels.

#include "transfer/chunk_sync.h"

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "base/codec.h"
#include "tests/transfer/fake_store.h"
#include "transfer/secure_channel.h"

namespace shoal::transfer {
namespace {

using test_support::FakeStore;

// What a pump step may do to a message in flight.
enum class Verdict { kDeliver, kDrop, kStop };

class SyncTest : public ::testing::Test {
 protected:
  SyncTest() {
    config_.window_chunks = 8;
    config_.get_batch = 3;
    config_.piece_bytes = 1000;  // Chunks up to 3 KB travel in several pieces.
    config_.missing_batch = 5;
  }

  // A snapshot: root -> dirs -> (files, and a nested dir). One chunk is
  // shared by every directory to exercise deduplication. Returns the root.
  ChunkId BuildSnapshot(FakeStore& store, int dirs, int files, std::uint8_t salt) {
    const ChunkId shared = store.AddData(1500, 0xee);
    std::vector<ChunkRef> top;
    for (int d = 0; d < dirs; ++d) {
      std::vector<ChunkRef> entries;
      for (int f = 0; f < files; ++f) {
        const std::size_t size = 1 + static_cast<std::size_t>((d * 7919 + f * 104729) % 3000);
        entries.push_back({store.AddData(size, static_cast<std::uint8_t>(salt + d * files + f)), ChunkKind::kData});
      }
      entries.push_back({shared, ChunkKind::kData});
      const ChunkId nested = store.AddManifest({{store.AddData(10, static_cast<std::uint8_t>(salt + d)),
                                                 ChunkKind::kData}});
      entries.push_back({nested, ChunkKind::kManifest});
      top.push_back({store.AddManifest(entries), ChunkKind::kManifest});
    }
    return store.AddManifest(top);
  }

  void Start(const ChunkId& snapshot, std::uint64_t session = 7) {
    sender_ = std::make_unique<SyncSender>(config_, source_, session, "project-p", snapshot, 0, now_);
    receiver_ = std::make_unique<SyncReceiver>(config_, sink_, now_);
  }

  // Moves messages until both sides are quiet. The filter sees every message
  // (from_sender tells the direction) and may drop it or stop the run there.
  // Also checks the window: ids requested minus chunks answered.
  void Pump(const std::function<Verdict(bool from_sender, SyncMessage&)>& filter = nullptr) {
    for (int step = 0; step < 100000; ++step) {
      bool moved = false;
      while (auto bytes = sender_->poll_message(now_)) {
        moved = true;
        now_ += milliseconds(1);
        auto m = decode_sync_message(*bytes);
        ASSERT_TRUE(m) << m.error().message;
        if (m->type == SyncMessageType::kChunk) {
          ++chunk_messages_;
          if (m->offset + m->data.size() == m->total) {
            --outstanding_;
          }
        }
        const Verdict v = filter ? filter(true, *m) : Verdict::kDeliver;
        if (v == Verdict::kStop) {
          return;
        }
        if (v == Verdict::kDeliver) {
          receiver_->on_message(now_, encode_sync_message(*m));
        }
      }
      while (auto bytes = receiver_->poll_message(now_)) {
        moved = true;
        auto m = decode_sync_message(*bytes);
        ASSERT_TRUE(m) << m.error().message;
        if (m->type == SyncMessageType::kGet) {
          outstanding_ += static_cast<int>(m->ids.size());
          outstanding_max_ = std::max(outstanding_max_, outstanding_);
        }
        const Verdict v = filter ? filter(false, *m) : Verdict::kDeliver;
        if (v == Verdict::kStop) {
          return;
        }
        if (v == Verdict::kDeliver) {
          sender_->on_message(now_, encode_sync_message(*m));
        }
      }
      if (!moved) {
        return;
      }
    }
    FAIL() << "pump did not settle";
  }

  std::size_t Distinct(const ChunkId& root) { return source_.Closure(root).size(); }
  std::uint64_t StoredBytes(const ChunkId& root) {
    std::uint64_t total = 0;
    for (const ChunkId& id : source_.Closure(root)) {
      total += source_.chunks.at(id).size();
    }
    return total;
  }

  SyncConfig config_;
  FakeStore source_;
  FakeStore sink_;
  Instant now_ = instant_from_us(1'000'000);
  std::unique_ptr<SyncSender> sender_;
  std::unique_ptr<SyncReceiver> receiver_;
  int outstanding_ = 0;
  int outstanding_max_ = 0;
  int chunk_messages_ = 0;
};

TEST_F(SyncTest, FullTransferCopiesEveryChunkOnceAndCommits) {
  const ChunkId root = BuildSnapshot(source_, 6, 5, 1);
  Start(root);
  Pump();
  ASSERT_EQ(receiver_->state(), SyncState::kDone) << receiver_->error().to_string();
  ASSERT_EQ(sender_->state(), SyncState::kDone) << sender_->error().to_string();
  EXPECT_TRUE(sink_.committed.contains(root));
  EXPECT_EQ(sink_.commit_calls, 1);
  for (const ChunkId& id : source_.Closure(root)) {
    EXPECT_EQ(sink_.chunks.at(id), source_.chunks.at(id));
  }
  // The shared chunk is referenced six times and fetched once.
  EXPECT_EQ(sender_->progress().chunks_transferred, Distinct(root));
  EXPECT_EQ(receiver_->progress().chunks_transferred, Distinct(root));
  EXPECT_EQ(receiver_->progress().chunks_requested, Distinct(root));
  EXPECT_EQ(receiver_->progress().bytes_transferred, StoredBytes(root));
  EXPECT_EQ(receiver_->progress().chunks_wanted, Distinct(root));
  EXPECT_TRUE(receiver_->progress().walk_complete);
  EXPECT_EQ(receiver_->progress().manifests_walked, 1u + 6 + 6);
  EXPECT_GT(chunk_messages_, static_cast<int>(Distinct(root)));  // Big chunks went in pieces.
  EXPECT_EQ(outstanding_, 0);
}

TEST_F(SyncTest, WindowIsNeverExceeded) {
  const ChunkId root = BuildSnapshot(source_, 10, 8, 2);
  Start(root);
  Pump();
  ASSERT_EQ(receiver_->state(), SyncState::kDone);
  EXPECT_EQ(outstanding_max_, static_cast<int>(config_.window_chunks));
  EXPECT_EQ(receiver_->progress().in_flight_max, config_.window_chunks);
}

TEST_F(SyncTest, ReceiverStopsAskingWhenTheWindowIsFullUntilDataArrives) {
  const ChunkId root = BuildSnapshot(source_, 1, 30, 3);
  ASSERT_TRUE(sink_.put(root, source_.chunks.at(root)));  // Root and its dir already here,
  const ChunkId dir = source_.references(root, source_.chunks.at(root))->front().id;
  ASSERT_TRUE(sink_.put(dir, source_.chunks.at(dir)));  // so the walk finds 30+ data chunks.
  Start(root);
  receiver_->on_message(now_, *sender_->poll_message(now_));  // The offer.
  std::size_t requested = 0;
  while (auto bytes = receiver_->poll_message(now_)) {
    auto get = decode_sync_message(*bytes);
    ASSERT_TRUE(get);
    ASSERT_EQ(get->type, SyncMessageType::kGet);
    requested += get->ids.size();
    sender_->on_message(now_, *get);
  }
  EXPECT_EQ(requested, config_.window_chunks);
  EXPECT_EQ(source_.reads, 0);  // Backpressure at the sender: nothing read until polled.
  // One whole chunk arrives: exactly one more id may be asked for.
  const int reads_before = source_.reads;
  while (receiver_->in_flight() == config_.window_chunks) {
    receiver_->on_message(now_, *sender_->poll_message(now_));
  }
  EXPECT_EQ(source_.reads, reads_before + 1);  // The sender held one chunk at a time.
  auto more = receiver_->poll_message(now_);
  ASSERT_TRUE(more);
  EXPECT_EQ(decode_sync_message(*more)->ids.size(), 1u);
  EXPECT_FALSE(receiver_->poll_message(now_));
}

TEST_F(SyncTest, NoChangeTransferSendsNothing) {
  const ChunkId root = BuildSnapshot(source_, 3, 3, 4);
  Start(root);
  Pump();
  ASSERT_EQ(receiver_->state(), SyncState::kDone);
  const int reads = source_.reads;
  Start(root, 8);
  Pump();
  EXPECT_EQ(receiver_->state(), SyncState::kDone);
  EXPECT_EQ(sender_->state(), SyncState::kDone);
  EXPECT_TRUE(receiver_->progress().snapshot_already_held);
  EXPECT_EQ(sender_->progress().chunks_transferred, 0u);
  EXPECT_EQ(source_.reads, reads);
  EXPECT_EQ(sink_.commit_calls, 1);  // Nothing to commit the second time.
}

TEST_F(SyncTest, ResumeAfterInterruptionSendsOnlyWhatIsMissing) {
  const ChunkId root = BuildSnapshot(source_, 8, 6, 5);
  const std::size_t total = Distinct(root);
  Start(root);
  int completed = 0;
  Pump([&](bool from_sender, SyncMessage& m) {
    if (from_sender && m.type == SyncMessageType::kChunk && m.offset + m.data.size() == m.total) {
      if (++completed == 25) {
        return Verdict::kStop;  // The connection drops with this chunk's last piece lost.
      }
    }
    return Verdict::kDeliver;
  });
  EXPECT_EQ(receiver_->state(), SyncState::kActive);
  EXPECT_EQ(sink_.commit_calls, 0);
  EXPECT_FALSE(sink_.committed.contains(root));
  const std::size_t held = static_cast<std::size_t>(sink_.puts);
  EXPECT_EQ(held, 24u);

  Start(root, 9);  // A new connection, a new session, the same receiver store.
  Pump();
  ASSERT_EQ(receiver_->state(), SyncState::kDone) << receiver_->error().to_string();
  EXPECT_TRUE(sink_.committed.contains(root));
  EXPECT_EQ(sender_->progress().chunks_transferred, total - held);
  EXPECT_EQ(receiver_->progress().chunks_wanted, total - held);
  EXPECT_GE(receiver_->progress().chunks_already_held, held);
  EXPECT_EQ(sink_.puts, static_cast<int>(total));
}

TEST_F(SyncTest, EverythingPresentButUncommittedCommitsWithoutTransfer) {
  const ChunkId root = BuildSnapshot(source_, 4, 4, 18);
  for (const ChunkId& id : source_.Closure(root)) {
    sink_.chunks[id] = source_.chunks.at(id);  // A crash after the last chunk, before commit.
  }
  Start(root);
  Pump();
  ASSERT_EQ(receiver_->state(), SyncState::kDone) << receiver_->error().to_string();
  EXPECT_FALSE(receiver_->progress().snapshot_already_held);
  EXPECT_EQ(sender_->progress().chunks_transferred, 0u);
  EXPECT_EQ(receiver_->progress().chunks_wanted, 0u);
  EXPECT_EQ(receiver_->progress().manifests_walked, 1u + 4 + 4);
  EXPECT_TRUE(sink_.committed.contains(root));
}

TEST_F(SyncTest, DamagedChunkIsRefusedCountedAndFetchedAgain) {
  const ChunkId root = BuildSnapshot(source_, 4, 4, 6);
  Start(root);
  bool damaged = false;
  Pump([&](bool from_sender, SyncMessage& m) {
    if (from_sender && !damaged && m.type == SyncMessageType::kChunk && m.id != root && m.offset > 0) {
      m.data[m.data.size() / 2] ^= 0x01;  // A bit flipped in a store or in memory, past the channel.
      damaged = true;
    }
    return Verdict::kDeliver;
  });
  ASSERT_TRUE(damaged);
  ASSERT_EQ(receiver_->state(), SyncState::kDone) << receiver_->error().to_string();
  EXPECT_EQ(receiver_->progress().chunks_refused, 1u);
  EXPECT_EQ(sink_.refused, 1);
  EXPECT_EQ(sender_->progress().chunks_transferred, Distinct(root) + 1);
  EXPECT_EQ(receiver_->progress().chunks_transferred, Distinct(root));
  for (const ChunkId& id : source_.Closure(root)) {
    EXPECT_EQ(sink_.chunks.at(id), source_.chunks.at(id));
  }
  EXPECT_TRUE(sink_.committed.contains(root));
}

TEST_F(SyncTest, ChunkDamagedEveryTimeFailsAsCorruptionWithoutCommit) {
  const ChunkId root = BuildSnapshot(source_, 2, 2, 7);
  const ChunkId target = *std::next(source_.Closure(root).begin(), 2);
  Start(root);
  Pump([&](bool from_sender, SyncMessage& m) {
    if (from_sender && m.type == SyncMessageType::kChunk && m.id == target && !m.data.empty()) {
      m.data[0] ^= 0x40;
    }
    return Verdict::kDeliver;
  });
  EXPECT_EQ(receiver_->state(), SyncState::kFailed);
  EXPECT_EQ(receiver_->error().code, Code::kCorruption);
  EXPECT_EQ(receiver_->progress().chunks_refused, config_.chunk_attempts_max);
  EXPECT_EQ(sender_->state(), SyncState::kFailed);  // Told by the receiver's kEnd.
  EXPECT_EQ(sender_->error().code, Code::kCorruption);
  EXPECT_EQ(sink_.commit_calls, 0);
  EXPECT_FALSE(sink_.chunks.contains(target));
}

TEST_F(SyncTest, CommitHappensOnlyAfterTheLastChunk) {
  const ChunkId root = BuildSnapshot(source_, 3, 4, 8);
  const std::size_t total = Distinct(root);
  Start(root);
  int commits_seen_early = 0;
  Pump([&](bool, SyncMessage&) {
    if (sink_.commit_calls > 0 && sink_.puts != static_cast<int>(total)) {
      ++commits_seen_early;
    }
    return Verdict::kDeliver;
  });
  EXPECT_EQ(commits_seen_early, 0);
  EXPECT_EQ(sink_.commit_calls, 1);
  EXPECT_EQ(sink_.puts, static_cast<int>(total));
}

TEST_F(SyncTest, SenderMissingAChunkFailsAsNotFound) {
  const ChunkId root = BuildSnapshot(source_, 2, 3, 9);
  const ChunkId lost = source_.AddData(2000, 0x33);
  const ChunkId broken_root = source_.AddManifest({{root, ChunkKind::kManifest}, {lost, ChunkKind::kData}});
  source_.chunks.erase(lost);
  Start(broken_root);
  Pump();
  EXPECT_EQ(receiver_->state(), SyncState::kFailed);
  EXPECT_EQ(receiver_->error().code, Code::kNotFound);
  EXPECT_EQ(sink_.commit_calls, 0);
}

TEST_F(SyncTest, ChunkAboveTheSizeLimitIsRefused) {
  config_.chunk_bytes_max = 2000;
  const ChunkId big = source_.AddData(2500, 1);
  const ChunkId root = source_.AddManifest({{big, ChunkKind::kData}});
  SyncConfig sender_config = config_;
  sender_config.chunk_bytes_max = 1 << 20;  // A peer with another limit.
  sender_ = std::make_unique<SyncSender>(sender_config, source_, 3, "p", root, 0, now_);
  receiver_ = std::make_unique<SyncReceiver>(config_, sink_, now_);
  Pump();
  EXPECT_EQ(receiver_->state(), SyncState::kFailed);
  EXPECT_EQ(receiver_->error().code, Code::kAborted);
  EXPECT_LE(receiver_->assembly_bytes(), config_.chunk_bytes_max);
  EXPECT_FALSE(sink_.chunks.contains(big));
}

TEST_F(SyncTest, PieceForAChunkNotRequestedAbortsTheExchange) {
  const ChunkId root = BuildSnapshot(source_, 1, 1, 10);
  Start(root);
  receiver_->on_message(now_, *sender_->poll_message(now_));
  SyncMessage forged{.type = SyncMessageType::kChunk, .session = 7, .id = blake2b_256(as_bytes("x"))};
  forged.total = 1;
  forged.data = {1};
  receiver_->on_message(now_, forged);
  EXPECT_EQ(receiver_->state(), SyncState::kFailed);
  EXPECT_EQ(receiver_->error().code, Code::kAborted);
  auto end = receiver_->poll_message(now_);
  ASSERT_TRUE(end);
  EXPECT_EQ(decode_sync_message(*end)->type, SyncMessageType::kEnd);
}

TEST_F(SyncTest, RequestsBeyondTheProtocolWindowAbortTheSender) {
  const ChunkId root = BuildSnapshot(source_, 1, 1, 11);
  Start(root);
  (void)sender_->poll_message(now_);
  SyncMessage get{.type = SyncMessageType::kGet, .session = 7};
  get.ids.assign(kGetIdsMax, root);
  sender_->on_message(now_, get);
  EXPECT_EQ(sender_->state(), SyncState::kActive);
  get.ids.assign(1, root);
  sender_->on_message(now_, get);
  EXPECT_EQ(sender_->state(), SyncState::kFailed);
  EXPECT_EQ(sender_->error().code, Code::kAborted);
}

TEST_F(SyncTest, WrongSessionIsRefused) {
  const ChunkId root = BuildSnapshot(source_, 1, 1, 12);
  Start(root);
  receiver_->on_message(now_, *sender_->poll_message(now_));
  receiver_->on_message(now_, SyncMessage{.type = SyncMessageType::kEnd, .session = 99, .code = Code::kAborted});
  EXPECT_EQ(receiver_->error().code, Code::kAborted);
}

TEST_F(SyncTest, StalledSenderTimesOut) {
  const ChunkId root = BuildSnapshot(source_, 1, 3, 13);
  Start(root);
  receiver_->on_message(now_, *sender_->poll_message(now_));
  ASSERT_TRUE(receiver_->poll_message(now_));  // A kGet the sender never answers.
  ASSERT_TRUE(receiver_->next_deadline());
  EXPECT_EQ(*receiver_->next_deadline(), now_ + config_.stall_timeout);
  receiver_->on_timer(now_ + config_.stall_timeout);
  EXPECT_EQ(receiver_->error().code, Code::kDeadlineExceeded);
}

TEST_F(SyncTest, ProgressReportsRateAndEta) {
  const ChunkId root = BuildSnapshot(source_, 10, 10, 14);
  Start(root);
  bool saw_eta = false;
  Pump([&](bool, SyncMessage&) {
    now_ += milliseconds(20);
    if (receiver_->progress().eta && receiver_->state() == SyncState::kActive) {
      saw_eta = true;
    }
    return Verdict::kDeliver;
  });
  ASSERT_EQ(receiver_->state(), SyncState::kDone);
  EXPECT_TRUE(saw_eta);
  EXPECT_GT(receiver_->progress().bytes_per_second, 0);
  EXPECT_GT(sender_->progress().bytes_per_second, 0);
  EXPECT_EQ(receiver_->progress().eta, Duration(0));
}

TEST(SyncRateMeterTest, MeasuresOverTheRecentWindow) {
  RateMeter meter;
  Instant t = instant_from_us(0);
  meter.start(t);
  std::uint64_t total = 0;
  for (int i = 0; i < 20; ++i) {
    t += seconds(1);
    total += i < 10 ? 1000 : 4000;
    meter.update(t, total);
  }
  EXPECT_DOUBLE_EQ(meter.bytes_per_second(), 4000.0);  // The slow start has left the window.
}

// Random, well-formed but hostile message sequences: every outcome must be an
// error value (or progress), never a crash, a commit of an incomplete
// snapshot, or memory beyond the configured chunk bound.
TEST_F(SyncTest, HostileMessageSequencesNeverCrashOrCommitEarly) {
  const ChunkId root = BuildSnapshot(source_, 2, 3, 17);
  const std::set<ChunkId> closure = source_.Closure(root);
  std::vector<ChunkId> pool(closure.begin(), closure.end());
  pool.push_back(blake2b_256(as_bytes("stranger")));
  int runs_that_stored = 0;
  for (std::uint64_t seed = 1; seed <= 300; ++seed) {
    Prng r(seed);
    FakeStore sink;
    SyncReceiver receiver(config_, sink, now_);
    SyncSender sender(config_, source_, 5, "p", root, 0, now_);
    receiver.on_message(now_, SyncMessage{.type = SyncMessageType::kOffer, .session = 5, .project = "p", .id = root});
    std::vector<ChunkId> requested;  // What the receiver asked for: hostile pieces aim there.
    for (int i = 0; i < 60; ++i) {
      while (auto out = receiver.poll_message(now_)) {
        auto get = decode_sync_message(*out);
        ASSERT_TRUE(get);
        requested.insert(requested.end(), get->ids.begin(), get->ids.end());
      }
      SyncMessage m;
      m.type = r.chance(0.6) ? SyncMessageType::kChunk : static_cast<SyncMessageType>(1 + r.uniform(5));
      m.session = r.chance(0.95) ? 5 : r.next_u64();
      m.id = !requested.empty() && r.chance(0.7) ? requested[r.uniform(requested.size())] : pool[r.uniform(pool.size())];
      for (std::uint64_t n = 1 + r.uniform(4); n > 0; --n) {
        m.ids.push_back(pool[r.uniform(pool.size())]);
      }
      const bool honest = source_.chunks.contains(m.id) && r.chance(0.6);
      if (honest) {  // A real chunk, whole or in part, sometimes damaged.
        const Bytes& real = source_.chunks.at(m.id);
        m.total = real.size();
        m.offset = r.chance(0.7) ? 0 : r.uniform(m.total + 1);
        m.data.assign(real.begin() + static_cast<std::ptrdiff_t>(m.offset), real.end());
        if (!m.data.empty() && r.chance(0.2)) {
          m.data[r.uniform(m.data.size())] ^= 1;
        }
      } else {
        m.total = r.uniform(4000);
        m.offset = r.chance(0.5) ? 0 : r.uniform(m.total + 1);
        m.data.assign(std::min<std::uint64_t>(m.total - m.offset, r.uniform(1500)), 0xab);
      }
      m.code = static_cast<Code>(r.uniform(static_cast<std::uint64_t>(Code::kInternal) + 1));
      receiver.on_message(now_, encode_sync_message(m));
      sender.on_message(now_, encode_sync_message(m));
      for (int k = 0; k < 5 && sender.poll_message(now_); ++k) {
      }
      ASSERT_LE(receiver.assembly_bytes(), config_.chunk_bytes_max);
      ASSERT_LE(receiver.in_flight(), config_.window_chunks);
      ASSERT_LE(sender.requests_queued(), kWindowChunksMax);
    }
    runs_that_stored += sink.puts > 0 ? 1 : 0;
    // Whatever happened, a commit means the whole snapshot is really there.
    if (sink.commit_calls > 0 && sink.committed.contains(root)) {
      for (const ChunkId& id : source_.Closure(root)) {
        EXPECT_TRUE(sink.chunks.contains(id)) << "seed " << seed;
      }
    }
    for (const auto& [id, bytes] : sink.chunks) {
      EXPECT_EQ(blake2b_256(bytes), id) << "seed " << seed;
    }
  }
  EXPECT_GT(runs_that_stored, 30);  // The sequences reach the store, not only the first check.
}

// ---- Messages ----

TEST(SyncMessageTest, EveryTypeRoundTrips) {
  const ChunkId id = blake2b_256(as_bytes("id"));
  std::vector<SyncMessage> messages;
  messages.push_back({.type = SyncMessageType::kOffer, .session = 1, .project = "p", .id = id, .size_hint = 99});
  SyncMessage get{.type = SyncMessageType::kGet, .session = 2};
  get.ids = {id, id};
  messages.push_back(get);
  SyncMessage chunk{.type = SyncMessageType::kChunk, .session = 3, .id = id};
  chunk.total = 10;
  chunk.offset = 4;
  chunk.data = {1, 2, 3};
  messages.push_back(chunk);
  messages.push_back({.type = SyncMessageType::kMissing, .session = 4, .id = id});
  messages.push_back({.type = SyncMessageType::kEnd, .session = 5, .code = Code::kCorruption, .text = "bad"});
  for (const SyncMessage& m : messages) {
    const Bytes bytes = encode_sync_message(m);
    auto back = decode_sync_message(bytes);
    ASSERT_TRUE(back) << back.error().message;
    EXPECT_EQ(back->type, m.type);
    EXPECT_EQ(back->session, m.session);
    EXPECT_EQ(back->id, m.id);
    EXPECT_EQ(back->ids, m.ids);
    EXPECT_EQ(back->data, m.data);
    EXPECT_EQ(back->code, m.code);
    EXPECT_EQ(peek_sync_session(bytes), m.session);
    // Every strict prefix is refused.
    for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
      EXPECT_FALSE(decode_sync_message(ByteView(bytes).first(cut))) << "cut " << cut;
    }
  }
}

TEST(SyncMessageTest, LimitsAndUnknownTypesAreRefused) {
  Encoder unknown;
  unknown.array(2).u64(42).u64(1);
  EXPECT_FALSE(decode_sync_message(unknown.take()));

  Encoder empty_get;
  empty_get.array(3).u64(2).u64(1).array(0);
  EXPECT_FALSE(decode_sync_message(empty_get.take()));

  Encoder big_get;
  big_get.array(3).u64(2).u64(1).array(kGetIdsMax + 1);
  const ChunkId id{};
  for (std::size_t i = 0; i < kGetIdsMax + 1; ++i) {
    big_get.bin(id);
  }
  EXPECT_FALSE(decode_sync_message(big_get.take()));

  Encoder past_end;  // offset + data beyond total.
  past_end.array(6).u64(3).u64(1).bin(id).u64(2).u64(1).bin(Bytes{1, 2});
  EXPECT_FALSE(decode_sync_message(past_end.take()));

  Encoder bad_code;
  bad_code.array(4).u64(5).u64(1).u64(1000).str("x");
  EXPECT_FALSE(decode_sync_message(bad_code.take()));

  Encoder trailing;
  trailing.array(4).u64(4).u64(1).bin(id).u64(0);
  EXPECT_FALSE(decode_sync_message(trailing.take()));
}

TEST(SyncMessageTest, LargestMessagesFitOneFrame) {
  SyncMessage chunk{.type = SyncMessageType::kChunk, .session = UINT64_MAX};
  chunk.data.assign(kChunkPieceBytesMax, 0xff);
  chunk.total = kSyncChunkBytesMax;
  chunk.offset = kSyncChunkBytesMax - kChunkPieceBytesMax;
  EXPECT_LE(encode_sync_message(chunk).size(), kMessageBytesMax);
  SyncMessage get{.type = SyncMessageType::kGet, .session = UINT64_MAX};
  get.ids.assign(kGetIdsMax, ChunkId{});
  EXPECT_LE(encode_sync_message(get).size(), kGetMessageBytesMax);
}

// The in-place decoder and the split encoder must agree byte for byte with
// the general ones, and refuse exactly what decode_sync_message refuses.
TEST(SyncMessageTest, ChunkHeadAndInPlaceDecodeMatchTheGeneralCodec) {
  const ChunkId id = blake2b_256(as_bytes("piece"));
  for (const std::size_t size : {0ul, 1ul, 255ul, 256ul, 65535ul, 65536ul, kChunkPieceBytesMax}) {
    for (const std::uint64_t session : {std::uint64_t{1}, std::uint64_t{200}, std::uint64_t{1} << 40, UINT64_MAX}) {
      SyncMessage m{.type = SyncMessageType::kChunk, .session = session, .id = id};
      m.data.resize(size);
      for (std::size_t i = 0; i < size; ++i) {
        m.data[i] = static_cast<std::uint8_t>(i * 7);
      }
      m.offset = size == 0 ? 0 : 3;
      m.total = m.offset + size + 1000;
      const Bytes whole = encode_sync_message(m);
      Bytes split = encode_chunk_head(session, id, m.total, m.offset, size);
      split.insert(split.end(), m.data.begin(), m.data.end());
      ASSERT_EQ(split, whole) << "size " << size;
      auto view = decode_sync_message_view(whole);
      ASSERT_TRUE(view) << view.error().message;
      EXPECT_TRUE(view->data.empty());  // Not copied...
      EXPECT_EQ(view->piece().data(), whole.data() + (whole.size() - size));  // ...but pointing into the input.
      EXPECT_TRUE(std::ranges::equal(view->piece(), m.data));
      EXPECT_EQ(std::tuple(view->type, view->session, view->id, view->total, view->offset),
                std::tuple(m.type, m.session, m.id, m.total, m.offset));
      if (size <= 256) {
        for (std::size_t cut = 0; cut < whole.size(); ++cut) {
          EXPECT_FALSE(decode_sync_message_view(ByteView(whole).first(cut))) << "cut " << cut;
        }
      }
    }
  }
  // Valid but not minimal (a u64 written in 9 bytes): the general decoder takes it.
  Encoder e;
  e.array(6).u64(3).u64(1).bin(id).u64(10).u64(0);
  Bytes odd = e.take();
  odd.push_back(0xc4);
  odd.push_back(2);
  odd.push_back(5);
  odd.push_back(6);
  odd[1] = 0xcf;  // type 3 as a uint64 ...
  odd.insert(odd.begin() + 2, {0, 0, 0, 0, 0, 0, 0, 3});
  ASSERT_EQ(odd[9], 3);  // ... = cf 00 00 00 00 00 00 00 03.
  auto general = decode_sync_message(odd);
  auto fast = decode_sync_message_view(odd);
  ASSERT_EQ(general.has_value(), fast.has_value());
  if (fast) {
    EXPECT_TRUE(std::ranges::equal(fast->piece(), Bytes{5, 6}));
  }
  // Refused by both: piece past the total, trailing byte, oversize piece.
  Encoder past;
  past.array(6).u64(3).u64(1).bin(id).u64(2).u64(1).bin(Bytes{1, 2});
  EXPECT_FALSE(decode_sync_message_view(past.take()));
  Bytes trailing = encode_sync_message(SyncMessage{.type = SyncMessageType::kChunk, .session = 1, .id = id,
                                                   .total = 1, .data = {9}});
  trailing.push_back(0);
  EXPECT_FALSE(decode_sync_message_view(trailing));
  Encoder big;
  big.array(6).u64(3).u64(1).bin(id).u64(kSyncChunkBytesMax).u64(0).bin(Bytes(kChunkPieceBytesMax + 1, 0));
  EXPECT_FALSE(decode_sync_message_view(big.take()));
}

TEST(SyncMessageTest, SenderPartsAreTheMessage) {
  FakeStore source;
  Bytes chunk(300 * 1024);
  for (std::size_t i = 0; i < chunk.size(); ++i) {
    chunk[i] = static_cast<std::uint8_t>(i * 13);
  }
  const ChunkId id = blake2b_256(chunk);
  source.chunks[id] = chunk;
  SyncConfig config;
  SyncSender a(config, source, 7, "p", id, 0, Instant{});
  SyncSender b(config, source, 7, "p", id, 0, Instant{});
  SyncMessage get{.type = SyncMessageType::kGet, .session = 7};
  get.ids = {id};
  a.on_message(Instant{}, get);
  b.on_message(Instant{}, get);
  Bytes assembled;
  for (int i = 0; i < 5; ++i) {  // OFFER, then three pieces, then nothing.
    auto whole = a.poll_message(Instant{});
    auto parts = b.poll_parts(Instant{});
    ASSERT_EQ(whole.has_value(), parts.has_value());
    if (!whole) {
      break;
    }
    Bytes joined = parts->head;
    joined.insert(joined.end(), parts->body.begin(), parts->body.end());
    EXPECT_EQ(joined, *whole);
    auto m = decode_sync_message_view(joined);
    ASSERT_TRUE(m);
    if (m->type == SyncMessageType::kChunk) {
      assembled.insert(assembled.end(), m->piece().begin(), m->piece().end());
    }
  }
  EXPECT_EQ(assembled, chunk);
}

// ---- Through a pair of secure channels ----

class ChannelSyncTest : public SyncTest {
 protected:
  ChannelSyncTest() {
    crypto_init();
    config_.piece_bytes = kChunkPieceBytesMax;
  }

  struct Outcome {
    ChannelState sender_channel;
    ChannelState receiver_channel;
    FailReason receiver_fail = FailReason::kNone;
  };

  // Runs the current sender/receiver pair over two fresh channels, as the
  // adapter will: pull sync messages only while the transmit buffer is small,
  // abort both sessions when a channel fails. `tamper` sees every byte
  // buffer from sender to receiver and may change it.
  Outcome RunOverChannels(const std::function<void(Bytes&)>& tamper = nullptr) {
    ChannelConfig ca;
    ca.role = ChannelRole::kInitiator;
    ca.keyring = Keyring(key_);
    ca.expected_peer_key = b_.public_key();
    ca.rekey_frames = 10;
    ChannelConfig cb = ca;
    cb.role = ChannelRole::kResponder;
    cb.expected_peer_key = a_.public_key();
    SecureChannel channel_a(ca, a_, rng_, now_, &metrics_);
    SecureChannel channel_b(cb, b_, rng_, now_, &metrics_);
    for (int step = 0; step < 100000; ++step) {
      bool moved = false;
      if (channel_a.established()) {
        while (channel_a.transmit_bytes() < 64 * 1024) {
          auto m = sender_->poll_message(now_);
          if (!m) {
            break;
          }
          EXPECT_TRUE(channel_a.send(now_, *m));
        }
        while (auto m = channel_a.poll_message()) {
          sender_->on_message(now_, *m);
        }
      }
      if (channel_b.established()) {
        while (auto m = channel_b.poll_message()) {
          receiver_->on_message(now_, *m);
        }
        while (auto m = receiver_->poll_message(now_)) {
          EXPECT_TRUE(channel_b.send(now_, *m));
        }
      }
      while (auto tx = channel_a.poll_transmit()) {
        moved = true;
        if (tamper) {
          tamper(*tx);
        }
        channel_b.on_bytes(now_, *tx);
      }
      while (auto tx = channel_b.poll_transmit()) {
        moved = true;
        channel_a.on_bytes(now_, *tx);
      }
      const Error dropped{Code::kAborted, "connection dropped"};
      if (channel_b.state() == ChannelState::kFailed || channel_a.state() == ChannelState::kFailed) {
        receiver_->abort(now_, dropped);  // The socket is gone: nothing more reaches the peer.
        sender_->abort(now_, dropped);
        break;
      }
      if (!moved && sender_->state() != SyncState::kActive) {
        break;
      }
    }
    return Outcome{channel_a.state(), channel_b.state(), channel_b.fail_reason()};
  }

  Prng rng_{3};
  Identity a_ = Identity::generate(rng_);
  Identity b_ = Identity::generate(rng_);
  ClusterKey key_ = generate_cluster_key(rng_);
  ChannelMetrics metrics_;
};

TEST_F(ChannelSyncTest, TransferRunsThroughSecureChannels) {
  const ChunkId root = BuildSnapshot(source_, 5, 5, 15);
  Start(root);
  const Outcome outcome = RunOverChannels();
  EXPECT_EQ(receiver_->state(), SyncState::kDone) << receiver_->error().to_string();
  EXPECT_EQ(sender_->state(), SyncState::kDone) << sender_->error().to_string();
  EXPECT_TRUE(sink_.committed.contains(root));
  EXPECT_GT(metrics_.rekeys, 0u);
  EXPECT_EQ(outcome.sender_channel, ChannelState::kEstablished);
}

TEST_F(ChannelSyncTest, ByteFlippedInFlightDropsTheConnectionAndTheTransferResumes) {
  const ChunkId root = BuildSnapshot(source_, 8, 8, 16);
  const std::size_t total = Distinct(root);
  Start(root);
  std::size_t seen = 0;
  const Outcome first = RunOverChannels([&](Bytes& bytes) {
    const std::size_t flip_at = 60'000;  // About a third of the way through the snapshot.
    if (seen <= flip_at && flip_at < seen + bytes.size()) {
      bytes[flip_at - seen] ^= 0x04;
    }
    seen += bytes.size();
  });
  EXPECT_EQ(first.receiver_channel, ChannelState::kFailed);
  EXPECT_EQ(first.receiver_fail, FailReason::kDecryptFailed);
  EXPECT_EQ(receiver_->state(), SyncState::kFailed);
  EXPECT_EQ(sink_.commit_calls, 0);
  EXPECT_EQ(sink_.refused, 0);  // The channel caught it: nothing damaged reached the store.
  const std::size_t held = static_cast<std::size_t>(sink_.puts);
  ASSERT_GT(held, 0u);
  ASSERT_LT(held, total);
  for (const auto& [id, bytes] : sink_.chunks) {
    EXPECT_EQ(blake2b_256(bytes), id);
  }

  Start(root, 21);  // New connection, new session.
  const Outcome second = RunOverChannels();
  EXPECT_EQ(second.receiver_channel, ChannelState::kEstablished);
  ASSERT_EQ(receiver_->state(), SyncState::kDone) << receiver_->error().to_string();
  EXPECT_EQ(sender_->progress().chunks_transferred, total - held);
  EXPECT_TRUE(sink_.committed.contains(root));
}

}  // namespace
}  // namespace shoal::transfer
