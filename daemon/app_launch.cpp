#include "app_launch.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

extern char** environ;

namespace baton::daemon {
namespace {

using handoff::UniqueFd;

struct Pipe {
  UniqueFd read, write;
};

// Never 0, 1 or 2 (should batond's own stdio be closed): the child's dup2
// onto them must not meet a pipe end that is already there.
UniqueFd above_stdio(int fd) {
  if (fd < 0 || fd > 2) return UniqueFd(fd);
  UniqueFd low(fd);
  return UniqueFd(::fcntl(low.get(), F_DUPFD_CLOEXEC, 3));
}

handoff::Result<Pipe> make_pipe(const char* what) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return handoff::errno_error(std::string("pipe2 (") + what + ")");
  Pipe p{above_stdio(fds[0]), above_stdio(fds[1])};
  if (!p.read || !p.write) return handoff::errno_error(std::string("fcntl F_DUPFD (") + what + ")");
  return p;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Async-signal-safe: the child of a fork may call nothing else.
void write_decimal(char* out, long v) {
  char digits[24];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v > 0);
  while (n > 0) *out++ = digits[--n];
  *out = '\0';
}

[[noreturn]] void child_fail(int status_fd) {
  const int err = errno;
  (void)!::write(status_fd, &err, sizeof err);
  ::_exit(127);
}

constexpr const char* kListenPid = "LISTEN_PID=";
constexpr size_t kPidRoom = 24;

}  // namespace

bool inherited_by_app(const std::string& entry) {
  for (const char* prefix : {"LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES=", "NOTIFY_SOCKET=", "WATCHDOG_PID=",
                             "WATCHDOG_USEC=", "BATON_"})
    if (entry.starts_with(prefix)) return false;
  return true;
}

handoff::Result<std::string> find_executable(const std::string& name) {
  if (name.empty()) return handoff::Error{"the command is empty"};
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) != 0) return handoff::errno_error("command " + name);
    return name;
  }
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/local/bin:/usr/bin:/bin";
  for (size_t start = 0; start <= dirs.size();) {
    size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    std::string dir = dirs.substr(start, end - start);
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return handoff::Error{"command '" + name + "' not found in PATH"};
}

handoff::Result<Launched> launch_app(const LaunchSpec& spec) {
  if (spec.argv.empty()) return handoff::Error{"no command to start"};
  auto path = find_executable(spec.argv[0]);
  if (!path) return path.error();

  // Everything the child needs is built here: after fork it may only make
  // async-signal-safe calls (batond may have other threads).
  std::vector<std::string> argv = spec.argv;
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e)
    if (inherited_by_app(*e)) env.emplace_back(*e);
  std::string names;
  for (const auto& [name, fd] : spec.listeners) names += (names.empty() ? "" : ":") + name;
  env.push_back("LISTEN_FDS=" + std::to_string(spec.listeners.size()));
  env.push_back("LISTEN_FDNAMES=" + names);
  if (!spec.notify_socket.empty()) env.push_back("NOTIFY_SOCKET=" + spec.notify_socket);
  env.push_back(std::string(kListenPid) + std::string(kPidRoom, ' '));
  auto c_argv = c_strings(argv);
  auto c_env = c_strings(env);
  char* listen_pid = c_env[c_env.size() - 2] + std::strlen(kListenPid);
  std::vector<int> listener_fds;
  for (const auto& [name, fd] : spec.listeners) listener_fds.push_back(fd);
  const int first = 3, count = static_cast<int>(listener_fds.size());
  std::vector<int> moved(listener_fds.size(), -1);

  UniqueFd devnull = above_stdio(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull) return handoff::errno_error("open /dev/null");
  auto out = make_pipe("stdout");
  if (!out) return out.error();
  auto err = make_pipe("stderr");
  if (!err) return err.error();
  auto status = make_pipe("exec status");
  if (!status) return status.error();

  rlimit fd_limit{};
  const bool restore_fd_limit = spec.fd_soft_limit > 0 && ::getrlimit(RLIMIT_NOFILE, &fd_limit) == 0 &&
                                static_cast<rlim_t>(spec.fd_soft_limit) < fd_limit.rlim_cur;
  if (restore_fd_limit) fd_limit.rlim_cur = static_cast<rlim_t>(spec.fd_soft_limit);

  // Every signal blocked across fork, as uv_spawn does: a signal that reached
  // the child before its dispositions are reset would run batond's handler
  // there (libuv's, which writes to the signal pipe batond shares).
  sigset_t all, saved;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &saved);
  const pid_t pid = ::fork();
  if (pid != 0) ::pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  if (pid < 0) return handoff::errno_error("fork");
  if (pid == 0) {
    int status_fd = status->write.get();
    ::setpgid(0, 0);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &dfl, nullptr);  // SIG_IGN would survive exec
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (restore_fd_limit) ::setrlimit(RLIMIT_NOFILE, &fd_limit);
    // Out of the way of fd 0..3+count first, the status pipe included, so
    // that placing stdio or one listener never overwrites another listener
    // (batond started with its stdio closed may hold a listener at 0..2).
    const int above = first + count;
    if ((status_fd = ::fcntl(status_fd, F_DUPFD_CLOEXEC, above)) < 0) child_fail(status->write.get());
    for (int i = 0; i < count; ++i)
      if ((moved[i] = ::fcntl(listener_fds[i], F_DUPFD_CLOEXEC, above)) < 0) child_fail(status_fd);
    if (::dup2(devnull.get(), 0) < 0 || ::dup2(out->write.get(), 1) < 0 || ::dup2(err->write.get(), 2) < 0)
      child_fail(status_fd);
    for (int i = 0; i < count; ++i)
      if (::dup2(moved[i], first + i) < 0) child_fail(status_fd);  // dup2 clears close-on-exec
    write_decimal(listen_pid, ::getpid());
    ::execve(path->c_str(), c_argv.data(), c_env.data());
    child_fail(status_fd);
  }
  status->write.reset();
  out->write.reset();
  err->write.reset();
  // EOF: exec succeeded (the pipe was close-on-exec). An int: its errno.
  int child_errno = 0;
  ssize_t n;
  do n = ::read(status->read.get(), &child_errno, sizeof child_errno);
  while (n < 0 && errno == EINTR);
  if (n > 0) {
    ::waitpid(pid, nullptr, 0);
    return handoff::Error{"exec " + path.value() + ": " + std::strerror(child_errno)};
  }
  Launched launched;
  launched.pid = pid;
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    auto e = handoff::errno_error("pidfd_open " + std::to_string(pid));
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return e;
  }
  launched.pidfd = UniqueFd(pidfd);
  launched.out = std::move(out->read);
  launched.err = std::move(err->read);
  return launched;
}

}  // namespace baton::daemon
