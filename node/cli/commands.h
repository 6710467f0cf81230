#pragma once
// node/cli/commands.h: entry points of the `shoal` subcommands. Each takes the
// arguments after its own name and returns the process exit code:
// 0 success, 1 the operation found a problem (e.g. damage), 2 usage error or
// unreachable agent / I/O error. Each command lives in its own *_cmd.cc file.

#include <span>
#include <string_view>

namespace shoal::cli {

using Args = std::span<const std::string_view>;

int cmd_version(Args args);
int cmd_keygen(Args args);
int cmd_sim(Args args);
int cmd_members(Args args);
int cmd_join(Args args);
int cmd_leave(Args args);
int cmd_watch(Args args);
int cmd_keys(Args args);
int cmd_agent(Args args);
int cmd_snapshot(Args args);
int cmd_replicate(Args args);
int cmd_transfers(Args args);
int cmd_project(Args args);  // project_cmd.cc
int cmd_where(Args args);    // project_cmd.cc

}  // namespace shoal::cli
