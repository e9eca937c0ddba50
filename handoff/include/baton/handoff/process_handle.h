#pragma once
// ProcessHandle: a process this one did not spawn (an older or a newer
// generation), watched without pid-reuse accidents. It holds a pidfd, taken
// while the process is known to live; on a kernel without pidfd_open (before
// 5.3) it falls back to kill(pid, 0), which a reused pid can fool.

#include <sys/types.h>

#include "baton/handoff/unique_fd.h"

namespace baton::handoff {

class ProcessHandle {
 public:
  ProcessHandle() = default;
  // Take it while `pid` certainly lives (it just spoke to us, or is our parent).
  static ProcessHandle open(pid_t pid);
  // A pidfd received from elsewhere (a hand-off), for `pid`.
  static ProcessHandle adopt(pid_t pid, UniqueFd pidfd);

  // The pidfd, -1 without one: to poll for the exit, or to hand over.
  int fd() const { return pidfd_.get(); }

  pid_t pid() const { return pid_; }
  // False once the process has exited (a zombie counts as exited, except
  // with the kill(2) fallback), and for a default-constructed handle.
  bool alive() const;
  // Sends `signo` to it through the pidfd. False if it is gone, the signal
  // could not be sent, or there is no pidfd (kill(2) on a pid that may have
  // been reused could hit another process).
  bool signal(int signo) const;

 private:
  enum class Watch { None, Pidfd, Kill, Gone };
  pid_t pid_ = 0;
  Watch watch_ = Watch::None;
  UniqueFd pidfd_;
};

}  // namespace baton::handoff
