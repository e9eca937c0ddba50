#include "pid_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <sstream>
#include <string>

#include "baton/handoff/unique_fd.h"
#include "text_file.h"

namespace baton::daemon {

handoff::Status PidFile::write(pid_t pid) const {
  if (!enabled()) return {};
  const std::string tmp = path_ + ".tmp." + std::to_string(::getpid());
  // Never through a link someone planted under the predictable name: remove
  // whatever is there and create the file afresh.
  ::unlink(tmp.c_str());
  handoff::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd) return handoff::errno_error("open " + tmp);
  const std::string text = std::to_string(pid) + "\n";
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    auto err = handoff::errno_error("write " + tmp);
    ::unlink(tmp.c_str());
    return err;
  }
  fd.reset();
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    auto err = handoff::errno_error("rename " + tmp + " to " + path_);
    ::unlink(tmp.c_str());
    return err;
  }
  return {};
}

void PidFile::remove_if_names(pid_t pid) const {
  if (!enabled()) return;
  auto text = read_text_file(path_);
  std::istringstream in(text ? text.value() : std::string());
  pid_t named = 0;
  if (in >> named && named == pid) ::unlink(path_.c_str());
}

}  // namespace baton::daemon
