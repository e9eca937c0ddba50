#include "inherited_fds.h"

#include <dirent.h>
#include <fcntl.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <sys/resource.h>

namespace baton::daemon {

std::pair<long, long> raise_fd_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return {-1, -1};
  const long before = static_cast<long>(lim.rlim_cur);
  if (!std::getenv(kOriginalFdLimitVariable)) ::setenv(kOriginalFdLimitVariable, std::to_string(before).c_str(), 1);
  if (lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) return {before, before};
  }
  return {before, static_cast<long>(lim.rlim_cur)};
}

long original_fd_limit() {
  const char* v = std::getenv(kOriginalFdLimitVariable);
  return v ? std::atol(v) : -1;
}

int close_inherited_fds_on_exec() {
  std::vector<int> fds;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] >= '0' && e->d_name[0] <= '9') fds.push_back(std::atoi(e->d_name));
    }
    ::closedir(d);  // after the walk: its own fd is in the list, and gone by now
  }
  int changed = 0;
  for (int fd : fds) {
    if (fd <= 2) continue;
    int flags = ::fcntl(fd, F_GETFD);
    if (flags < 0 || (flags & FD_CLOEXEC)) continue;
    if (::fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == 0) ++changed;
  }
  return changed;
}

}  // namespace baton::daemon
