// node/agent/subprocess.cc: uv_spawn with captured stdout and stderr.
#include "node/agent/subprocess.h"

#include <unistd.h>

#include <array>
#include <memory>

#include "base/assert.h"

namespace shoal::agent {
namespace {

struct Child {
  uv_process_t process{};
  uv_pipe_t out{};
  uv_pipe_t err{};
  ProcessResult result;
  std::function<void(ProcessResult)> done;
  int open_handles = 3;
  int open_streams = 2;
  bool exited = false;
};

void on_handle_closed(uv_handle_t* handle) {
  auto* child = static_cast<Child*>(handle->data);
  if (--child->open_handles == 0) {
    auto done = std::move(child->done);
    ProcessResult result = std::move(child->result);
    delete child;
    done(std::move(result));
  }
}

void maybe_close(Child* child) {
  if (child->exited && child->open_streams == 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&child->process), on_handle_closed);
  }
}

void on_alloc(uv_handle_t*, std::size_t suggested, uv_buf_t* buf) {
  buf->base = new char[suggested];
  buf->len = suggested;
}

void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* child = static_cast<Child*>(stream->data);
  std::unique_ptr<char[]> owned(buf->base);
  if (nread > 0) {
    std::string& sink = stream == reinterpret_cast<uv_stream_t*>(&child->out) ? child->result.out : child->result.err;
    // Bounded: a chatty child cannot grow the agent without limit.
    if (sink.size() < (std::size_t{1} << 20)) sink.append(buf->base, static_cast<std::size_t>(nread));
    return;
  }
  if (nread < 0) {
    uv_read_stop(stream);
    uv_close(reinterpret_cast<uv_handle_t*>(stream), on_handle_closed);
    --child->open_streams;
    maybe_close(child);
  }
}

}  // namespace

Status run_process(uv_loop_t* loop, const std::vector<std::string>& argv,
                   std::function<void(ProcessResult)> done) {
  SHOAL_ASSERT(!argv.empty());
  auto* child = new Child;
  child->done = std::move(done);
  child->process.data = child;
  child->out.data = child;
  child->err.data = child;
  SHOAL_ASSERT(uv_pipe_init(loop, &child->out, 0) == 0);
  SHOAL_ASSERT(uv_pipe_init(loop, &child->err, 0) == 0);

  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::array<uv_stdio_container_t, 3> stdio{};
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
  stdio[1].data.stream = reinterpret_cast<uv_stream_t*>(&child->out);
  stdio[2].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
  stdio[2].data.stream = reinterpret_cast<uv_stream_t*>(&child->err);
  uv_process_options_t options{};
  options.file = args[0];
  options.args = args.data();
  options.stdio = stdio.data();
  options.stdio_count = 3;
  options.exit_cb = [](uv_process_t* process, std::int64_t status, int signal) {
    auto* c = static_cast<Child*>(process->data);
    c->result.exit_code = signal != 0 ? -1 : static_cast<int>(status);
    c->exited = true;
    maybe_close(c);
  };
  const int rc = uv_spawn(loop, &child->process, &options);
  if (rc != 0) {
    // libuv initialises the process handle even when spawning fails: close
    // all three and report without calling done.
    child->done = [](ProcessResult) {};
    uv_close(reinterpret_cast<uv_handle_t*>(&child->process), on_handle_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&child->out), on_handle_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&child->err), on_handle_closed);
    return make_error(Code::kIOError, std::string("cannot start ") + argv[0] + ": " + uv_strerror(rc));
  }
  uv_read_start(reinterpret_cast<uv_stream_t*>(&child->out), on_alloc, on_read);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&child->err), on_alloc, on_read);
  return {};
}

std::string self_executable() {
  std::array<char, 4096> path{};
  const ssize_t n = ::readlink("/proc/self/exe", path.data(), path.size() - 1);
  if (n <= 0) return "shoal";
  return std::string(path.data(), static_cast<std::size_t>(n));
}

}  // namespace shoal::agent
