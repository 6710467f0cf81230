// tests/fuzz/fuzz_codec.cc: libFuzzer target for the strict msgpack decoder
// and sealed-datagram opening. Any input must yield a value or an error,
// never a crash, a sanitizer report or an unbounded allocation.

#include <cstddef>
#include <cstdint>

#include "base/codec.h"
#include "base/crypto.h"

namespace {

// Walks every item of a parsed message through the typed readers, so each
// accessor meets hostile type tags and sizes.
void walk(shoal::Reader r, int depth) {
  while (r.ok() && !r.at_end() && depth < 8) {
    if (r.is_nil()) {
      r.skip();
      continue;
    }
    // Try each accessor on a copy of the cursor; exactly the matching one succeeds.
    shoal::Reader a = r;
    a.u64();
    shoal::Reader b = r;
    b.str(4096);
    shoal::Reader c = r;
    c.bin(65536);
    shoal::Reader d = r;
    walk(d.array(4096), depth + 1);
    r.skip();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool init = (shoal::crypto_init(), true);
  (void)init;
  const shoal::ByteView input(data, size);

  if (auto decoded = shoal::Decoded::parse(input)) {
    walk(decoded->root(), 0);
  }

  static const shoal::ClusterKey key{};  // All-zero key: inputs never open unless forged by the fuzzer.
  static const shoal::Keyring ring(key);
  if (auto opened = shoal::open(ring, shoal::as_bytes("shoal/gossip/1"), input)) {
    (void)shoal::Decoded::parse(*opened);
  }
  return 0;
}
