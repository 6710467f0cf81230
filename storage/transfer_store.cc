// storage/transfer_store.cc: the snapshot store behind chunk sync's
// SyncSource and SyncSink (see the header for the contracts).

#include "storage/transfer_store.h"

#include "base/assert.h"
#include "storage/snapshot_internal.h"

namespace shoal::storage {

transfer::SyncConfig store_sync_config() {
  transfer::SyncConfig config;
  config.chunk_bytes_max = kStoredChunkBytesMax;
  return config;
}

Result<Bytes> StoreSource::read(const ChunkId& id) {
  auto raw = store_.get_raw_chunk(id);
  if (!raw) {
    return std::unexpected(raw.error());
  }
  if (!*raw) {
    return make_error(Code::kNotFound, "chunk " + to_hex(id).substr(0, 16) + " is not stored here");
  }
  return std::move(**raw);
}

StoreSink::StoreSink(SnapshotStore& store, std::string project, const ChunkId& snapshot, CommitCheck check)
    : store_(store), project_(std::move(project)), snapshot_(snapshot), check_(std::move(check)) {}

StoreSink::~StoreSink() {
  // Verified chunks are worth keeping for the next attempt; a failure here
  // only means they are fetched again. Unverified ones are dropped.
  stop_verifier();
  (void)absorb();
  (void)flush();
}

void StoreSink::stop_verifier() {
  if (!verifier_.joinable()) {
    return;
  }
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    queue_.clear();
    queue_bytes_ = 0;
  }
  cv_.notify_all();
  verifier_.join();
}

void StoreSink::verifier_loop() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) {
      return;
    }
    auto [id, bytes] = std::move(queue_.front());
    queue_.pop_front();
    queue_bytes_ -= bytes.size();
    lock.unlock();
    const bool ok = decode_chunk(bytes, id).has_value();  // Pure: no store, no shared state.
    lock.lock();
    pending_.erase(id);
    --verifying_;
    if (ok) {
      verified_.emplace_back(id, std::move(bytes));
    } else {
      refused_.push_back(id);
    }
    cv_.notify_all();
  }
}

Status StoreSink::add_to_batch(const ChunkId& id, Bytes bytes) {
  ++counters_.chunks_accepted;
  counters_.bytes_accepted += bytes.size();
  batch_bytes_ += bytes.size();
  batch_.emplace_back(id, std::move(bytes));
  if (batch_.size() >= kSinkBatchChunksMax || batch_bytes_ >= kSinkBatchBytesMax) {
    return flush();
  }
  return {};
}

Status StoreSink::absorb() {
  std::vector<std::pair<ChunkId, Bytes>> done;
  {
    std::lock_guard lock(mu_);
    done.swap(verified_);
  }
  for (auto& [id, bytes] : done) {
    SHOAL_TRY_STATUS(add_to_batch(id, std::move(bytes)));
  }
  return {};
}

Status StoreSink::put_deferred(const ChunkId& id, Bytes&& bytes) {
  SHOAL_TRY_STATUS(ensure_fence());
  SHOAL_TRY_STATUS(absorb());
  {
    std::lock_guard lock(mu_);
    if (queue_bytes_ < kSinkVerifyQueueBytesMax) {
      if (!verifier_.joinable()) {
        verifier_ = std::thread([this] { verifier_loop(); });
      }
      queue_bytes_ += bytes.size();
      ++verifying_;
      pending_.insert(id);
      queue_.emplace_back(id, std::move(bytes));
      cv_.notify_all();
      return {};
    }
  }
  return put(id, bytes);  // The verifier is behind: do this one here.
}

std::vector<ChunkId> StoreSink::take_refused() {
  (void)absorb();  // A failed batch write shows up at the next put or missing call.
  std::vector<ChunkId> out;
  std::lock_guard lock(mu_);
  out.swap(refused_);
  counters_.chunks_refused += out.size();
  return out;
}

std::size_t StoreSink::verifying() {
  (void)absorb();
  std::lock_guard lock(mu_);
  return verifying_;
}

Status StoreSink::flush() {
  if (batch_.empty()) {
    return {};
  }
  SHOAL_ASSERT(fence_.has_value());  // Taken by the put() that opened the batch.
  std::vector<std::pair<ChunkId, Bytes>> batch;
  batch.swap(batch_);
  batch_bytes_ = 0;
  // Chunks already held are not appended again (they would only be garbage).
  std::vector<bool> held(batch.size(), false);
  {
    auto txn = Txn::begin_read(store_.env());
    if (!txn) {
      return std::unexpected(txn.error());
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      auto has = store_.chunks().contains(*txn, batch[i].first);
      if (!has) {
        return std::unexpected(has.error());
      }
      held[i] = *has;
    }
  }
  if (!writer_) {
    writer_.emplace(store_.chunks());  // This session's own pack(s).
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (!held[i]) {
      SHOAL_TRY_STATUS(writer_->add(batch[i].first, batch[i].second));
    }
  }
  SHOAL_TRY_STATUS(writer_->sync());
  auto txn = Txn::begin_write(store_.env());
  if (!txn) {
    return std::unexpected(txn.error());
  }
  auto added = writer_->index_into(*txn);
  if (!added) {
    return std::unexpected(added.error());
  }
  SHOAL_TRY_STATUS(txn->commit());
  counters_.chunks_stored += added->chunks_new;
  counters_.bytes_stored += added->bytes_new;
  counters_.chunks_duplicate += batch.size() - added->chunks_new;
  return {};
}

Status StoreSink::ensure_fence() {
  if (fence_) {
    return {};
  }
  // Taken at the first store call of the session, not at the first put: the
  // chunks a resumed walk finds present are unreferenced until commit, and a
  // gc between that walk and the commit would remove them.
  // Non-blocking: a gc in progress would otherwise stall the caller's event
  // loop for as long as it runs. The transfer fails Unavailable and is
  // retried; whatever it stored before is kept or collected, never half-used.
  auto fd = internal::lock_file(store_.dir(), "gc", /*exclusive=*/false, /*blocking=*/false);
  if (!fd) {
    if (fd.error().code == Code::kUnavailable) {
      return make_error(Code::kUnavailable, "garbage collection is running on the receiver; retry later");
    }
    return std::unexpected(fd.error());
  }
  fence_.emplace(*fd);
  return {};
}

Result<bool> StoreSink::has_snapshot(const ChunkId& snapshot) {
  SHOAL_TRY_STATUS(ensure_fence());
  SHOAL_TRY_STATUS(flush());
  auto all = store_.list(project_);
  if (!all) {
    return std::unexpected(all.error());
  }
  for (const SnapshotInfo& s : *all) {
    if (s.id == snapshot) {
      return true;
    }
  }
  return false;
}

Result<std::vector<ChunkId>> StoreSink::missing(std::span<const ChunkId> ids) {
  SHOAL_TRY_STATUS(ensure_fence());
  SHOAL_TRY_STATUS(absorb());
  SHOAL_TRY_STATUS(flush());
  auto txn = Txn::begin_read(store_.env());
  if (!txn) {
    return std::unexpected(txn.error());
  }
  auto absent = store_.chunks().missing(*txn, ids);
  if (!absent) {
    return absent;
  }
  // Chunks still being verified count as present; a refusal re-requests them.
  std::lock_guard lock(mu_);
  if (!pending_.empty()) {
    std::erase_if(*absent, [&](const ChunkId& id) { return pending_.contains(id); });
  }
  return absent;
}

Status StoreSink::put(const ChunkId& id, ByteView bytes) {
  SHOAL_TRY_STATUS(ensure_fence());
  // The same check ChunkStore::put_raw makes, done now so that a bad chunk is
  // refused (and refetched) at once; put_encoded then skips it.
  if (auto plain = decode_chunk(bytes, id); !plain) {
    if (plain.error().code == Code::kCorruption) {
      ++counters_.chunks_refused;
    }
    return std::unexpected(plain.error());
  }
  return add_to_batch(id, Bytes(bytes.begin(), bytes.end()));
}

Result<Bytes> StoreSink::read(const ChunkId& id) {
  SHOAL_TRY_STATUS(absorb());
  SHOAL_TRY_STATUS(flush());
  auto raw = store_.get_raw_chunk(id);
  if (!raw) {
    return std::unexpected(raw.error());
  }
  if (!*raw) {
    return make_error(Code::kNotFound, "chunk " + to_hex(id).substr(0, 16) + " is not stored here");
  }
  return std::move(**raw);
}

Result<Commit> StoreSink::load_offered_commit(ByteView stored) {
  auto plain = decode_chunk(stored, snapshot_);
  if (!plain) {
    return std::unexpected(plain.error());
  }
  auto commit = decode_commit(*plain);
  if (!commit) {
    return make_error(Code::kCorruption, "snapshot " + to_hex(snapshot_).substr(0, 12) +
                                             " is not a commit: " + commit.error().message);
  }
  if (commit->project != project_) {
    // accept_offer decided on the offered project name; the commit is the truth.
    return make_error(Code::kFailedPrecondition, "snapshot " + to_hex(snapshot_).substr(0, 12) +
                                                     " belongs to project '" + commit->project +
                                                     "', not to the offered project '" + project_ + "'");
  }
  return commit;
}

Result<std::vector<transfer::ChunkRef>> StoreSink::references(const ChunkId& manifest, ByteView bytes) {
  using transfer::ChunkKind;
  using transfer::ChunkRef;
  std::vector<ChunkRef> out;
  if (manifest == snapshot_) {
    auto commit = load_offered_commit(bytes);
    if (!commit) {
      return std::unexpected(commit.error());
    }
    out.push_back(ChunkRef{.id = commit->tree, .kind = ChunkKind::kManifest});
    return out;
  }
  auto plain = decode_chunk(bytes, manifest);
  if (!plain) {
    return std::unexpected(plain.error());
  }
  auto entries = decode_tree(*plain);
  if (!entries) {
    return make_error(Code::kCorruption,
                      "manifest " + to_hex(manifest).substr(0, 12) + " is not a tree: " + entries.error().message);
  }
  for (const TreeEntry& e : *entries) {
    switch (e.kind) {
      case EntryKind::kDir:
        out.push_back(ChunkRef{.id = e.tree, .kind = ChunkKind::kManifest});
        break;
      case EntryKind::kFile:
        for (const ChunkId& id : e.chunks) {
          out.push_back(ChunkRef{.id = id, .kind = ChunkKind::kData});
        }
        break;
      case EntryKind::kSymlink:
        break;
    }
  }
  return out;
}

Result<bool> StoreSink::complete_below(const ChunkId& manifest) {
  if (!committed_roots_) {
    // A committed snapshot is complete (commit_received checked it, and gc
    // never removes what a catalogued snapshot references), so is its tree.
    auto all = store_.list();
    if (!all) {
      return std::unexpected(all.error());
    }
    committed_roots_.emplace();
    for (const SnapshotInfo& s : *all) {
      if (s.commit.tree != ChunkId{}) {
        committed_roots_->insert(s.commit.tree);
      }
    }
  }
  return committed_roots_->contains(manifest);
}

Status StoreSink::commit(const ChunkId& snapshot) {
  SHOAL_ASSERT(snapshot == snapshot_);  // One sink per offered snapshot.
  auto raw = read(snapshot);
  if (!raw) {
    return std::unexpected(raw.error());
  }
  auto offered = load_offered_commit(*raw);
  if (!offered) {
    return std::unexpected(offered.error());
  }
  if (check_) {
    SHOAL_TRY_STATUS(check_(snapshot, *offered));
  }
  {
    // The protocol commits only once verifying() is 0; wait in case a caller does not.
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return verifying_ == 0; });
    if (!refused_.empty()) {
      return make_error(Code::kCorruption, std::to_string(refused_.size()) + " chunk(s) failed verification");
    }
  }
  SHOAL_TRY_STATUS(absorb());
  SHOAL_TRY_STATUS(flush());
  auto info = store_.commit_received(snapshot);
  if (!info) {
    return std::unexpected(info.error());
  }
  SHOAL_ASSERT(info->commit.project == project_);
  committed_ = std::move(*info);
  writer_.reset();  // Closes (unlocks) the session's pack before the fence goes.
  fence_.reset();
  return {};
}

}  // namespace shoal::storage
