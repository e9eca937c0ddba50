#pragma once
// BatondProcess: the real batond under test, on top of TestProcess. Knows how
// to read its log: which pid serves now, which address a listener got, the
// outcome of an upgrade. Every generation it learns of is tracked, so all are
// killed and reaped when the test ends, whatever it asserted.

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

  void signal_serving(int signo) const;
  // Lines logged by one pid.
  int count_lines(pid_t pid, const std::string& needle) const;
  std::optional<std::string> wait_for_line(pid_t pid, const std::string& needle,
                                           std::chrono::milliseconds timeout = 10s, int skip = 0) const;
  // Waits for `pid` to be gone (exited and reaped by whoever is its parent).
  bool wait_gone(pid_t pid, std::chrono::milliseconds timeout = 20s);

 private:
  explicit BatondProcess(TestProcess p) : proc_(std::move(p)), serving_(proc_.pid()) {}
  TestProcess proc_;
  pid_t serving_;
};

// "pid=123 " as the daemon writes it on every line.
std::string pid_tag(pid_t pid);

}  // namespace baton::test
