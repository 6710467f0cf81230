#include "base/codec.h"

#include <cstring>

namespace shoal {

Encoder& Encoder::str(std::string_view v) {
  packer_.pack_str(static_cast<std::uint32_t>(v.size()));
  packer_.pack_str_body(v.data(), static_cast<std::uint32_t>(v.size()));
  return *this;
}

Encoder& Encoder::bin(ByteView v) {
  packer_.pack_bin(static_cast<std::uint32_t>(v.size()));
  packer_.pack_bin_body(reinterpret_cast<const char*>(v.data()), static_cast<std::uint32_t>(v.size()));
  return *this;
}

Bytes Encoder::take() const {
  const auto* p = reinterpret_cast<const std::uint8_t*>(buffer_.data());
  return Bytes(p, p + buffer_.size());
}

Reader::Reader(const msgpack::object& array, DecodeState& state, std::size_t items_max) : state_(&state) {
  if (state.failed) {
    return;
  }
  if (array.type != msgpack::type::ARRAY) {
    state.fail("expected an array");
    return;
  }
  if (array.via.array.size > items_max) {
    state.fail("array has " + std::to_string(array.via.array.size) + " items, limit " + std::to_string(items_max));
    return;
  }
  items_ = array.via.array.ptr;
  size_ = array.via.array.size;
}

const msgpack::object* Reader::next(msgpack::type::object_type expected, const char* what) {
  if (failed()) {
    return nullptr;
  }
  if (next_ >= size_) {
    state_->fail(std::string("missing item ") + std::to_string(next_) + " (" + what + ")");
    return nullptr;
  }
  const msgpack::object* item = &items_[next_++];
  // msgpack encodes non-negative integers as POSITIVE_INTEGER even when signed.
  const bool integer_ok = expected == msgpack::type::NEGATIVE_INTEGER &&
                          (item->type == msgpack::type::POSITIVE_INTEGER || item->type == msgpack::type::NEGATIVE_INTEGER);
  const bool float_ok = expected == msgpack::type::FLOAT64 &&
                        (item->type == msgpack::type::FLOAT32 || item->type == msgpack::type::FLOAT64);
  if (item->type != expected && !integer_ok && !float_ok) {
    state_->fail(std::string("item ") + std::to_string(next_ - 1) + ": expected " + what);
    return nullptr;
  }
  return item;
}

std::uint64_t Reader::u64() {
  const auto* item = next(msgpack::type::POSITIVE_INTEGER, "unsigned integer");
  return item ? item->via.u64 : 0;
}

std::uint64_t Reader::u64_max(std::uint64_t max) {
  const std::uint64_t v = u64();
  if (v > max) {
    state_->fail("item " + std::to_string(next_ - 1) + ": value " + std::to_string(v) + " above limit " +
                 std::to_string(max));
    return 0;
  }
  return v;
}

std::int64_t Reader::i64() {
  const auto* item = next(msgpack::type::NEGATIVE_INTEGER, "integer");
  if (!item) {
    return 0;
  }
  if (item->type == msgpack::type::POSITIVE_INTEGER) {
    if (item->via.u64 > static_cast<std::uint64_t>(INT64_MAX)) {
      state_->fail("integer out of range");
      return 0;
    }
    return static_cast<std::int64_t>(item->via.u64);
  }
  return item->via.i64;
}

double Reader::f64() {
  const auto* item = next(msgpack::type::FLOAT64, "float");
  return item ? item->via.f64 : 0.0;
}

bool Reader::boolean() {
  const auto* item = next(msgpack::type::BOOLEAN, "boolean");
  return item ? item->via.boolean : false;
}

bool Reader::is_nil() const {
  return !failed() && next_ < size_ && items_[next_].type == msgpack::type::NIL;
}

void Reader::skip() {
  if (failed()) {
    return;
  }
  if (next_ >= size_) {
    state_->fail("missing item to skip");
    return;
  }
  ++next_;
}

std::string Reader::str(std::size_t bytes_max) {
  const auto* item = next(msgpack::type::STR, "string");
  if (!item) {
    return {};
  }
  if (item->via.str.size > bytes_max) {
    state_->fail("string of " + std::to_string(item->via.str.size) + " bytes, limit " + std::to_string(bytes_max));
    return {};
  }
  return std::string(item->via.str.ptr, item->via.str.size);
}

Bytes Reader::bin(std::size_t bytes_max) {
  const auto* item = next(msgpack::type::BIN, "binary");
  if (!item) {
    return {};
  }
  if (item->via.bin.size > bytes_max) {
    state_->fail("binary of " + std::to_string(item->via.bin.size) + " bytes, limit " + std::to_string(bytes_max));
    return {};
  }
  const auto* p = reinterpret_cast<const std::uint8_t*>(item->via.bin.ptr);
  return Bytes(p, p + item->via.bin.size);
}

void Reader::bin_exact(std::span<std::uint8_t> out) {
  const auto* item = next(msgpack::type::BIN, "binary");
  if (!item) {
    return;
  }
  if (item->via.bin.size != out.size()) {
    state_->fail("binary of " + std::to_string(item->via.bin.size) + " bytes, expected " + std::to_string(out.size()));
    return;
  }
  std::memcpy(out.data(), item->via.bin.ptr, out.size());
}

Reader Reader::array(std::size_t items_max) {
  static const msgpack::object empty_array = [] {
    msgpack::object o;
    o.type = msgpack::type::ARRAY;
    o.via.array.size = 0;
    o.via.array.ptr = nullptr;
    return o;
  }();
  const auto* item = next(msgpack::type::ARRAY, "array");
  return Reader(item ? *item : empty_array, *state_, items_max);
}

void Reader::expect_end() {
  if (!failed() && next_ != size_) {
    state_->fail("unexpected trailing items");
  }
}

Result<Decoded> Decoded::parse(ByteView bytes, const DecodeLimits& limits) {
  if (bytes.size() > limits.input_bytes_max) {
    return make_error(Code::kInvalidArgument, "message of " + std::to_string(bytes.size()) + " bytes, limit " +
                                                  std::to_string(limits.input_bytes_max));
  }
  if (bytes.empty()) {
    return make_error(Code::kInvalidArgument, "empty message");
  }
  Decoded decoded;
  std::size_t offset = 0;
  // msgpack-cxx reports malformed input by throwing; this is the one place
  // those exceptions are turned into values.
  try {
    const msgpack::unpack_limit unpack_limits(limits.array_items_max, limits.map_items_max, limits.str_bytes_max,
                                              limits.bin_bytes_max, 0, limits.depth_max);
    decoded.handle_ = msgpack::unpack(reinterpret_cast<const char*>(bytes.data()), bytes.size(), offset, nullptr,
                                      nullptr, unpack_limits);
  } catch (const std::exception& e) {
    return make_error(Code::kInvalidArgument, std::string("malformed msgpack: ") + e.what());
  }
  if (offset != bytes.size()) {
    return make_error(Code::kInvalidArgument, "trailing bytes after message");
  }
  if (decoded.handle_.get().type != msgpack::type::ARRAY) {
    return make_error(Code::kInvalidArgument, "message root is not an array");
  }
  return decoded;
}

Reader Decoded::root(std::size_t items_max) { return Reader(handle_.get(), *state_, items_max); }

}  // namespace shoal
