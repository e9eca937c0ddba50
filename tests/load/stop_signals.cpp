#include "stop_signals.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

namespace baton::load {

handoff::Result<StopSignals> StopSignals::install() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (::sigprocmask(SIG_BLOCK, &set, nullptr) != 0) return handoff::errno_error("sigprocmask");
  handoff::UniqueFd fd(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!fd) return handoff::errno_error("signalfd");
  ::signal(SIGPIPE, SIG_IGN);
  return StopSignals(std::move(fd));
}

int StopSignals::drain() {
  int count = 0;
  signalfd_siginfo info;
  while (::read(fd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) ++count;
  return count;
}

}  // namespace baton::load
