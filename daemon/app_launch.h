#pragma once
// Starting one instance of the supervised app the way systemd starts a
// socket-activated service: the listeners at fd 3.. in order, LISTEN_FDS,
// LISTEN_FDNAMES, LISTEN_PID (the app's own pid, written after fork and
// before exec), NOTIFY_SOCKET; stdin from /dev/null, stdout and stderr into
// pipes batond reads. The app leads a process group of its own, so that what
// it forks can be stopped with it, and gets default signal dispositions and
// an empty signal mask whatever batond had.

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "baton/handoff/result.h"
#include "baton/handoff/unique_fd.h"

namespace baton::daemon {

struct LaunchSpec {
  std::vector<std::string> argv;                       // argv[0] is looked up in PATH unless it has a '/'
  std::vector<std::pair<std::string, int>> listeners;  // name, fd (batond's; the child gets copies)
  std::string notify_socket;                           // NOTIFY_SOCKET for the app
  long fd_soft_limit = -1;                             // RLIMIT_NOFILE's soft limit for the app; -1: batond's
};

struct Launched {
  pid_t pid = 0;
  handoff::UniqueFd pidfd;
  handoff::UniqueFd out;  // read ends of the app's stdout and stderr
  handoff::UniqueFd err;
};

// Returns once the child has exec'd (or failed to: the error names the
// syscall and errno, and the child is reaped).
handoff::Result<Launched> launch_app(const LaunchSpec& spec);

// The executable `name` stands for: itself if it has a '/', else the first
// executable of that name in $PATH.
handoff::Result<std::string> find_executable(const std::string& name);

// Environment variables the app must not inherit from batond: systemd's
// (they describe batond's own activation) and baton's own.
bool inherited_by_app(const std::string& entry);

}  // namespace baton::daemon
