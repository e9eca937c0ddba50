#include "baton/handoff/unique_fd.h"

#include <unistd.h>

namespace baton::handoff {

void UniqueFd::reset(int fd) {
  // close() is not retried on EINTR: on Linux the fd is released either way,
  // and a retry could close an fd another thread just opened.
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

}  // namespace baton::handoff
