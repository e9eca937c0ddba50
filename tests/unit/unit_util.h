#pragma once

#include "baton/handoff/message.h"
// Small helpers shared by the unit tests: fd accounting, raw socketpairs and
// environment variables that are restored when a test ends.

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "baton/handoff/channel.h"
#include "baton/handoff/unique_fd.h"

namespace baton::unit {

// A hand-off frame header with any field values, valid or not.
inline std::vector<uint8_t> header(uint32_t magic, uint16_t version, uint16_t type, uint32_t length) {
  handoff::PayloadWriter w;
  w.u32(magic);
  w.u16(version);
  w.u16(type);
  w.u32(length);
  return w.bytes();
}

using handoff::UniqueFd;

// Number of entries in /proc/self/fd. The directory stream's own fd is counted
// every time, so two calls compare like with like.
inline int open_fd_count() {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) throw std::runtime_error("opendir /proc/self/fd");
  int n = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

inline bool fd_is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1 || errno != EBADF; }

inline ino_t inode_of(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return 0;
  return st.st_ino;
}

inline std::pair<UniqueFd, UniqueFd> raw_socketpair(int type) {
  int sv[2];
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) != 0) throw std::runtime_error("socketpair");
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

// A pipe: {read end, write end}.
inline std::pair<UniqueFd, UniqueFd> make_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
  return {UniqueFd(p[0]), UniqueFd(p[1])};
}

// True when every write end of the pipe is closed: a non-blocking read sees EOF.
inline bool pipe_writers_gone(int read_fd) {
  int flags = ::fcntl(read_fd, F_GETFL);
  ::fcntl(read_fd, F_SETFL, flags | O_NONBLOCK);
  char c;
  ssize_t n = ::read(read_fd, &c, 1);
  ::fcntl(read_fd, F_SETFL, flags);
  return n == 0;
}

// Sets (or unsets, with nullopt) an environment variable for the lifetime of
// the object, then puts the old value back.
class ScopedEnv {
 public:
  ScopedEnv(std::string name, std::optional<std::string> value) : name_(std::move(name)) {
    if (const char* old = std::getenv(name_.c_str())) old_ = old;
    if (value)
      ::setenv(name_.c_str(), value->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_.c_str(), old_->c_str(), 1);
    else
      ::unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// Raises the soft RLIMIT_NOFILE to at least `want` (bounded by the hard limit).
// Returns the soft limit in force afterwards.
inline rlim_t raise_nofile(rlim_t want) {
  rlimit rl{};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < want) {
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? want : std::min(want, rl.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &rl);
    ::getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur;
}

// A libuv loop of a test's own; closed (its close callbacks run) at the end.
struct TestLoop {
  uv_loop_t loop{};
  TestLoop() { uv_loop_init(&loop); }
  ~TestLoop() {
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
  TestLoop(const TestLoop&) = delete;
  TestLoop& operator=(const TestLoop&) = delete;
  // Runs until `done` or 5 s.
  template <class F>
  void run_until(F done) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done() && std::chrono::steady_clock::now() < until) uv_run(&loop, UV_RUN_NOWAIT);
  }
  // Runs until nothing is left to do, or 10 s (a guard, not a budget).
  void run() {
    uv_timer_t guard;
    uv_timer_init(&loop, &guard);
    uv_timer_start(&guard, [](uv_timer_t* t) { uv_stop(t->loop); }, 10000, 0);
    uv_unref(reinterpret_cast<uv_handle_t*>(&guard));
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
    uv_run(&loop, UV_RUN_NOWAIT);
  }
};

// Both ends of a hand-off channel, as two processes would hold them: ours,
// and the peer's (adopted, as a new process adopts fd 3).
inline std::pair<handoff::HandoffChannel, handoff::HandoffChannel> channel_pair() {
  auto pair = handoff::HandoffChannel::create_pair();
  if (!pair.ok()) throw std::runtime_error(pair.error().message);
  auto peer = handoff::HandoffChannel::adopt(std::move(pair.value().second));
  if (!peer.ok()) throw std::runtime_error(peer.error().message);
  return {std::move(pair.value().first), std::move(peer).value()};
}

}  // namespace baton::unit
