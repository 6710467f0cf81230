#include "node/agent/stream_wire.h"

#include <gtest/gtest.h>

#include "node/agent/limits.h"

namespace shoal::agent {
namespace {

class FrameDecoderTest : public ::testing::Test {
 protected:
  static Bytes Header(std::uint32_t length) {
    return {static_cast<std::uint8_t>(length >> 24), static_cast<std::uint8_t>(length >> 16),
            static_cast<std::uint8_t>(length >> 8), static_cast<std::uint8_t>(length)};
  }
  FrameDecoder decoder_{1024};
};

TEST_F(FrameDecoderTest, FrameSplitAcrossReadsIsReassembled) {
  const Bytes frame = encode_frame(Bytes{1, 2, 3, 4, 5});
  for (std::uint8_t byte : frame) {
    ASSERT_TRUE(decoder_.feed(ByteView(&byte, 1)));
  }
  auto payload = decoder_.next();
  ASSERT_TRUE(payload.has_value());
  EXPECT_EQ(*payload, (Bytes{1, 2, 3, 4, 5}));
}

TEST_F(FrameDecoderTest, IncompleteFrameYieldsNothing) {
  ASSERT_TRUE(decoder_.feed(Header(10)));
  ASSERT_TRUE(decoder_.feed(Bytes(9, 0)));
  EXPECT_FALSE(decoder_.next().has_value());
}

TEST_F(FrameDecoderTest, LengthAboveLimitIsRefusedBeforeBuffering) {
  EXPECT_FALSE(decoder_.feed(Header(1025)));
  EXPECT_LE(decoder_.buffered(), kFrameHeaderBytes);
  EXPECT_FALSE(decoder_.feed(Bytes{1}));  // Failure is sticky.
}

TEST_F(FrameDecoderTest, HugeLengthIsRefused) {
  FrameDecoder full(kFrameBytesMax);
  EXPECT_FALSE(full.feed(Header(0xffffffffu)));
  EXPECT_FALSE(full.feed(Header(static_cast<std::uint32_t>(kFrameBytesMax + 1))));
}

TEST_F(FrameDecoderTest, ZeroLengthIsRefused) { EXPECT_FALSE(decoder_.feed(Header(0))); }

TEST_F(FrameDecoderTest, BytesAfterTheFrameAreRefused) {
  Bytes frame = encode_frame(Bytes{7});
  frame.push_back(9);
  EXPECT_FALSE(decoder_.feed(frame));
}

class StreamEnvelopeTest : public ::testing::Test {
 protected:
  StreamEnvelopeTest() { crypto_init(); }
  static ClusterKey Key(std::uint8_t fill) {
    ClusterKey key;
    key.fill(fill);
    return key;
  }
  Prng random_{7};
  Keyring ring_{Key(1)};
};

TEST_F(StreamEnvelopeTest, RequestCarriesSenderAddress) {
  const Address from{"::1", 29100};
  auto opened = open_stream_request(ring_, seal_stream_request(ring_, random_, from, Bytes{1, 2}));
  ASSERT_TRUE(opened.has_value()) << opened.error().message;
  EXPECT_EQ(opened->from, from);
  EXPECT_EQ(opened->payload, (Bytes{1, 2}));
}

TEST_F(StreamEnvelopeTest, RequestFromAnotherClusterIsRefused) {
  Keyring other(Key(2));
  auto opened = open_stream_request(ring_, seal_stream_request(other, random_, Address{"127.0.0.1", 1}, Bytes{1}));
  EXPECT_FALSE(opened.has_value());
}

TEST_F(StreamEnvelopeTest, ReplyDoesNotOpenAsRequest) {
  // Distinct associated data: a captured reply cannot be replayed as a request.
  EXPECT_FALSE(open_stream_request(ring_, seal_stream_reply(ring_, random_, Bytes{1})).has_value());
  EXPECT_TRUE(open_stream_reply(ring_, seal_stream_reply(ring_, random_, Bytes{1})).has_value());
}

TEST_F(StreamEnvelopeTest, MalformedEnvelopeIsRefused) {
  const Bytes not_msgpack = seal(ring_.primary(), random_, as_bytes(kStreamRequestAad), Bytes{0xc1});
  EXPECT_FALSE(open_stream_request(ring_, not_msgpack).has_value());
}

}  // namespace
}  // namespace shoal::agent
