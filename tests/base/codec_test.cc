#include "base/codec.h"

#include <gtest/gtest.h>

namespace shoal {
namespace {

Bytes Sample() {
  Encoder e;
  e.array(5).u64(42).str("hello").bin(as_bytes("xyz")).boolean(true);
  e.array(2).i64(-7).u64(8);
  return e.take();
}

TEST(CodecTest, RoundTrip) {
  auto d = Decoded::parse(Sample());
  ASSERT_TRUE(d);
  Reader r = d->root();
  EXPECT_EQ(r.u64(), 42u);
  EXPECT_EQ(r.str(16), "hello");
  EXPECT_EQ(as_string_view(r.bin(16)), "xyz");
  EXPECT_TRUE(r.boolean());
  Reader inner = r.array(4);
  EXPECT_EQ(inner.i64(), -7);
  EXPECT_EQ(inner.i64(), 8);
  r.expect_end();
  EXPECT_TRUE(r.ok());
}

TEST(CodecTest, WrongTypeIsStickyError) {
  auto d = Decoded::parse(Sample());
  ASSERT_TRUE(d);
  Reader r = d->root();
  EXPECT_EQ(r.str(16), "");  // First item is an integer.
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.u64(), 0u);  // Every later read yields zero.
  EXPECT_EQ(r.error().code, Code::kInvalidArgument);
}

TEST(CodecTest, StringOverLimitFails) {
  auto d = Decoded::parse(Sample());
  ASSERT_TRUE(d);
  Reader r = d->root();
  r.u64();
  r.str(3);
  EXPECT_FALSE(r.ok());
}

TEST(CodecTest, MissingItemFails) {
  Encoder e;
  e.array(1).u64(1);
  auto d = Decoded::parse(e.take());
  ASSERT_TRUE(d);
  Reader r = d->root();
  r.u64();
  r.u64();
  EXPECT_FALSE(r.ok());
}

TEST(CodecTest, TruncatedInputIsRejected) {
  Bytes b = Sample();
  for (size_t cut = 0; cut < b.size(); ++cut) {
    auto d = Decoded::parse(ByteView(b.data(), cut));
    EXPECT_FALSE(d) << "cut at " << cut;
  }
}

TEST(CodecTest, TrailingBytesAreRejected) {
  Bytes b = Sample();
  b.push_back(0x01);
  EXPECT_FALSE(Decoded::parse(b));
}

TEST(CodecTest, OversizedInputIsRejectedBeforeParsing) {
  Bytes big(100, 0x90);
  DecodeLimits limits;
  limits.input_bytes_max = 50;
  auto d = Decoded::parse(big, limits);
  ASSERT_FALSE(d);
  EXPECT_NE(d.error().message.find("limit"), std::string::npos);
}

TEST(CodecTest, HugeDeclaredArrayIsRejectedWithoutAllocating) {
  // array32 header claiming 2^31 items, followed by nothing.
  const Bytes b = {0xdd, 0x80, 0x00, 0x00, 0x00};
  EXPECT_FALSE(Decoded::parse(b));
}

TEST(CodecTest, DeepNestingIsRejected) {
  Bytes b(100, 0x91);  // 100 nested one-item arrays.
  b.push_back(0x01);
  EXPECT_FALSE(Decoded::parse(b));
}

TEST(CodecTest, NonArrayRootIsRejected) {
  Encoder e;
  e.u64(5);
  EXPECT_FALSE(Decoded::parse(e.take()));
}

}  // namespace
}  // namespace shoal
