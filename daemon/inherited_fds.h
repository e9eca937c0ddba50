#pragma once
// A generation hands its successor exactly its listeners and the hand-off
// channel, nothing else. Whatever this process inherited without close-on-exec
// (from a shell, a supervisor, a test harness) is marked close-on-exec at
// start-up, so it stops here instead of leaking down every generation.

#include <utility>

namespace baton::daemon {

// Sets FD_CLOEXEC on every open fd above stderr. Returns how many it changed.
int close_inherited_fds_on_exec();

// Raises the soft RLIMIT_NOFILE to the hard limit: every connection is an fd,
// and a hand-off briefly needs two per connection. Returns {before, after}.
// The first generation records the soft limit it was started with in
// kOriginalFdLimitVariable (inherited by every later one), so that a
// supervised app gets that limit back (original_fd_limit()).
std::pair<long, long> raise_fd_limit();
inline constexpr const char* kOriginalFdLimitVariable = "BATON_ORIGINAL_NOFILE";
// -1 when unknown.
long original_fd_limit();

}  // namespace baton::daemon
