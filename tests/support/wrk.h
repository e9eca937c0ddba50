#pragma once
// wrk, Debian's HTTP load generator, in the background for as long as a test
// needs (bounded: -d300s), with a report script that prints its totals as one
// JSON line; stopped with SIGINT, on which it reports.

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "process.h"

namespace baton::test {

class Wrk {
 public:
  // `endpoint`: "127.0.0.1:PORT"; the report script goes into `dir`.
  Wrk(const std::string& endpoint, const TempDir& dir, int connections = 8);
  // Stops it and returns its report: {requests, connect, read, write, status, timeout}.
  nlohmann::json finish();
  // Requests made, and not one socket error or non-2xx response.
  static void expect_clean(const nlohmann::json& report);

 private:
  std::optional<TestProcess> proc_;
};

}  // namespace baton::test
