#pragma once
// base/result.h: the one error currency of shoal. Owns Code, Error, Result<T>
// and Status. Codes are chosen by what the caller should do next (see below).
// Header-only; no I/O; usable from any thread.

#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace shoal {

// Pick the code by what the caller should do next, not by what went wrong.
enum class Code {
  kOk = 0,
  kInvalidArgument,     // The input is bad; fix it, do not retry as is.
  kNotFound,            // The thing asked for does not exist.
  kAlreadyExists,       // Creating something that is already there.
  kFailedPrecondition,  // State must be fixed first (e.g. save in progress, quota).
  kUnavailable,         // Transient; retry the call later.
  kAborted,             // Restart the whole exchange (e.g. connection dropped).
  kCorruption,          // Stored or received bytes are damaged; quarantine them.
  kIOError,             // The OS refused an operation (disk, socket).
  kResourceExhausted,   // A limit was hit (queue full, quota, disk full).
  kPermissionDenied,    // Authentication or file permissions.
  kDeadlineExceeded,    // Timed out.
  kInternal,            // A bug; should have been an assertion.
};

std::string_view code_name(Code code);

struct Error {
  Code code = Code::kInternal;
  std::string message;

  std::string to_string() const;
};

template <class T>
using Result = std::expected<T, Error>;
using Status = std::expected<void, Error>;

[[nodiscard]] inline std::unexpected<Error> make_error(Code code, std::string message) {
  return std::unexpected<Error>(Error{code, std::move(message)});
}

[[nodiscard]] inline Status ok_status() { return {}; }

}  // namespace shoal

// Propagates an error from an expression returning Result/Status.
#define SHOAL_TRY_STATUS(expr)                                   \
  do {                                                           \
    auto shoal_try_result_ = (expr);                             \
    if (!shoal_try_result_) {                                    \
      return std::unexpected(std::move(shoal_try_result_).error()); \
    }                                                            \
  } while (0)
