#pragma once
// The one helper every test uses to start, watch and stop real processes.
//
// A TestProcess starts a binary with its stderr and stdout going to a log file,
// lets a test wait for events in that log (never a fixed sleep), and kills the
// process by pid in its destructor, so an assertion that fails half way never
// leaves a process behind. Processes a daemon spawns itself (new generations)
// are tracked with track_descendant(): the test binary is a child subreaper, so
// such orphans are re-parented to it and can be killed and reaped by pid too.

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace baton::test {

using namespace std::chrono_literals;

// Where the built binaries are (set by CMake as compile definitions).
std::string batond_path();
std::string batonctl_path();
std::string tool_path(const std::string& name);  // e.g. "baton-load"
std::string build_path(const std::string& relative);  // under the CMake build directory

// A fresh directory under $TMPDIR, removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

struct ExitStatus {
  bool exited = false;  // false: killed by a signal
  int code = 0;         // exit code, or the signal number
  bool success() const { return exited && code == 0; }
  std::string describe() const;
};

struct ProcessOptions {
  std::vector<std::string> extra_env;  // "NAME=value", added to this process's environment
  std::string log_path;                // default: a file in a private temp dir
  int fd3 = -1;                        // placed at fd 3 in the child (a hand-off channel end)
  int fd4 = -1;                        // placed at fd 4 (a second socket-activated listener)
  bool listen_pid = false;             // set LISTEN_PID to the child's own pid (socket activation)
};

// Options that only add environment variables.
inline ProcessOptions with_env(std::vector<std::string> env) {
  ProcessOptions o;
  o.extra_env = std::move(env);
  return o;
}

class TestProcess {
 public:
  using Options = ProcessOptions;

  // Starts argv[0] (a path) with argv; throws std::runtime_error if fork/exec fails.
  static TestProcess start(std::vector<std::string> argv, Options options = {});

  TestProcess(TestProcess&&) noexcept;
  TestProcess& operator=(TestProcess&&) noexcept;
  TestProcess(const TestProcess&) = delete;
  TestProcess& operator=(const TestProcess&) = delete;
  ~TestProcess();  // SIGKILL + reap this process and every tracked descendant

  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  std::string log() const;  // everything the process (and its descendants) printed so far

  // Waits until a log line contains `needle` (after skipping `skip` earlier matches).
  // Returns the line, or nullopt at the deadline.
  std::optional<std::string> wait_for_line(const std::string& needle,
                                           std::chrono::milliseconds timeout = 10s,
                                           int skip = 0) const;
  // Number of log lines that contain `needle`.
  int count_lines(const std::string& needle) const;

  void signal(int signo) const;
  // Waits for the process to exit and reaps it; nullopt at the deadline.
  std::optional<ExitStatus> wait_exit(std::chrono::milliseconds timeout = 10s);
  bool running() const;

  // A process this one spawned (e.g. a new daemon generation): killed and reaped with it.
  void track_descendant(pid_t pid);

 private:
  TestProcess() = default;
  void kill_all() noexcept;

  pid_t pid_ = -1;
  bool reaped_ = false;
  std::string log_path_;
  std::string owned_dir_;  // temp dir holding the log when the caller gave none
  std::vector<pid_t> descendants_;
  std::optional<ExitStatus> exit_status_;  // once reaped
};

// True while `pid` names a live (not zombie) process.
bool pid_alive(pid_t pid);
// Waits for a pid (not necessarily our child) to disappear or become a zombie.
bool wait_pid_gone(pid_t pid, std::chrono::milliseconds timeout = 10s);
// Reaps any zombie children (re-parented orphans included); returns how many.
int reap_zombies();
// Number of zombie processes whose parent is `parent`.
int zombie_children_of(pid_t parent);
// Open fds of a process, as readlink targets of /proc/PID/fd/* ("socket:[123]", ...).
std::vector<std::string> open_fds(pid_t pid);
// Resident set size of a process in KiB, from /proc/PID/status.
long rss_kib(pid_t pid);
// The pid a pid file names; 0 when it is missing or unreadable.
pid_t read_pid_file(const std::string& path);

// Runs a command to completion, capturing stdout and stderr separately.
struct CommandResult {
  ExitStatus status;
  std::string out;
  std::string err;
};
CommandResult run_command(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout = 30s,
                          const std::vector<std::string>& extra_env = {});

// Polls `condition` until it is true or the deadline passes.
template <class F>
bool eventually(F&& condition, std::chrono::milliseconds timeout = 10s);

}  // namespace baton::test

#include "process_inl.h"
