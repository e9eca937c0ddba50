#pragma once
// LoadRun: baton-load running against a daemon in the background, for tests
// that must prove "zero failed connections" across something (an upgrade, a
// rollback). Started through TestProcess, so it is killed with the test.

#include <string>
#include <vector>

#include "process.h"

namespace baton::test {

struct LoadReport {
  ExitStatus status;
  long long messages = 0;
  long long bytes_verified = 0;
  long long churn_succeeded = 0;
  long long failures = 0;
  std::string summary;  // baton-load's last stdout line, for assertion messages
};

class LoadRun {
 public:
  // target: "tcp://127.0.0.1:PORT" or "unix:/path". Waits until every
  // persistent connection is up; throws if that does not happen.
  static LoadRun start(const std::string& target, std::vector<std::string> extra_args = {});

  // SIGINT: baton-load verifies what is in flight, closes, writes its report.
  LoadReport stop();

 private:
  LoadRun(TestProcess p, std::unique_ptr<TempDir> dir) : proc_(std::move(p)), dir_(std::move(dir)) {}
  TestProcess proc_;
  std::unique_ptr<TempDir> dir_;
};

}  // namespace baton::test
