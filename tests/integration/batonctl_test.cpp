// batonctl against the real batond: every command, upgrades under load,
// failures that must reach the operator, and a control socket that stays
// reachable and robust through garbage and upgrades.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "support/batond.h"
#include "support/client.h"
#include "support/load.h"

namespace baton::test {
namespace {

CommandResult batonctl(const BatondProcess& d, std::vector<std::string> args) {
  args.insert(args.begin(), {batonctl_path(), "--control", d.control_path()});
  return run_command(args, 60s);
}

nlohmann::json status_json(const BatondProcess& d) {
  auto r = batonctl(d, {"status", "--json"});
  EXPECT_EQ(r.status.code, 0) << r.err;
  return nlohmann::json::parse(r.out, nullptr, false);
}

// A new binary that takes its time: READY comes about a second late, so a
// test can act while the upgrade is in flight.
std::string slow_binary(const TempDir& dir) {
  const auto path = dir.file("slow-batond");
  std::ofstream(path) << "#!/bin/sh\nsleep 1\nexec " << batond_path() << " \"$@\"\n";
  ::chmod(path.c_str(), 0755);
  return path;
}

TEST(Batonctl, StatusShowsPidGenerationListenersAndConnections) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  auto conn = connect_to(d.address());
  ASSERT_TRUE(echo_roundtrip(conn.get(), "hi"));
  auto human = batonctl(d, {"status"});
  EXPECT_EQ(human.status.code, 0) << human.err;
  EXPECT_NE(human.out.find("pid          " + std::to_string(d.serving_pid())), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("tcp://" + d.address()), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("1 open, 1 accepted"), std::string::npos) << human.out;

  auto j = status_json(d);
  EXPECT_EQ(j["pid"], d.serving_pid());
  EXPECT_EQ(j["generation"], 1);
  EXPECT_EQ(j["state"], "serving");
  EXPECT_EQ(j["connections"]["open"], 1);
  EXPECT_EQ(j["upgrade"]["state"], "idle");
  ASSERT_EQ(j["listeners"].size(), 2u);
  EXPECT_EQ(j["listeners"][0]["name"], "echo");
  EXPECT_EQ(j["listeners"][0]["address"], "tcp://" + d.address());
  EXPECT_EQ(j["listeners"][1]["name"], "control");
}

TEST(Batonctl, UpgradesUnderLoadLoseNothingAndReportProgress) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  auto load = LoadRun::start("tcp://" + d.address(), {"--connections", "8", "--pipeline", "2", "--rate", "200",
                                                      "--churn-rate", "100"});
  for (int i = 0; i < 5; ++i) {
    const pid_t old_pid = d.serving_pid();
    auto r = batonctl(d, {"upgrade"});
    ASSERT_EQ(r.status.code, 0) << r.err << "\n" << d.log();
    EXPECT_NE(r.out.find("upgrade: spawned pid"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("ready after"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("upgrade: old pid " + std::to_string(old_pid) + " draining"), std::string::npos) << r.out;
    auto outcome = d.wait_upgrade_outcome(old_pid, 0);
    ASSERT_TRUE(outcome.ok);
    EXPECT_NE(r.out.find("upgrade: done; pid " + std::to_string(outcome.new_pid)), std::string::npos) << r.out;
    EXPECT_EQ(status_json(d)["pid"], outcome.new_pid);
  }
  auto report = load.stop();
  EXPECT_EQ(report.failures, 0) << report.summary;
  EXPECT_TRUE(report.status.success()) << report.summary;
}

TEST(Batonctl, FailedUpgradeReasonReachesStderrAndExitStatus) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  auto r = batonctl(d, {"upgrade", "--binary", "/bin/false"});
  EXPECT_EQ(r.status.code, 1);
  EXPECT_NE(r.err.find("batonctl: upgrade failed: rolled back: new process pid"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("exited before READY with exit status 1"), std::string::npos) << r.err;
  auto j = status_json(d);
  EXPECT_EQ(j["pid"], d.first_pid());
  EXPECT_EQ(j["upgrade"]["last"]["ok"], false);
  auto conn = connect_to(d.address());
  EXPECT_TRUE(conn && echo_roundtrip(conn.get(), "still here"));

  r = batonctl(d, {"upgrade", "--timeout", "1", "--binary", "/nonexistent"});
  EXPECT_EQ(r.status.code, 1);
  EXPECT_NE(r.err.find("spawn /nonexistent: no such file or directory"), std::string::npos) << r.err;
}

TEST(Batonctl, TwoConcurrentUpgradesGiveOneSuccessAndOneBusy) {
  TempDir dir;
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--binary", slow_binary(dir)});
  auto first = TestProcess::start({batonctl_path(), "--control", d.control_path(), "upgrade"});
  ASSERT_TRUE(first.wait_for_line("upgrade: spawned pid")) << first.log();
  auto second = batonctl(d, {"upgrade"});
  EXPECT_EQ(second.status.code, 1);
  EXPECT_NE(second.err.find("busy: an upgrade is already in progress"), std::string::npos) << second.err;
  auto done = first.wait_exit(30s);
  ASSERT_TRUE(done);
  EXPECT_TRUE(done->success()) << first.log();
  EXPECT_EQ(d.count_lines(d.first_pid(), "upgrade: spawned"), 1);
}

TEST(Batonctl, ControlSocketAnswersDuringAndAfterAnUpgrade) {
  TempDir dir;
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--binary", slow_binary(dir)});
  const pid_t old_pid = d.serving_pid();
  auto upgrading = TestProcess::start({batonctl_path(), "--control", d.control_path(), "upgrade"});
  ASSERT_TRUE(upgrading.wait_for_line("upgrade: spawned pid"));
  auto during = status_json(d);
  EXPECT_EQ(during["pid"], old_pid);
  EXPECT_TRUE(during["upgrade"]["state"] == "spawning" || during["upgrade"]["state"] == "awaiting-ready")
      << during.dump();
  auto done = upgrading.wait_exit(30s);
  ASSERT_TRUE(done && done->success()) << upgrading.log();
  auto outcome = d.wait_upgrade_outcome(old_pid, 0);
  ASSERT_TRUE(outcome.ok);
  auto after = status_json(d);
  EXPECT_EQ(after["pid"], outcome.new_pid);
  EXPECT_EQ(after["generation"], 2);
  EXPECT_EQ(after["listeners"][1]["inherited"], true);
}

// Sends raw bytes on the control socket; returns the reply line and whether
// the daemon then closed the connection.
std::pair<nlohmann::json, bool> raw_request(const BatondProcess& d, const std::string& bytes) {
  auto fd = connect_to(d.control_path());
  EXPECT_TRUE(fd);
  EXPECT_TRUE(send_all(fd.get(), bytes));
  std::string line;
  for (auto b = recv_exact(fd.get(), 1, 10s); b && (*b)[0] != '\n'; b = recv_exact(fd.get(), 1, 10s)) line += *b;
  return {nlohmann::json::parse(line, nullptr, false), wait_closed(fd.get(), 10s)};
}

TEST(Batonctl, GarbageOversizedAndUnknownRequestsGetAnErrorAndAreClosed) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  struct Case {
    std::string bytes;
    std::string error;
  };
  const std::vector<Case> cases = {
      {"garbage\n", "invalid JSON"},
      {"{\"cmd\":\"nope\"}\n", "unknown command 'nope'"},
      {"{\"v\":2,\"cmd\":\"status\"}\n", "unsupported protocol version 2"},
      {"[1,2,3]\n", "a request must be a JSON object"},
      {std::string(70 * 1024, 'a'), "request line longer than 65536 bytes"},
  };
  for (const auto& c : cases) {
    auto [reply, closed] = raw_request(d, c.bytes);
    EXPECT_EQ(reply["ok"], false) << c.error;
    EXPECT_EQ(reply["error"].get<std::string>().find(c.error), 0u) << reply.dump();
    EXPECT_TRUE(closed) << c.error;
  }
  auto j = status_json(d);
  EXPECT_EQ(j["pid"], d.first_pid());
  auto conn = connect_to(d.address());
  EXPECT_TRUE(conn && echo_roundtrip(conn.get(), "unaffected"));
}

TEST(Batonctl, ControlSocketIsOwnerOnly) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  struct stat st;
  ASSERT_EQ(::stat(d.control_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(Batonctl, StopReturnsOnceTheDaemonHasExited) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  auto r = batonctl(d, {"stop", "--timeout", "5"});
  EXPECT_EQ(r.status.code, 0) << r.err;
  EXPECT_NE(r.out.find("stop: pid " + std::to_string(d.first_pid()) + " exited"), std::string::npos) << r.out;
  auto status = d.process().wait_exit(1s);  // already gone: no waiting needed
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->success());
}

TEST(Batonctl, ReloadWithoutAConfigFileIsRefusedClearly) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  auto r = batonctl(d, {"reload"});
  EXPECT_EQ(r.status.code, 1);
  EXPECT_NE(r.err.find("batonctl: reload failed: batond was started without --config"), std::string::npos) << r.err;
}

TEST(Batonctl, ExitCodesForUnreachableAndUsage) {
  TempDir dir;
  auto r = run_command({batonctl_path(), "--control", dir.file("nothing.sock"), "status"});
  EXPECT_EQ(r.status.code, 3);
  EXPECT_NE(r.err.find("batonctl: cannot reach batond at " + dir.file("nothing.sock")), std::string::npos) << r.err;
  EXPECT_EQ(run_command({batonctl_path(), "frobnicate"}).status.code, 2);
  EXPECT_EQ(run_command({batonctl_path()}).status.code, 2);
  auto help = run_command({batonctl_path(), "--help"});
  EXPECT_EQ(help.status.code, 0);
  EXPECT_NE(help.out.find("3 cannot reach the daemon"), std::string::npos);
}

TEST(Batonctl, PidFileFallbackUpgradesAndStopsWithSignals) {
  TempDir dir;
  const auto pid_file = dir.file("batond.pid");
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--pid-file", pid_file});
  auto r = run_command({batonctl_path(), "--pid-file", pid_file, "upgrade"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  auto outcome = d.wait_upgrade_outcome(d.first_pid(), 0);
  ASSERT_TRUE(outcome.ok);
  EXPECT_NE(r.out.find("upgrade: done; pid " + std::to_string(outcome.new_pid)), std::string::npos) << r.out;

  auto conn = connect_to(d.address());
  EXPECT_TRUE(conn && echo_roundtrip(conn.get(), "served by the new pid"));
  conn.reset();
  r = run_command({batonctl_path(), "--pid-file", pid_file, "stop"});
  EXPECT_EQ(r.status.code, 0) << r.err;
  EXPECT_FALSE(pid_alive(outcome.new_pid));
  EXPECT_EQ(run_command({batonctl_path(), "--pid-file", pid_file, "status"}).status.code, 3);
}

}  // namespace
}  // namespace baton::test

namespace baton::test {
namespace {

TEST(Batonctl, StatusListsOlderGenerationsStillDraining) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  const pid_t gen1 = d.serving_pid();
  auto held = connect_to(d.address());
  ASSERT_TRUE(echo_roundtrip(held.get(), "pinning generation 1"));
  ASSERT_TRUE(d.upgrade().ok);
  auto held2 = connect_to(d.address());
  ASSERT_TRUE(echo_roundtrip(held2.get(), "pinning generation 2"));
  const pid_t gen2 = d.serving_pid();
  ASSERT_TRUE(d.upgrade().ok);

  nlohmann::json older;
  EXPECT_TRUE(eventually([&] {
    older = status_json(d)["draining_generations"];
    return older.size() == 2;
  })) << older.dump();
  EXPECT_EQ(older[0]["pid"], gen2);
  EXPECT_EQ(older[0]["generation"], 2);
  EXPECT_EQ(older[0]["connections"], 1);
  EXPECT_EQ(older[1]["pid"], gen1);
  EXPECT_EQ(older[1]["connections"], 1);
  auto human = batonctl(d, {"status"});
  EXPECT_NE(human.out.find("pid " + std::to_string(gen1) + " (generation 1): 1 connection(s) left"), std::string::npos)
      << human.out;

  held.reset();
  EXPECT_TRUE(d.wait_gone(gen1));
  EXPECT_TRUE(eventually([&] { return status_json(d)["draining_generations"].size() == 1; }));
  held2.reset();
  EXPECT_TRUE(d.wait_gone(gen2));
  EXPECT_TRUE(eventually([&] { return status_json(d)["draining_generations"].empty(); }));
}

}  // namespace
}  // namespace baton::test
