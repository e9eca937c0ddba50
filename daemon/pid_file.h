#pragma once
// The pid file names the process that serves now. It is replaced atomically
// (temp file + rename) so a reader never sees it half-written, and removed at
// exit only by the process it names: an old generation must not delete the
// file its successor wrote.

#include <sys/types.h>

#include <string>

#include "baton/handoff/result.h"

namespace baton::daemon {

class PidFile {
 public:
  explicit PidFile(std::string path) : path_(std::move(path)) {}
  bool enabled() const { return !path_.empty(); }
  const std::string& path() const { return path_; }

  handoff::Status write(pid_t pid) const;
  // Removes the file if it still names `pid`.
  void remove_if_names(pid_t pid) const;

 private:
  std::string path_;
};

}  // namespace baton::daemon
