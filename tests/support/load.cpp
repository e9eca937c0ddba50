#include "load.h"

#include <signal.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

namespace baton::test {

LoadRun LoadRun::start(const std::string& target, std::vector<std::string> extra_args) {
  auto dir = std::make_unique<TempDir>();
  std::vector<std::string> argv{tool_path("baton-load"), "--target", target, "--duration", "300", "--quiet",
                                "--report", dir->file("report.json")};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  LoadRun run(TestProcess::start(argv), std::move(dir));
  if (!run.proc_.wait_for_line("baton-load: started", 20s))
    throw std::runtime_error("baton-load did not start; output:\n" + run.proc_.log());
  return run;
}

LoadReport LoadRun::stop() {
  LoadReport r;
  proc_.signal(SIGINT);
  auto status = proc_.wait_exit(30s);
  if (!status) throw std::runtime_error("baton-load did not stop; output:\n" + proc_.log());
  r.status = *status;
  std::istringstream out(proc_.log());
  for (std::string line; std::getline(out, line);)
    if (line.rfind("baton-load: messages=", 0) == 0) r.summary = line;
  std::ifstream in(dir_->file("report.json"));
  if (!in) throw std::runtime_error("baton-load wrote no report; output:\n" + proc_.log());
  auto j = nlohmann::json::parse(in);
  r.messages = j["persistent"]["messages"].get<long long>();
  r.bytes_verified = j["persistent"]["bytes_verified"].get<long long>();
  r.churn_succeeded = j["churn"]["succeeded"].get<long long>();
  r.failures = j["failures"]["total"].get<long long>();
  return r;
}

}  // namespace baton::test
