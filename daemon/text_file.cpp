#include "text_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "baton/handoff/unique_fd.h"

namespace baton::daemon {

handoff::Result<std::string> read_text_file(const std::string& path) {
  handoff::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return handoff::errno_error("open " + path);
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n > 0) text.append(buf, static_cast<size_t>(n));
    else if (n == 0) return text;
    else if (errno != EINTR) return handoff::errno_error("read " + path);
  }
}

}  // namespace baton::daemon
