// tests/fuzz/fuzz_placement.cc: libFuzzer target for placement messages (the
// bytes after a placement datagram's tag and sender id) and stored acceptor
// records. Any input yields a value or an error; a decoded message re-encodes
// to bytes that decode to the same message, and an acceptor step on it never
// trips an assertion.

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "node/core/paxos.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const shoal::ByteView input(data, size);
  if (auto message = shoal::core::decode_message(input)) {
    const shoal::Bytes again = shoal::core::encode_message(*message);
    auto back = shoal::core::decode_message(again);
    if (!back || shoal::core::encode_message(*back) != again) std::abort();
    if (std::holds_alternative<shoal::core::Prepare>(*message) ||
        std::holds_alternative<shoal::core::Accept>(*message)) {
      (void)shoal::core::acceptor_step(shoal::core::AcceptorRecord{}, *message);
    }
  }
  if (auto record = shoal::core::decode_acceptor_record(input)) {
    (void)shoal::core::encode_acceptor_record(*record);
  }
  return 0;
}
