#pragma once
// BatondProcess: the real batond under test, on top of TestProcess. Knows how
// to read its log: which pid serves now, which address a listener got, the
// outcome of an upgrade. Every generation it learns of is tracked, so all are
// killed and reaped when the test ends, whatever it asserted.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "process.h"

namespace baton::test {

class BatondProcess {
 public:
  // Starts batond with `args` and waits until it serves; throws if it does not.
  static BatondProcess start(std::vector<std::string> args, TestProcess::Options options = {});
  // Starts batond and returns without waiting (for start-up failure tests).
  static BatondProcess launch(std::vector<std::string> args, TestProcess::Options options = {});

  BatondProcess(BatondProcess&&) = default;
  // Kills every process the log names (each generation, and any new binary
  // still starting), not only the ones the test waited for.
  ~BatondProcess();

  // The control socket: --control as given, else one in a private temp dir.
  const std::string& control_path() const { return control_path_; }

  TestProcess& process() { return proc_; }
  const TestProcess& process() const { return proc_; }
  pid_t first_pid() const { return proc_.pid(); }
  pid_t serving_pid() const { return serving_; }
  std::string log() const { return proc_.log(); }

  // The endpoint ("127.0.0.1:41234" or a path) the serving pid logged for a listener.
  std::string address(const std::string& listener = "echo") const;

  struct UpgradeResult {
    bool ok = false;
    pid_t new_pid = 0;
    std::string line;  // the outcome line from the old generation's log
  };
  // Sends SIGUSR2 to the serving pid and waits for the outcome line. On
  // success the new pid serves from now on.
  UpgradeResult upgrade(std::chrono::milliseconds timeout = 20s);
  // Waits for the outcome of an upgrade some other trigger started.
  UpgradeResult wait_upgrade_outcome(pid_t from, int skip, std::chrono::milliseconds timeout = 20s);
  int upgrade_outcomes(pid_t from) const;
  // Waits for `from` to commit to its successor (the new process accepts
  // from then on, in probation); returns that pid, tracked for clean-up, or 0.
  pid_t wait_commit(pid_t from, std::chrono::milliseconds timeout = 20s, int skip = 0);

  void signal_serving(int signo) const;
  // Lines logged by one pid.
  int count_lines(pid_t pid, const std::string& needle) const;
  std::optional<std::string> wait_for_line(pid_t pid, const std::string& needle,
                                           std::chrono::milliseconds timeout = 10s, int skip = 0) const;
  // The (skip+1)-th line of `pid` that `match` accepts.
  std::optional<std::string> wait_for_match(pid_t pid, const std::function<bool(const std::string&)>& match,
                                            std::chrono::milliseconds timeout, int skip = 0) const;
  // Waits for `pid` to be gone (exited and reaped by whoever is its parent).
  bool wait_gone(pid_t pid, std::chrono::milliseconds timeout = 20s);

 private:
  BatondProcess(TestProcess p, std::unique_ptr<TempDir> dir, std::string control)
      : dir_(std::move(dir)), control_path_(std::move(control)), proc_(std::move(p)), serving_(proc_.pid()) {}
  std::unique_ptr<TempDir> dir_;  // declared first: destroyed after the processes are gone
  std::string control_path_;
  TestProcess proc_;
  pid_t serving_;
};

// Adds "--control <dir>/control.sock" unless the arguments name a control
// socket already: tests never share the default path. Returns the path.
std::string add_private_control(std::vector<std::string>& args, const TempDir& dir);

// "pid=123 " as the daemon writes it on every line.
std::string pid_tag(pid_t pid);

}  // namespace baton::test
