#include "baton/handoff/child_process.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

namespace baton::handoff {
namespace {

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// The spawn itself, on a pool thread: the child's fds, signals and exec.
// Returns the pid, or the error posix_spawn reports (the exec's included).
Result<pid_t> spawn(ChildSpec& spec) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  int rc = 0;
  for (auto& [number, fd] : spec.fds)
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, fd.get(), number);  // clears close-on-exec
  // Ours may be handled (libuv's signal pipe) or ignored: both would reach
  // the new program (an ignored signal stays ignored across exec).
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &all);
  if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &none);
  if (rc == 0) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  pid_t pid = 0;
  if (rc == 0) {
    auto argv = c_strings(spec.argv);
    auto env = c_strings(spec.env);
    rc = ::posix_spawnp(&pid, spec.file.c_str(), &actions, &attr, argv.data(), env.data());
  }
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return sys_error("posix_spawn " + spec.file, rc);
  return pid;
}

// Runs fn(arg) on a new detached thread: a small stack (glibc caches it for
// the next one) and every signal blocked, so that none is delivered there.
Status run_detached(void* (*fn)(void*), void* arg) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);  // the new thread inherits it
  pthread_t thread;
  const int rc = pthread_create(&thread, &attr, fn, arg);
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  pthread_attr_destroy(&attr);
  if (rc != 0) return sys_error("pthread_create (spawner)", rc);
  return {};
}

// A child nobody will ever wait for: reaped on a thread of its own.
void* reap_on_thread(void* pid) {
  ::waitpid(static_cast<pid_t>(reinterpret_cast<intptr_t>(pid)), nullptr, 0);
  return nullptr;
}

}  // namespace

// One spawn: built on the loop, run on its own thread, reported back through
// `async` (the thread's last touch of it is uv_async_send, which uv_close
// waits out), freed when `async` has closed.
struct ChildProcess::Job {
  uv_async_t async{};
  ChildProcess* owner = nullptr;  // null once the owner closed: kill what was started
  ChildSpec spec;
  // Written on the spawner thread before uv_async_send, read on the loop after.
  pid_t pid = 0;
  UniqueFd pidfd;
  std::string error;
};

Status ChildProcess::start(ChildSpec spec, StartedFn started, ExitedFn exited) {
  if (state_ == State::Starting || state_ == State::Running)
    return Error{"a child process is already running (pid " + std::to_string(pid_) + ")"};
  // Each fd moved above every number the child gets, so that placing one
  // never overwrites another still to be placed (and dup2 onto its own number,
  // which would keep close-on-exec on some libcs, never happens).
  int highest = 2;
  for (const auto& f : spec.fds) highest = std::max(highest, f.first);
  for (auto& [number, fd] : spec.fds) {
    const int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, highest + 1);
    if (moved < 0) return errno_error("fcntl F_DUPFD_CLOEXEC (fd " + std::to_string(fd.get()) + " for the child)");
    fd = UniqueFd(moved);
  }
  auto* job = new Job;
  if (int rc = uv_async_init(loop_, &job->async, &ChildProcess::on_spawned); rc != 0) {
    delete job;
    return Error{std::string("uv_async_init (spawn): ") + uv_strerror(rc)};
  }
  job->async.data = job;
  job->owner = this;
  job->spec = std::move(spec);
  if (auto st = run_detached(&ChildProcess::spawn_on_thread, job); !st) {
    uv_close(reinterpret_cast<uv_handle_t*>(&job->async), &ChildProcess::free_job);
    return st;
  }
  job_ = job;
  state_ = State::Starting;
  pid_ = 0;
  pending_signal_ = 0;
  on_started_ = std::move(started);
  on_exited_ = std::move(exited);
  return {};
}

void* ChildProcess::spawn_on_thread(void* arg) {
  auto* job = static_cast<Job*>(arg);
  auto pid = spawn(job->spec);
  job->spec.fds.clear();  // the child has its copies; ours would hide its end of a pipe
  if (!pid) {
    job->error = pid.error().message;
  } else if (const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid.value(), 0)); fd < 0) {
    // Our child, not reaped yet: its pid cannot have been reused. Without a
    // pidfd it could not be watched: not kept.
    job->error = errno_error("pidfd_open " + std::to_string(pid.value())).message;
    ::kill(pid.value(), SIGKILL);
    ::waitpid(pid.value(), nullptr, 0);
  } else {
    job->pid = pid.value();
    job->pidfd = UniqueFd(fd);
  }
  uv_async_send(&job->async);
  return nullptr;
}

void ChildProcess::free_job(uv_handle_t* handle) { delete static_cast<Job*>(handle->data); }

void ChildProcess::on_spawned(uv_async_t* async) {
  auto* job = static_cast<Job*>(async->data);
  uv_close(reinterpret_cast<uv_handle_t*>(async), &ChildProcess::free_job);  // frees it after this turn
  if (job->owner) return job->owner->started(*job);
  if (job->pid <= 0) return;
  // Nobody will ever stop or wait for it.
  ::kill(job->pid, SIGKILL);
  if (!run_detached(&reap_on_thread, reinterpret_cast<void*>(static_cast<intptr_t>(job->pid))))
    ::waitpid(job->pid, nullptr, 0);  // killed: not long
}

void ChildProcess::started(Job& job) {
  job_ = nullptr;
  auto started = std::move(on_started_);
  if (!job.error.empty()) {
    state_ = State::Idle;
    on_exited_ = {};
    if (started) started(Error{job.error});
    return;
  }
  pid_ = job.pid;
  pidfd_ = std::move(job.pidfd);
  state_ = State::Running;
  int rc = exit_watch_.init(uv_poll_init, loop_, this, pidfd_.get());
  if (rc == 0) rc = uv_poll_start(exit_watch_.get(), UV_READABLE, &ChildProcess::on_pidfd);
  if (rc != 0) {
    // Unwatched, it could never be reaped: killed at once, reaped right away.
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    exit_watch_.close();
    pidfd_.reset();
    state_ = State::Idle;
    on_exited_ = {};
    if (started) started(Error{"uv_poll_start (pidfd of pid " + std::to_string(pid_) + "): " + uv_strerror(rc)});
    return;
  }
  if (pending_signal_ != 0) ::kill(pid_, std::exchange(pending_signal_, 0));
  if (started) started(pid_);
}

bool ChildProcess::kill(int signo) {
  switch (state_) {
    case State::Starting:
      pending_signal_ = signo;
      return true;
    case State::Running:
      return ::kill(pid_, signo) == 0;  // unreaped: the pid is still this child's
    case State::Idle:
    case State::Exited:
    case State::Closed:
      return false;
  }
  return false;
}

void ChildProcess::on_pidfd(uv_poll_t* poll, int, int) {
  static_cast<ChildProcess*>(poll->data)->reap();
}

void ChildProcess::reap() {
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG) != 0) {
    if (errno == EINTR) return;  // readable still: polled again
    // ECHILD: reaped elsewhere (SIGCHLD ignored, a stray waitpid(-1)); it has exited.
    info.si_pid = pid_;
    info.si_code = CLD_EXITED;
    info.si_status = -1;
  }
  if (info.si_pid == 0) return;  // not yet
  int64_t exit_status = 0;
  int term_signal = 0;
  if (info.si_code == CLD_EXITED) exit_status = info.si_status;
  else term_signal = info.si_status;
  state_ = State::Exited;
  exit_watch_.close();
  pidfd_.reset();
  on_started_ = {};
  auto exited = std::move(on_exited_);
  if (exited) exited(exit_status, term_signal);
}

void ChildProcess::close() {
  on_started_ = {};
  on_exited_ = {};
  if (job_) job_->owner = nullptr;
  job_ = nullptr;
  exit_watch_.close();
  pidfd_.reset();
  state_ = State::Closed;
}

}  // namespace baton::handoff
