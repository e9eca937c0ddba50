#include "wrk.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <sstream>

namespace baton::test {

Wrk::Wrk(const std::string& endpoint, const TempDir& dir, int connections) {
  const auto script = dir.file("report.lua");
  std::ofstream(script) << R"(done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout))
end
)";
  proc_.emplace(TestProcess::start({"/usr/bin/wrk", "-t1", "-c" + std::to_string(connections), "-d300s", "--timeout",
                                    "10s", "-s", script, "http://" + endpoint + "/"}));
}

nlohmann::json Wrk::finish() {
  proc_->signal(SIGINT);
  auto status = proc_->wait_exit(30s);
  EXPECT_TRUE(status && status->success()) << proc_->log();
  std::istringstream in(proc_->log());
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("{\"requests\"")) return nlohmann::json::parse(line, nullptr, false);
  ADD_FAILURE() << "wrk printed no report:\n" << proc_->log();
  return {};
}

void Wrk::expect_clean(const nlohmann::json& r) {
  ASSERT_TRUE(r.is_object());
  EXPECT_GT(r["requests"].get<long>(), 0);
  for (const char* k : {"connect", "read", "write", "timeout"}) EXPECT_EQ(r[k].get<long>(), 0) << k << " errors: " << r;
  EXPECT_EQ(r["status"].get<long>(), 0) << "non-2xx responses: " << r;
}

}  // namespace baton::test
