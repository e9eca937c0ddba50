#include "signal_mask.h"

#include <signal.h>

#include <initializer_list>

namespace baton::daemon {
namespace {

sigset_t handled_set() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGUSR2, SIGHUP}) sigaddset(&set, s);
  return set;
}

}  // namespace

void block_handled_signals() {
  sigset_t set = handled_set();
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
}

void unblock_handled_signals() {
  sigset_t set = handled_set();
  ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
}

}  // namespace baton::daemon
