// node/cli/main.cc: the `shoal` binary. Dispatches the first argument to a
// subcommand from the table below; prints usage for unknown commands.

#include <cstdio>
#include <string_view>
#include <vector>

#include "base/crypto.h"
#include "node/cli/commands.h"

namespace shoal::cli {
namespace {

struct Command {
  std::string_view name;
  int (*run)(Args);
  std::string_view summary;
};

// One line per subcommand; keep sorted by how often operators use them.
constexpr Command kCommands[] = {
    {"agent", cmd_agent, "run this machine's node (see shoal agent --help)"},
    {"members", cmd_members, "list the members of the mesh"},
    {"watch", cmd_watch, "stream membership events"},
    {"join", cmd_join, "ask the agent to join a mesh"},
    {"leave", cmd_leave, "make the agent leave the mesh and exit"},
    {"project", cmd_project, "create, list, save and restore projects placed on the mesh"},
    {"where", cmd_where, "where a project lives: its committed epoch, primary and replicas"},
    {"snapshot", cmd_snapshot, "save, list, restore, verify and prune project snapshots"},
    {"replicate", cmd_replicate, "copy a snapshot to another node"},
    {"transfers", cmd_transfers, "list active and recent snapshot transfers"},
    {"keys", cmd_keys, "list, install, use or remove cluster keys"},
    {"sim", cmd_sim, "simulate a mesh under faults (see shoal sim --help)"},
    {"keygen", cmd_keygen, "print a new base64 cluster key"},
    {"version", cmd_version, "print the shoal version"},
};

void print_usage(std::FILE* out) {
  std::fprintf(out, "usage: shoal <command> [options]\n\ncommands:\n");
  for (const auto& c : kCommands) {
    std::fprintf(out, "  %-10.*s %.*s\n", static_cast<int>(c.name.size()), c.name.data(),
                 static_cast<int>(c.summary.size()), c.summary.data());
  }
  std::fprintf(out, "\nRun `shoal <command> --help` for a command's options.\n");
}

}  // namespace
}  // namespace shoal::cli

int main(int argc, char** argv) {
  using namespace shoal::cli;
  shoal::crypto_init();
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  const std::string_view name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(stdout);
    return 0;
  }
  std::vector<std::string_view> args(argv + 2, argv + argc);
  for (const auto& c : kCommands) {
    if (c.name == name) {
      return c.run(args);
    }
  }
  std::fprintf(stderr, "shoal: unknown command '%s'\n\n", argv[1]);
  print_usage(stderr);
  return 2;
}
