#include "baton/handoff/child_process.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>

namespace baton::handoff {
namespace {

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// The spawn itself, on the spawner thread: the child's fds, signals and exec.
// Returns the pid, or the error posix_spawn reports (the exec's included).
Result<pid_t> spawn(ChildSpec& spec) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  int rc = 0;
  int highest = 2;
  for (auto& [number, fd] : spec.fds) {
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, fd.get(), number);  // clears close-on-exec
    highest = std::max(highest, number);
  }
  // Close-on-exec acts only at a successful exec: a child stuck in execve (a
  // binary on a dead mount) would hold every socket we have. It holds only
  // its own fds.
  if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, highest + 1);
  // Ours may be handled (libuv's signal pipe) or ignored: both would reach
  // the new program (an ignored signal stays ignored across exec).
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr, &all);
  if (rc == 0) rc = posix_spawnattr_setsigmask(&attr, &none);
  if (rc == 0) rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  // Blocking stdio, as uv_spawn left it: a flag of the open file, shared
  // with us, so cleared here as libuv cleared it in its child.
  // Not one of ours that sits at 0-2 (close-on-exec: the child does not get
  // it), such as a listener when batond was started with its stdio closed.
  for (int fd = 0; fd <= 2; ++fd) {
    const int fd_flags = ::fcntl(fd, F_GETFD);
    if (fd_flags < 0 || (fd_flags & FD_CLOEXEC)) continue;
    if (const int flags = ::fcntl(fd, F_GETFL); flags >= 0 && (flags & O_NONBLOCK)) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  }
  pid_t pid = 0;
  if (rc == 0) {
    auto argv = c_strings(spec.argv);
    auto env = c_strings(spec.env);
    rc = ::posix_spawn(&pid, spec.file.c_str(), &actions, &attr, argv.data(), env.data());
  }
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    std::string why = std::strerror(rc);  // as uv_strerror words it: "no such file or directory"
    if (!why.empty()) why[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(why[0])));
    return Error{"spawn " + spec.file + ": " + why};
  }
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

// The standby spawner (start_standby_spawner): one thread that runs one job
// at a time and waits for the next. A job that finds it busy (a spawn that
// hangs: an exec on a dead mount, a child stopped before its exec) gets a
// thread of its own. Never destroyed: it waits until the process exits. It
// belongs to the process that started it: a child of fork() has no such
// thread (only the forking one goes on), and never touches the copied
// object, whose mutex the thread may have held at the fork. An atfork
// handler forgets it in the child; the owner pid also catches a raw clone().
class StandbyThread {
 public:
  // The current process's, or null.
  static StandbyThread* current() {
    StandbyThread* t = instance_.load();
    return t && t->owner_ == ::getpid() ? t : nullptr;
  }
  static Status start() {
    // A flag, not a mutex: a fork while another thread holds it leaves the
    // child a flag its atfork handler clears.
    while (starting_.exchange(true)) ::sched_yield();
    struct Release {
      ~Release() { starting_.store(false); }
    } release;
    if (current()) return {};
    static bool atfork_registered = false;
    if (!atfork_registered) {
      if (const int rc = ::pthread_atfork(nullptr, nullptr, &StandbyThread::forget_in_child); rc != 0)
        return sys_error("pthread_atfork (standby spawner)", rc);
      atfork_registered = true;
    }
    auto* t = new StandbyThread;
    if (auto st = run_detached(&StandbyThread::main, t); !st) {
      delete t;
      return st;
    }
    instance_.store(t);
    return {};
  }
  // False if it cannot take `fn` now (busy): the caller runs it elsewhere.
  bool submit(void* (*fn)(void*), void* arg) {
    std::lock_guard lock(mutex_);
    if (busy_) return false;
    task_ = {fn, arg};
    busy_ = true;
    ready_.notify_one();
    return true;
  }

 private:
  struct Task {
    void* (*fn)(void*) = nullptr;
    void* arg = nullptr;
  };
  static void* main(void* self) {
    static_cast<StandbyThread*>(self)->serve();
    return nullptr;
  }
  void serve() {
    std::unique_lock lock(mutex_);
    for (;;) {
      ready_.wait(lock, [&] { return task_.fn != nullptr; });
      const Task task = std::exchange(task_, {});
      lock.unlock();
      task.fn(task.arg);
      lock.lock();
      busy_ = false;
    }
  }
  // In the child of a fork: the copied object (and its thread) is not ours.
  static void forget_in_child() {
    instance_.store(nullptr);
    starting_.store(false);
  }
  static inline std::atomic<StandbyThread*> instance_{nullptr};
  static inline std::atomic<bool> starting_{false};
  const pid_t owner_ = ::getpid();
  std::mutex mutex_;
  std::condition_variable ready_;
  Task task_;
  bool busy_ = false;
};

// A child nobody will ever wait for: reaped on a thread of its own.
void* reap_on_thread(void* pid) {
  ::waitpid(static_cast<pid_t>(reinterpret_cast<intptr_t>(pid)), nullptr, 0);
  return nullptr;
}

}  // namespace

// One spawn, shared by the loop and the spawner thread (the last one out
// frees it). The thread reports through `async` under the mutex; the owner
// nulls `async` under it before closing the handle, after which the thread
// kills and reaps what it started itself: no thread ever touches a closed
// handle, and nothing keeps the loop alive for a spawn that hangs.
struct ChildProcess::Job {
  std::mutex mutex;
  uv_async_t* async = nullptr;  // null once the owner let go
  bool reported = false;        // the thread has sent its report
  ChildSpec spec;
  // Written on the spawner thread before `reported`, read on the loop after.
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
  if (int rc = report_.init(uv_async_init, loop_, this, &ChildProcess::on_report); rc != 0)
    return Error{std::string("uv_async_init (spawn): ") + uv_strerror(rc)};
  auto job = std::make_shared<Job>();
  job->async = report_.get();
  job->spec = std::move(spec);
  auto* for_thread = new std::shared_ptr<Job>(job);
  auto handed = [&]() -> Status {
    if (auto* standby = StandbyThread::current(); standby && standby->submit(&ChildProcess::spawn_on_thread, for_thread))
      return {};
    return run_detached(&ChildProcess::spawn_on_thread, for_thread);
  };
  if (auto st = handed(); !st) {
    delete for_thread;
    report_.close();
    return st;
  }
  job_ = std::move(job);
  state_ = State::Starting;
  pid_ = 0;
  pending_signal_ = 0;
  on_started_ = std::move(started);
  on_exited_ = std::move(exited);
  return {};
}

Status start_standby_spawner() { return StandbyThread::start(); }

void* ChildProcess::spawn_on_thread(void* arg) {
  const std::shared_ptr<Job> job = std::move(*static_cast<std::shared_ptr<Job>*>(arg));
  delete static_cast<std::shared_ptr<Job>*>(arg);
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
  bool owner_gone = false;
  {
    std::lock_guard lock(job->mutex);
    job->reported = true;
    owner_gone = job->async == nullptr;
    if (!owner_gone) uv_async_send(job->async);
  }
  if (owner_gone && job->pid > 0) {
    // Nobody will ever stop or wait for it.
    ::kill(job->pid, SIGKILL);
    ::waitpid(job->pid, nullptr, 0);
  }
  return nullptr;
}

void ChildProcess::on_report(uv_async_t* async) {
  auto* self = static_cast<ChildProcess*>(async->data);
  auto job = std::move(self->job_);
  if (!job) return;
  {
    std::lock_guard lock(job->mutex);
    job->async = nullptr;
  }
  self->report_.close();
  self->started(*job);
}

void ChildProcess::let_go_of_job() {
  if (!job_) return;
  pid_t unreported = 0;
  {
    std::lock_guard lock(job_->mutex);
    job_->async = nullptr;
    // Reported, but the report not taken yet: the thread left it to us.
    if (job_->reported) unreported = job_->pid;
  }
  report_.close();
  job_.reset();
  if (unreported > 0) {
    ::kill(unreported, SIGKILL);  // ours and unreaped: the pid is still its own
    if (!run_detached(&reap_on_thread, reinterpret_cast<void*>(static_cast<intptr_t>(unreported))))
      ::waitpid(unreported, nullptr, 0);  // killed: not long
  }
}

void ChildProcess::started(Job& job) {
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
  if (pending_signal_ != 0) kill(std::exchange(pending_signal_, 0));
  if (started) started(pid_);
}

bool ChildProcess::kill(int signo) {
  switch (state_) {
    case State::Starting:
      pending_signal_ = signo;
      return true;
    case State::Running:
      // Through the pidfd: should the child have been reaped behind our back
      // (SIGCHLD ignored), its pid could be someone else's.
      if (::syscall(SYS_pidfd_send_signal, pidfd_.get(), signo, nullptr, 0) == 0) return true;
      // Refused by a seccomp profile: our own unreaped child, its pid is safe.
      if (errno == ENOSYS || errno == EPERM) return ::kill(pid_, signo) == 0;
      return false;
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

void ChildProcess::abandon() {
  if (state_ == State::Running) {
    kill(SIGKILL);  // fails only if it has exited already: reaped all the same
    // Without a thread it stays a zombie until we exit, as a closed uv_process_t did.
    (void)run_detached(&reap_on_thread, reinterpret_cast<void*>(static_cast<intptr_t>(pid_)));
  }
  close();  // one still being spawned is killed (and reaped) as soon as it exists
}

void ChildProcess::close() {
  on_started_ = {};
  on_exited_ = {};
  let_go_of_job();
  exit_watch_.close();
  pidfd_.reset();
  state_ = State::Closed;
}

}  // namespace baton::handoff
