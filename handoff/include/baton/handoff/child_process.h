#pragma once
// ChildProcess: a process this one starts without stopping its loop.
//
// uv_spawn forks on the loop thread and then waits there until the child has
// exec'd: 2 to 25 ms in which a serving loop answers nobody (338 ms was seen
// under load). Here the spawn runs on another thread (posix_spawn, which
// glibc does with a vfork-style clone: no page tables copied, and only the
// calling thread waits for the exec), and `started` reports back on the loop
// through a uv_async. The thread is created for the spawn, on the loop
// (about 0.13 ms of the turn, mapping its stack), unless the process started
// a standby spawner ahead (start_standby_spawner): then that one runs it,
// and a spawn that finds it busy with one that hangs gets a thread of its
// own. Not libuv's thread pool: its first use starts four threads from the
// loop thread and waits for each, over a millisecond.
// The exit is watched on the loop through a pidfd, so nothing depends on
// SIGCHLD. The status is ours only if nothing else reaps the child: SIGCHLD
// must not be ignored (SIG_IGN reaps automatically) and no waitpid(-1) may
// run; otherwise the exit is reported as status -1 (not a clean one).
//
// What the child gets: exactly the fds in `fds` at the numbers given (and
// whatever this process has without close-on-exec, while the spawn runs on
// its thread: its stdio, made blocking as uv_spawn did), every signal at its
// default disposition, an empty signal mask. Its parent thread is the
// spawner thread: a short-lived one (a child using PR_SET_PDEATHSIG would
// get its signal at once), or the standby spawner, which lives until this
// process exits. `file` is executed as it is (no PATH lookup, no /bin/sh fallback
// for a script without #!). Linux 5.3 or later, pidfd_open and
// pidfd_send_signal allowed (a seccomp profile may refuse them).

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "baton/handoff/result.h"
#include "baton/handoff/unique_fd.h"
#include "baton/handoff/uv_handle.h"

namespace baton::handoff {

struct ChildSpec {
  std::string file;               // the path to execute (relative to the working directory if not absolute)
  std::vector<std::string> argv;  // argv[0] included
  std::vector<std::string> env;   // "NAME=value"
  // The child's fd number, and the fd it gets there. Closed here once the
  // spawn is over (the child holds its own copies).
  std::vector<std::pair<int, UniqueFd>> fds;
};

// Starts a thread that runs every later spawn of this process (each
// ChildProcess's), so that none creates a thread on its loop. Call it
// before the loop serves (batond: at start-up), and after any per-thread
// hardening: a child inherits every per-thread attribute of its parent
// thread (a seccomp filter installed without TSYNC, no_new_privs, a Landlock
// domain, capability sets, an SELinux exec context, CPU affinity, nice
// value, scheduling policy, I/O priority, ...), and the standby thread keeps
// what the calling thread had at this call (a later renice or taskset of the
// main thread alone does not reach it). A second call does nothing; a child
// of fork() has none until it calls it. An error (pthread_create,
// pthread_atfork) leaves spawns as they were.
Status start_standby_spawner();

class ChildProcess {
 public:
  // On the loop: the pid once the child has exec'd, or why it could not.
  using StartedFn = std::function<void(Result<pid_t>)>;
  // On the loop, once, after `started` succeeded: the child has exited and is
  // reaped. `exit_status` if it exited, `term_signal` if a signal ended it.
  using ExitedFn = std::function<void(int64_t exit_status, int term_signal)>;

  explicit ChildProcess(uv_loop_t* loop) : loop_(loop) {}
  ~ChildProcess() { close(); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Queues the spawn. Fails at once only if it cannot be queued (one child
  // per object, until it has been reaped or close()d).
  Status start(ChildSpec spec, StartedFn started, ExitedFn exited);

  // Sends `signo`. While the spawn is still under way it is remembered and
  // sent as soon as the child exists (the latest one wins). False once the
  // child has been reaped, or was never started.
  bool kill(int signo);

  // Stops watching: no callback runs after this (safe from inside one). A
  // child that is running is left running and is not reaped (it may be the
  // service now); one whose spawn is still under way is killed as soon as it
  // exists, since nobody could ever stop or wait for it otherwise.
  void close();
  // close(), and a child that is running is killed and reaped (on a thread
  // of its own); one still being spawned is killed as soon as it exists.
  void abandon();

  enum class State { Idle, Starting, Running, Exited, Closed };
  State state() const { return state_; }
  pid_t pid() const { return pid_; }

 private:
  struct Job;
  static void* spawn_on_thread(void* job);
  static void on_report(uv_async_t* async);
  // Closes the report handle; a child already reported is killed and reaped.
  void let_go_of_job();
  static void on_pidfd(uv_poll_t* poll, int status, int events);
  void started(Job& job);
  void reap();

  uv_loop_t* loop_;
  State state_ = State::Idle;
  std::shared_ptr<Job> job_;  // while Starting
  UvHandle<uv_async_t> report_;
  pid_t pid_ = 0;
  int pending_signal_ = 0;  // kill() while Starting
  UniqueFd pidfd_;
  UvHandle<uv_poll_t> exit_watch_;
  StartedFn on_started_;
  ExitedFn on_exited_;
};

}  // namespace baton::handoff
