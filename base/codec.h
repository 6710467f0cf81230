#pragma once
// base/codec.h: strict msgpack encoding and decoding for every wire and disk
// format of shoal. Messages are msgpack arrays read positionally by a Reader
// whose first error is sticky, so decoders read straight through and check
// once. Every length and count has a bound; decoding never throws.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <msgpack.hpp>

#include "base/bytes.h"
#include "base/result.h"

namespace shoal {

// Bounds applied while parsing, before anything is allocated for the message.
struct DecodeLimits {
  std::size_t input_bytes_max = 64 * 1024;
  std::size_t array_items_max = 4096;
  std::size_t map_items_max = 256;
  std::size_t str_bytes_max = 4096;
  std::size_t bin_bytes_max = 64 * 1024;
  std::size_t depth_max = 8;
};

class Encoder {
 public:
  Encoder() : packer_(buffer_) {}
  Encoder(const Encoder&) = delete;
  Encoder& operator=(const Encoder&) = delete;

  Encoder& array(std::uint32_t items) { packer_.pack_array(items); return *this; }
  Encoder& map(std::uint32_t items) { packer_.pack_map(items); return *this; }
  Encoder& u64(std::uint64_t v) { packer_.pack_uint64(v); return *this; }
  Encoder& i64(std::int64_t v) { packer_.pack_int64(v); return *this; }
  Encoder& f64(double v) { packer_.pack_double(v); return *this; }
  Encoder& boolean(bool v) { v ? packer_.pack_true() : packer_.pack_false(); return *this; }
  Encoder& nil() { packer_.pack_nil(); return *this; }
  Encoder& str(std::string_view v);
  Encoder& bin(ByteView v);

  std::size_t size() const { return buffer_.size(); }
  Bytes take() const;

 private:
  msgpack::sbuffer buffer_;
  msgpack::packer<msgpack::sbuffer> packer_;
};

// Shared error state of a Reader and the nested Readers it hands out.
struct DecodeState {
  bool failed = false;
  Error error;
  void fail(std::string message) {
    if (!failed) {
      failed = true;
      error = Error{Code::kInvalidArgument, std::move(message)};
    }
  }
};

// Positional cursor over one msgpack array. After any failure every read
// returns a zero value and ok() is false; check ok() once at the end.
class Reader {
 public:
  Reader(const msgpack::object& array, DecodeState& state, std::size_t items_max);

  std::uint64_t u64();
  std::uint64_t u64_max(std::uint64_t max);  // Fails if the value exceeds max.
  std::int64_t i64();
  double f64();
  bool boolean();
  bool is_nil() const;  // Peeks at the next item.
  void skip();
  std::string str(std::size_t bytes_max);
  Bytes bin(std::size_t bytes_max);
  // Copies exactly N bytes from a bin item into out. Fails on any other length.
  void bin_exact(std::span<std::uint8_t> out);
  Reader array(std::size_t items_max);

  std::size_t size() const { return size_; }
  std::size_t remaining() const { return failed() ? 0 : size_ - next_; }
  bool at_end() const { return next_ >= size_; }
  // Fails unless every item was read (use for formats that allow no trailing items).
  void expect_end();
  bool ok() const { return !state_->failed; }
  const Error& error() const { return state_->error; }

 private:
  bool failed() const { return state_->failed; }
  const msgpack::object* next(msgpack::type::object_type expected, const char* what);

  const msgpack::object* items_ = nullptr;
  std::size_t size_ = 0;
  std::size_t next_ = 0;
  DecodeState* state_;
};

// A parsed message: owns the msgpack zone the Readers point into.
class Decoded {
 public:
  // Parses exactly one msgpack object filling all of bytes; the root must be an array.
  static Result<Decoded> parse(ByteView bytes, const DecodeLimits& limits = {});
  Reader root(std::size_t items_max = 4096);
  const Error& error() const { return state_->error; }

 private:
  msgpack::object_handle handle_;
  std::unique_ptr<DecodeState> state_ = std::make_unique<DecodeState>();
};

}  // namespace shoal
