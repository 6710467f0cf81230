#include "node/agent/stream_wire.h"

#include "base/assert.h"
#include "base/codec.h"
#include "node/agent/limits.h"

namespace shoal::agent {
namespace {

constexpr std::uint64_t kEnvelopeVersion = 1;
constexpr std::size_t kAddressTextBytesMax = 300;  // Host name (253) plus brackets and port.

std::uint32_t read_be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
}

}  // namespace

Bytes encode_frame(ByteView payload) {
  SHOAL_ASSERT(payload.size() <= kFrameBytesMax);
  Bytes out;
  out.reserve(kFrameHeaderBytes + payload.size());
  const auto n = static_cast<std::uint32_t>(payload.size());
  out.push_back(static_cast<std::uint8_t>(n >> 24));
  out.push_back(static_cast<std::uint8_t>(n >> 16));
  out.push_back(static_cast<std::uint8_t>(n >> 8));
  out.push_back(static_cast<std::uint8_t>(n));
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

FrameDecoder::FrameDecoder(std::size_t frame_bytes_max) : frame_bytes_max_(frame_bytes_max) {
  SHOAL_ASSERT(frame_bytes_max > 0);
  SHOAL_ASSERT(frame_bytes_max <= kFrameBytesMax);
}

Status FrameDecoder::feed(ByteView bytes) {
  if (failed_) {
    return make_error(Code::kInvalidArgument, "stream already failed");
  }
  // Check the announced length as soon as the header is complete, before
  // buffering the body, so a hostile length never grows the buffer.
  std::size_t offset = 0;
  while (offset < bytes.size()) {
    if (buffer_.size() < kFrameHeaderBytes) {
      const std::size_t take = std::min(kFrameHeaderBytes - buffer_.size(), bytes.size() - offset);
      buffer_.insert(buffer_.end(), bytes.begin() + static_cast<std::ptrdiff_t>(offset),
                     bytes.begin() + static_cast<std::ptrdiff_t>(offset + take));
      offset += take;
      if (buffer_.size() < kFrameHeaderBytes) {
        break;
      }
      const std::uint32_t length = read_be32(buffer_.data());
      if (length == 0 || length > frame_bytes_max_) {
        failed_ = true;
        return make_error(Code::kInvalidArgument, "frame length " + std::to_string(length) + " outside 1.." +
                                                      std::to_string(frame_bytes_max_));
      }
      continue;
    }
    const std::size_t want = kFrameHeaderBytes + read_be32(buffer_.data());
    // One frame per stream direction: bytes beyond the frame are a protocol error.
    if (buffer_.size() >= want) {
      failed_ = true;
      return make_error(Code::kInvalidArgument, "unexpected bytes after a complete frame");
    }
    const std::size_t take = std::min(want - buffer_.size(), bytes.size() - offset);
    buffer_.insert(buffer_.end(), bytes.begin() + static_cast<std::ptrdiff_t>(offset),
                   bytes.begin() + static_cast<std::ptrdiff_t>(offset + take));
    offset += take;
  }
  return ok_status();
}

std::optional<Bytes> FrameDecoder::next() {
  if (failed_ || buffer_.size() < kFrameHeaderBytes) {
    return std::nullopt;
  }
  const std::size_t length = read_be32(buffer_.data());
  if (buffer_.size() < kFrameHeaderBytes + length) {
    return std::nullopt;
  }
  SHOAL_ASSERT(buffer_.size() == kFrameHeaderBytes + length);
  Bytes payload(buffer_.begin() + kFrameHeaderBytes, buffer_.end());
  buffer_.clear();
  return payload;
}

Bytes seal_stream_request(const Keyring& keyring, Random& random, const Address& from, ByteView payload) {
  Encoder encoder;
  encoder.array(3).u64(kEnvelopeVersion).str(from.to_string()).bin(payload);
  const Bytes plain = encoder.take();
  return seal(keyring.primary(), random, as_bytes(kStreamRequestAad), plain);
}

Result<StreamRequestMessage> open_stream_request(const Keyring& keyring, ByteView sealed) {
  auto plain = open(keyring, as_bytes(kStreamRequestAad), sealed);
  if (!plain) {
    return std::unexpected(plain.error());
  }
  DecodeLimits limits;
  limits.input_bytes_max = kFrameBytesMax;
  limits.bin_bytes_max = kFrameBytesMax;
  auto decoded = Decoded::parse(*plain, limits);
  if (!decoded) {
    return std::unexpected(decoded.error());
  }
  Reader root = decoded->root(3);
  const std::uint64_t version = root.u64();
  std::string from_text = root.str(kAddressTextBytesMax);
  Bytes payload = root.bin(kFrameBytesMax);
  root.expect_end();
  if (!root.ok()) {
    return make_error(Code::kInvalidArgument, "stream request: " + root.error().message);
  }
  if (version != kEnvelopeVersion) {
    return make_error(Code::kInvalidArgument, "stream request: unknown version " + std::to_string(version));
  }
  auto from = parse_address(from_text);
  if (!from) {
    return make_error(Code::kInvalidArgument, "stream request: bad sender address: " + from.error().message);
  }
  return StreamRequestMessage{std::move(*from), std::move(payload)};
}

Bytes seal_stream_reply(const Keyring& keyring, Random& random, ByteView reply) {
  return seal(keyring.primary(), random, as_bytes(kStreamReplyAad), reply);
}

Result<Bytes> open_stream_reply(const Keyring& keyring, ByteView sealed) {
  return open(keyring, as_bytes(kStreamReplyAad), sealed);
}

}  // namespace shoal::agent
