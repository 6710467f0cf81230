// bench/storage/chunk_params.cc: measures chunker sizes and zstd levels end to
// end on a real corpus: snapshot V1 into a fresh store, then V2 (the "next
// day" variant), and report time, stored size, chunk count and the growth of
// the second snapshot. Not run by ctest; see bench/storage/run.sh.
//
// usage: chunk_params V1_DIR V2_DIR WORK_DIR [min avg max level threads]...

#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>

#include "base/crypto.h"
#include "storage/snapshot_store.h"

using namespace shoal;
using namespace shoal::storage;

static std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

int main(int argc, char** argv) {
  crypto_init();
  if (argc < 4 || (argc - 4) % 5 != 0) {
    std::fprintf(stderr, "usage: %s V1 V2 WORK [min avg max level threads]...\n", argv[0]);
    return 2;
  }
  std::printf("| min/avg/max KiB | zstd | threads | s1 wall s | s1 cpu s | s1 stored MiB | chunks | s2 wall s | s2 growth MiB |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (int i = 4; i < argc; i += 5) {
    StoreOptions o;
    o.chunker = ChunkerParams{static_cast<std::uint32_t>(std::stoul(argv[i])) << 10,
                              static_cast<std::uint32_t>(std::stoul(argv[i + 1])) << 10,
                              static_cast<std::uint32_t>(std::stoul(argv[i + 2])) << 10};
    o.zstd_level = std::stoi(argv[i + 3]);
    const unsigned threads = static_cast<unsigned>(std::stoul(argv[i + 4]));
    const std::string dir = std::string(argv[3]) + "/store";
    std::filesystem::remove_all(dir);
    auto store = SnapshotStore::open(dir, o);
    if (!store) {
      std::fprintf(stderr, "%s\n", store.error().to_string().c_str());
      return 1;
    }
    auto run = [&](const char* src, double& wall, double& cpu) -> bool {
      const auto t0 = std::chrono::steady_clock::now();
      const std::clock_t c0 = std::clock();
      auto r = (*store)->create(CreateOptions{.project = "p", .source_dir = src, .now_ns = now_ns(), .threads = threads});
      wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      cpu = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
      if (!r) std::fprintf(stderr, "%s\n", r.error().to_string().c_str());
      return r.has_value();
    };
    double w1, c1, w2, c2;
    if (!run(argv[1], w1, c1)) return 1;
    auto s1 = (*store)->stats();
    if (!run(argv[2], w2, c2)) return 1;
    auto s2 = (*store)->stats();
    std::printf("| %s/%s/%s | %d | %u | %.1f | %.1f | %.1f | %llu | %.1f | %.1f |\n", argv[i], argv[i + 1], argv[i + 2], o.zstd_level,
                threads, w1, c1, static_cast<double>(s1->stored_bytes) / 1048576.0, static_cast<unsigned long long>(s1->chunks), w2,
                static_cast<double>(s2->stored_bytes - s1->stored_bytes) / 1048576.0);
    std::fflush(stdout);
    store->reset();
    std::filesystem::remove_all(dir);
  }
  return 0;
}
