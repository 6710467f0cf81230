// node/cli/basic_cmd.cc: `shoal version` and `shoal keygen`.

#include <cstdio>

#include "base/crypto.h"
#include "node/cli/commands.h"
#include "node/version.h"

namespace shoal::cli {

int cmd_version(Args) {
  std::printf("shoal %s\n", kVersion);
  return 0;
}

int cmd_keygen(Args args) {
  if (!args.empty()) {
    std::fprintf(stderr, "usage: shoal keygen\n  Prints a new random 32-byte cluster key in base64.\n");
    return args[0] == "--help" ? 0 : 2;
  }
  SystemRandom random;
  std::printf("%s\n", format_cluster_key(generate_cluster_key(random)).c_str());
  return 0;
}

}  // namespace shoal::cli
