#pragma once
// node/agent/stream_wire.h: the wire format of gossip TCP streams (push-pull).
// A stream carries one request frame and one reply frame:
//   frame   = length (4 bytes, big-endian) || sealed payload
//   request = seal(kStreamRequestAad, msgpack [1, sender_address, core_payload])
//   reply   = seal(kStreamReplyAad, core_reply)
// The sender's advertised address rides in the request because the TCP source
// port is ephemeral: the core and the fault-injection filter need to know
// which member is talking. Decoding is incremental and bounded by
// kFrameBytesMax; nothing is allocated for a frame before its length passed.

#include <cstdint>
#include <optional>

#include "base/address.h"
#include "base/bytes.h"
#include "base/crypto.h"
#include "base/random.h"
#include "base/result.h"

namespace shoal::agent {

// Prefixes a payload with its length. REQUIRES: payload.size() <= kFrameBytesMax.
Bytes encode_frame(ByteView payload);

// Accumulates bytes of one connection and yields complete frames.
class FrameDecoder {
 public:
  explicit FrameDecoder(std::size_t frame_bytes_max);

  // Appends received bytes. InvalidArgument when a frame announces a length
  // above the limit or zero; the connection must then be closed.
  Status feed(ByteView bytes);
  // The next complete frame's payload, if one is buffered.
  std::optional<Bytes> next();
  std::size_t buffered() const { return buffer_.size(); }

 private:
  std::size_t frame_bytes_max_;
  Bytes buffer_;
  bool failed_ = false;
};

struct StreamRequestMessage {
  Address from;
  Bytes payload;
};

Bytes seal_stream_request(const Keyring& keyring, Random& random, const Address& from, ByteView payload);
// Corruption when no key opens it; InvalidArgument when the envelope is malformed.
Result<StreamRequestMessage> open_stream_request(const Keyring& keyring, ByteView sealed);

Bytes seal_stream_reply(const Keyring& keyring, Random& random, ByteView reply);
Result<Bytes> open_stream_reply(const Keyring& keyring, ByteView sealed);

}  // namespace shoal::agent
