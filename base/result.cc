#include "base/result.h"

namespace shoal {

std::string_view code_name(Code code) {
  switch (code) {
    case Code::kOk: return "ok";
    case Code::kInvalidArgument: return "invalid_argument";
    case Code::kNotFound: return "not_found";
    case Code::kAlreadyExists: return "already_exists";
    case Code::kFailedPrecondition: return "failed_precondition";
    case Code::kUnavailable: return "unavailable";
    case Code::kAborted: return "aborted";
    case Code::kCorruption: return "corruption";
    case Code::kIOError: return "io_error";
    case Code::kResourceExhausted: return "resource_exhausted";
    case Code::kPermissionDenied: return "permission_denied";
    case Code::kDeadlineExceeded: return "deadline_exceeded";
    case Code::kInternal: return "internal";
  }
  return "unknown";
}

std::string Error::to_string() const {
  std::string out(code_name(code));
  out += ": ";
  out += message;
  return out;
}

}  // namespace shoal
