// tests/fuzz/fuzz_gossip.cc: libFuzzer target for the gossip wire decoders and
// the membership core's datagram and stream handlers. Any input must be
// dropped or applied, never crash, assert, or allocate without bound; a
// datagram that decodes must re-encode to something that decodes again.

#include <cstddef>
#include <cstdint>

#include "base/crypto.h"
#include "base/random.h"
#include "gossip/membership.h"
#include "gossip/wire.h"

namespace {

shoal::gossip::Membership& core() {
  static shoal::Prng random(1);
  static shoal::gossip::Membership* membership = [] {
    shoal::crypto_init();
    shoal::gossip::Config config = shoal::gossip::profile_config(shoal::gossip::Profile::kLan);
    config.name = "fuzz";
    config.dc = "dc1";
    config.advertise = shoal::Address{"127.0.0.1", 7946};
    config.public_key = shoal::Identity::generate(random).public_key();
    return new shoal::gossip::Membership(config, random, shoal::instant_from_us(0));
  }();
  return *membership;
}

void drain(shoal::gossip::Membership& m) {
  while (m.poll_transmit()) {
  }
  while (m.poll_stream()) {
  }
  while (m.poll_event()) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace shoal::gossip;
  const shoal::ByteView input(data, size);

  if (auto packet = wire::decode_packet(input)) {
    for (const auto& message : packet->messages) {
      const shoal::Bytes again = wire::encode(message);
      const shoal::ByteView parts[] = {again};
      if (!wire::decode_packet(wire::compound(parts))) {
        __builtin_trap();  // Our own encoder produced something our decoder refuses.
      }
    }
  }
  (void)wire::decode_push_pull(input, 1000);

  static std::int64_t now_us = 0;
  now_us += 1000;
  auto& m = core();
  m.on_datagram(shoal::instant_from_us(now_us), shoal::Address{"127.0.0.1", 7947}, input);
  (void)m.on_stream_request(shoal::instant_from_us(now_us), shoal::Address{"127.0.0.1", 7948}, input);
  m.on_tick(shoal::instant_from_us(now_us));
  drain(m);
  return 0;
}
