#pragma once
// node/version.h: the software version, reported by `shoal version` and gossiped in health records.
namespace shoal {
inline constexpr const char* kVersion = "0.1.0";
}
