// baton-load is the judge of every handoff benchmark, so it is itself tested
// against baseline-echo: clean when the server is correct, and loud (exit 1,
// the right failure reason counted) when the server corrupts, resets, or is
// not there at all.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/client.h"
#include "support/process.h"

namespace baton::test {
namespace {

using nlohmann::json;

// A running baseline-echo and the address it printed.
struct EchoServer {
  TestProcess process;
  std::string endpoint;  // "127.0.0.1:PORT" or a unix path
};

EchoServer start_echo(std::vector<std::string> extra_args = {}) {
  std::vector<std::string> argv{tool_path("baseline-echo")};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  auto process = TestProcess::start(argv);
  auto line = process.wait_for_line("listening addr=", 10s);
  if (!line) throw std::runtime_error("baseline-echo did not start; log:\n" + process.log());
  return EchoServer{std::move(process), field(*line, "addr")};
}

struct LoadResult {
  CommandResult command;
  json report;
};

json read_report(const std::string& path) {
  std::ifstream in(path);
  if (!in) return json();
  return json::parse(in, nullptr, /*allow_exceptions=*/false);
}

LoadResult run_load(const std::string& target, const TempDir& dir, std::vector<std::string> extra_args) {
  const std::string report = dir.file("report.json");
  std::vector<std::string> argv{tool_path("baton-load"), "--target", target, "--report", report, "--quiet"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  LoadResult r{run_command(argv, 30s), json()};
  r.report = read_report(report);
  return r;
}

std::string describe(const LoadResult& r) {
  return r.command.status.describe() + "\nstdout:\n" + r.command.out + "\nstderr:\n" + r.command.err;
}

uint64_t failures(const json& report, const std::string& reason) {
  return report.at("failures").at(reason).get<uint64_t>();
}

// A TCP port that was just free: bound, read back, closed. Nothing listens on it.
std::string unused_tcp_endpoint() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) throw std::runtime_error("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error("bind/getsockname failed");
  return "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
}

TEST(LoadGenerator, CorrectServerGivesCleanRunWithVerifiedMessagesAndChurn) {
  auto echo = start_echo();
  TempDir dir;
  auto r = run_load("tcp://" + echo.endpoint, dir,
                    {"--duration", "2", "--connections", "4", "--pipeline", "2", "--churn-rate", "50"});
  ASSERT_TRUE(r.command.status.success()) << describe(r);
  ASSERT_TRUE(r.report.is_object()) << "no JSON report\n" << describe(r);
  EXPECT_GT(r.report.at("persistent").at("messages").get<uint64_t>(), 0u);
  EXPECT_GT(r.report.at("persistent").at("bytes_verified").get<uint64_t>(), 0u);
  EXPECT_GT(r.report.at("churn").at("succeeded").get<uint64_t>(), 0u);
  EXPECT_EQ(r.report.at("failures").at("total").get<uint64_t>(), 0u) << r.report.at("failures").dump();
  EXPECT_EQ(r.report.at("persistent").at("connected_at_start").get<int>(), 4);
  EXPECT_FALSE(r.report.at("timeline").empty());
  EXPECT_NE(r.command.out.find("baton-load: started connections=4"), std::string::npos) << r.command.out;
  EXPECT_NE(r.command.out.find("baton-load: messages="), std::string::npos) << r.command.out;
}

// --interval-ms makes the timeline finer, and started_monotonic_us places it on
// CLOCK_MONOTONIC (steady_clock), the clock of batond's upgrade history.
TEST(LoadGenerator, IntervalMsGivesAFinerTimelineOnTheMonotonicClock) {
  auto echo = start_echo();
  TempDir dir;
  const auto before = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::steady_clock::now().time_since_epoch()).count();
  auto r = run_load("tcp://" + echo.endpoint, dir,
                    {"--duration", "1", "--connections", "2", "--rate", "200", "--interval-ms", "100"});
  const auto after = std::chrono::duration_cast<std::chrono::microseconds>(
                         std::chrono::steady_clock::now().time_since_epoch()).count();
  ASSERT_TRUE(r.command.status.success()) << describe(r);
  ASSERT_TRUE(r.report.is_object()) << "no JSON report\n" << describe(r);
  EXPECT_EQ(r.report.at("parameters").at("interval_ms").get<int>(), 100);
  const auto started = r.report.at("started_monotonic_us").get<int64_t>();
  EXPECT_GE(started, before);
  EXPECT_LE(started, after);
  const auto& timeline = r.report.at("timeline");
  // Ten full intervals, and the drain's short one at most.
  ASSERT_GE(timeline.size(), 10u) << timeline.dump();
  EXPECT_LE(timeline.size(), 11u) << timeline.dump();
  EXPECT_NEAR(timeline.at(0).at("seconds").get<double>(), 0.1, 0.05);
  EXPECT_NEAR(timeline.at(9).at("end_s").get<double>(), 1.0, 0.05);
  uint64_t messages = 0;
  for (const auto& p : timeline) messages += p.at("messages").get<uint64_t>();
  EXPECT_EQ(messages, r.report.at("persistent").at("messages").get<uint64_t>());
}

TEST(LoadGenerator, CorrectServerOverUnixSocketGivesCleanRun) {
  TempDir sockets;
  auto echo = start_echo({"--listen", sockets.file("echo.sock")});
  TempDir dir;
  auto r = run_load("unix:" + echo.endpoint, dir, {"--duration", "1", "--connections", "4", "--churn-rate", "20"});
  ASSERT_TRUE(r.command.status.success()) << describe(r);
  EXPECT_GT(r.report.at("persistent").at("messages").get<uint64_t>(), 0u);
  EXPECT_GT(r.report.at("churn").at("succeeded").get<uint64_t>(), 0u);
  EXPECT_EQ(r.report.at("failures").at("total").get<uint64_t>(), 0u) << r.report.at("failures").dump();
}

TEST(LoadGenerator, CorruptedEchoIsCountedAsMismatchAndFailsTheRun) {
  auto echo = start_echo({"--fault", "corrupt", "--fault-after", "4096"});
  TempDir dir;
  auto r = run_load("tcp://" + echo.endpoint, dir, {"--duration", "1", "--connections", "2"});
  ASSERT_TRUE(r.command.status.exited) << describe(r);
  EXPECT_EQ(r.command.status.code, 1) << describe(r);
  ASSERT_TRUE(r.report.is_object()) << "no JSON report\n" << describe(r);
  EXPECT_GT(failures(r.report, "mismatch"), 0u) << r.report.at("failures").dump();
}

TEST(LoadGenerator, ServerResetIsCountedAndFailsTheRun) {
  auto echo = start_echo({"--fault", "reset", "--fault-after", "4096"});
  TempDir dir;
  auto r = run_load("tcp://" + echo.endpoint, dir, {"--duration", "1", "--connections", "2"});
  ASSERT_TRUE(r.command.status.exited) << describe(r);
  EXPECT_EQ(r.command.status.code, 1) << describe(r);
  ASSERT_TRUE(r.report.is_object()) << "no JSON report\n" << describe(r);
  EXPECT_GT(failures(r.report, "reset") + failures(r.report, "early_eof"), 0u) << r.report.at("failures").dump();
  EXPECT_EQ(failures(r.report, "mismatch"), 0u) << r.report.at("failures").dump();
}

TEST(LoadGenerator, NothingListeningIsCountedAsRefusedAndFailsTheRun) {
  TempDir dir;
  auto r = run_load("tcp://" + unused_tcp_endpoint(), dir, {"--duration", "1", "--connections", "2"});
  ASSERT_TRUE(r.command.status.exited) << describe(r);
  EXPECT_EQ(r.command.status.code, 1) << describe(r);
  ASSERT_TRUE(r.report.is_object()) << "no JSON report\n" << describe(r);
  EXPECT_GT(failures(r.report, "refused"), 0u) << r.report.at("failures").dump();
  EXPECT_EQ(r.report.at("persistent").at("messages").get<uint64_t>(), 0u);
}

TEST(LoadGenerator, SigintEndsALongRunEarlyAndCleanly) {
  auto echo = start_echo();
  TempDir dir;
  const std::string report = dir.file("report.json");
  auto load = TestProcess::start({tool_path("baton-load"), "--target", "tcp://" + echo.endpoint, "--duration", "60",
                                  "--connections", "4", "--churn-rate", "20", "--report", report});
  ASSERT_TRUE(load.wait_for_line("baton-load: started connections=4", 10s)) << load.log();
  // One timeline line: load has been flowing for a second before we interrupt.
  ASSERT_TRUE(load.wait_for_line("t=1 ", 10s)) << load.log();

  const auto signalled = std::chrono::steady_clock::now();
  load.signal(SIGINT);
  auto status = load.wait_exit(10s);
  const auto took = std::chrono::steady_clock::now() - signalled;

  ASSERT_TRUE(status) << "baton-load ignored SIGINT\n" << load.log();
  EXPECT_TRUE(status->success()) << status->describe() << "\n" << load.log();
  EXPECT_LT(took, 5s);
  auto r = read_report(report);
  ASSERT_TRUE(r.is_object()) << "no JSON report\n" << load.log();
  EXPECT_TRUE(r.at("interrupted").get<bool>());
  EXPECT_LT(r.at("duration_s").get<double>(), 30.0);
  EXPECT_GT(r.at("persistent").at("messages").get<uint64_t>(), 0u);
  EXPECT_EQ(r.at("failures").at("total").get<uint64_t>(), 0u) << r.at("failures").dump();
  EXPECT_NE(load.log().find("baton-load: messages="), std::string::npos) << load.log();
}

}  // namespace
}  // namespace baton::test
