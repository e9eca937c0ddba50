#include "baton/handoff/process_handle.h"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace baton::handoff {

ProcessHandle ProcessHandle::open(pid_t pid) {
  ProcessHandle h;
  h.pid_ = pid;
  if (pid <= 0) return h;
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd >= 0) {
    h.pidfd_ = UniqueFd(fd);
    h.watch_ = Watch::Pidfd;
  } else if (errno == ESRCH) {
    h.watch_ = Watch::Gone;
  } else {
    h.watch_ = Watch::Kill;  // ENOSYS (old kernel), EMFILE: the pid alone
  }
  return h;
}

ProcessHandle ProcessHandle::adopt(pid_t pid, UniqueFd pidfd) {
  ProcessHandle h;
  h.pid_ = pid;
  h.watch_ = pidfd ? Watch::Pidfd : Watch::Gone;
  h.pidfd_ = std::move(pidfd);
  return h;
}

bool ProcessHandle::alive() const {
  switch (watch_) {
    case Watch::Pidfd: {
      pollfd p{pidfd_.get(), POLLIN, 0};
      return ::poll(&p, 1, 0) == 0;  // readable once the process has exited
    }
    case Watch::Kill:
      return ::kill(pid_, 0) == 0 || errno == EPERM;
    case Watch::None:
    case Watch::Gone:
      return false;
  }
  return false;
}

bool ProcessHandle::signal(int signo) const {
  switch (watch_) {
    case Watch::Pidfd:
      return ::syscall(SYS_pidfd_send_signal, pidfd_.get(), signo, nullptr, 0) == 0;
    case Watch::Kill:  // a reused pid would be someone else's process: never signalled
    case Watch::None:
    case Watch::Gone:
      return false;
  }
  return false;
}

}  // namespace baton::handoff
