#pragma once
// The pid file names the process that serves now. It is replaced atomically
// (temp file + rename) so a reader never sees it half-written, and removed at
// exit only by the process it names: an old generation must not delete the
// file its successor wrote.
//
// Writes while serving go to a thread of its own: replacing an existing file
// by rename can block for most of a millisecond (ext4 starts writing the new
// file's data back when it replaces one: measured 0.5-0.8 ms here), which the
// event loop would pay at every COMMIT. Every write and removal happens in
// the order asked, whichever thread does it. Waiting for the thread is
// bounded (kSettleBound): a file system that hangs must not keep the process
// from exiting.

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "baton/handoff/result.h"

namespace baton::daemon {

class PidFile {
 public:
  static constexpr std::chrono::seconds kSettleBound{5};
  enum class Replace {
    Always,
    // Only a file that names this process: our successor's own write, a
    // newer generation's, or a removal, is never undone by a late one of ours.
    IfOurs,
  };

  explicit PidFile(std::string path);
  ~PidFile();  // lets the writes asked land first (bounded)
  PidFile(const PidFile&) = delete;
  PidFile& operator=(const PidFile&) = delete;

  bool enabled() const { return !path_.empty(); }
  const std::string& path() const { return path_; }

  // Now, on the calling thread, after any write asked before (start-up).
  handoff::Status write(pid_t pid);
  // Soon, on the writer thread, after those asked before; its error is logged.
  void write_soon(pid_t pid, Replace replace = Replace::Always);
  // After any write asked before: removes the file if it names `pid`.
  void remove_if_names(pid_t pid);
  // Waits until every write asked has landed (or failed); false if one has
  // not after kSettleBound.
  bool settle();

 private:
  struct Shared;
  void start_writer();  // if not yet running

  std::string path_;
  std::shared_ptr<Shared> shared_;  // with the writer thread, which may outlive us (detached)
  std::thread writer_;              // started by the first write
};

}  // namespace baton::daemon
