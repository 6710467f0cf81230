#pragma once
// base/assert.h: SHOAL_ASSERT, on in every build type. A failed assertion is
// our own broken invariant (a bug), never a peer's bad input: peers' bytes get
// an Error value and a counter instead.

namespace shoal::detail {
[[noreturn]] void assert_fail(const char* expr, const char* file, int line, const char* func);
}

#define SHOAL_ASSERT(expr) \
  ((expr) ? static_cast<void>(0) : ::shoal::detail::assert_fail(#expr, __FILE__, __LINE__, __func__))
