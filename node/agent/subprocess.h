#pragma once
// node/agent/subprocess.h: runs a child process on the loop and hands back
// its exit code and output. The agent runs disk-heavy snapshot work as
// `shoal snapshot ...` children so the loop (gossip, consensus) never blocks
// on a large tree. Single-threaded: the callback runs on the loop thread.

#include <uv.h>

#include <functional>
#include <string>
#include <vector>

#include "base/result.h"

namespace shoal::agent {

struct ProcessResult {
  int exit_code = -1;  // -1: killed by a signal or failed to start.
  std::string out;
  std::string err;
};

// Starts argv[0] with argv; `done` runs once when it exits and its pipes are
// drained. Returns an error if the process could not be started.
Status run_process(uv_loop_t* loop, const std::vector<std::string>& argv,
                   std::function<void(ProcessResult)> done);

// This binary's path, for running its own subcommands.
std::string self_executable();

}  // namespace shoal::agent
