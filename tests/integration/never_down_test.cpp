// Never down: no failure after a take-over leaves nothing serving, and a
// connection is read by one process only. Each test sets up the fault, proves
// that it happened, then checks that TCP, the Unix listener and batonctl
// still work.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "support/batond.h"
#include "support/client.h"
#include "support/load.h"
#include "support/process.h"

namespace baton::test {
namespace {


CommandResult batonctl(const BatondProcess& d, std::vector<std::string> args, std::chrono::milliseconds timeout = 60s) {
  args.insert(args.begin(), {batonctl_path(), "--control", d.control_path()});
  return run_command(args, timeout);
}

nlohmann::json status_json(const BatondProcess& d) {
  auto r = batonctl(d, {"status", "--json"});
  if (!r.status.success()) return nullptr;
  return nlohmann::json::parse(r.out, nullptr, false);
}

// TCP, the Unix listener and batonctl all answer, and the pid file names `pid`.
void expect_everything_served(const BatondProcess& d, const std::string& tcp, const std::string& sock,
                              const std::string& pid_file, pid_t pid) {
  auto t = connect_to(tcp);
  EXPECT_TRUE(t && echo_roundtrip(t.get(), "tcp still served")) << d.log();
  struct stat st;
  EXPECT_EQ(::lstat(sock.c_str(), &st), 0) << sock << " was removed\n" << d.log();
  auto u = connect_to(sock);
  EXPECT_TRUE(u && echo_roundtrip(u.get(), "unix still served")) << d.log();
  auto s = status_json(d);
  ASSERT_TRUE(s.is_object()) << "batonctl status failed\n" << d.log();
  EXPECT_EQ(s["pid"].get<pid_t>(), pid);
  if (!pid_file.empty()) {
    EXPECT_TRUE(eventually([&] { return read_pid_file(pid_file) == pid; })) << d.log();
  }
}

struct Service {
  TempDir dir;
  std::string sock = dir.file("echo.sock");
  std::string pid = dir.file("pid");
  std::vector<std::string> args(std::vector<std::string> more = {}) const {
    std::vector<std::string> a{"--listen", "echo=tcp://127.0.0.1:0", "--listen", "u=unix:" + sock, "--pid-file", pid,
                               "--control", dir.file("ctl.sock")};
    a.insert(a.end(), more.begin(), more.end());
    return a;
  }
};

// Reproduction 1 of the issue: the pid file's path becomes unwritable, and
// the old generation has no connection (it used to exit right after COMMIT
// while the new one died writing the pid file: nothing served any more).
TEST(NeverDown, AnUnwritablePidFileAfterCommitIsLoggedAndServingGoesOn) {
  Service s;
  auto d = BatondProcess::start(s.args());
  const std::string tcp = d.address();
  ASSERT_EQ(::unlink(s.pid.c_str()), 0);
  ASSERT_EQ(::mkdir(s.pid.c_str(), 0700), 0);
  const pid_t gen1 = d.serving_pid();
  auto r = d.upgrade();
  ASSERT_TRUE(r.ok) << d.log();
  EXPECT_TRUE(d.wait_for_line(r.new_pid, "pid file NOT written, serving anyway")) << d.log();
  ASSERT_TRUE(d.wait_gone(gen1)) << "the old generation exits once the probation is over\n" << d.log();
  expect_everything_served(d, tcp, s.sock, "", r.new_pid);
  EXPECT_TRUE(pid_alive(r.new_pid));
}

// Reproduction 2: a new generation that stops inside its probation, with a
// client on the old one. The old one resumes, and the Unix socket files
// (listener and control) are still there: no generation removes a path an
// older living one could resume on.
TEST(NeverDown, ANewGenerationStoppingInProbationLeavesTheSocketFilesToTheOldOne) {
  Service s;
  auto d = BatondProcess::start(s.args({"--upgrade-probation", "60"}));
  const std::string tcp = d.address();
  const pid_t gen1 = d.serving_pid();
  auto held = connect_to(tcp);
  ASSERT_TRUE(echo_roundtrip(held.get(), "pinned to generation 1"));
  ::kill(gen1, SIGUSR2);
  auto committed = d.wait_for_line(gen1, "upgrade: committed; successor=");
  ASSERT_TRUE(committed) << d.log();
  const pid_t gen2 = static_cast<pid_t>(std::stol(field(*committed, "successor")));
  d.process().track_descendant(gen2);
  ASSERT_TRUE(d.wait_for_line(gen2, "serving: generation 2")) << d.log();
  ::kill(gen2, SIGTERM);
  ASSERT_TRUE(d.wait_for_line(gen1, "exited during probation with exit status 0")) << d.log();
  ASSERT_TRUE(d.wait_for_line(gen1, "resumes serving")) << d.log();
  ASSERT_TRUE(d.wait_gone(gen2));
  expect_everything_served(d, tcp, s.sock, s.pid, gen1);
  EXPECT_TRUE(echo_roundtrip(held.get(), "and the old client too"));
}

// A new generation that exits 1 right after COMMIT while the old one has no
// connection: the old one stays through the probation and resumes, and
// batonctl upgrade reports the failure with its cause.
TEST(NeverDown, ANewGenerationDyingAfterCommitWithNoConnectionOpenIsRolledBack) {
  Service s;
  auto d = BatondProcess::start(s.args({"--binary", build_path("tests/integration/fake-successor")}),
                                with_env({"BATON_FAKE_MODE=exit-after-commit"}));
  const std::string tcp = d.address();
  const pid_t gen1 = d.serving_pid();
  auto up = batonctl(d, {"upgrade"});
  EXPECT_EQ(up.status.code, 1) << up.out << up.err;
  EXPECT_NE(up.err.find("exited during probation with exit status 1"), std::string::npos) << up.out << up.err;
  ASSERT_TRUE(d.process().wait_for_line("fake-successor: exiting 1 after COMMIT")) << "the fault did not happen";
  ASSERT_TRUE(d.wait_for_line(gen1, "resumes serving")) << d.log();
  expect_everything_served(d, tcp, s.sock, s.pid, gen1);
  auto st = status_json(d);
  EXPECT_EQ(st["upgrade"]["state"], "idle");
  EXPECT_EQ(st["upgrade"]["last"]["ok"], false);
  EXPECT_EQ(st["upgrade"]["last"]["committed"], true);
}

// A new generation that takes the listeners and goes silent after COMMIT:
// it has accepted nothing (SERVING comes first), so it is killed and the old
// one resumes.
TEST(NeverDown, ANewGenerationSilentAfterCommitIsKilledAndTheOldOneResumes) {
  Service s;
  auto d = BatondProcess::start(s.args({"--binary", build_path("tests/integration/fake-successor"),
                                        "--upgrade-timeout", "2"}),
                                with_env({"BATON_FAKE_MODE=silent-after-commit"}));
  const std::string tcp = d.address();
  const pid_t gen1 = d.serving_pid();
  ::kill(gen1, SIGUSR2);
  auto line = d.wait_for_line(gen1, "upgrade failed in probation", 20s);
  ASSERT_TRUE(line) << d.log();
  EXPECT_NE(line->find("did not report SERVING within 2000 ms"), std::string::npos) << *line;
  expect_everything_served(d, tcp, s.sock, s.pid, gen1);
}

// During the probation the new generation's status shows the old one
// standing by, and how long it still will.
TEST(NeverDown, StatusShowsTheOldGenerationStandingByInProbation) {
  Service s;
  auto d = BatondProcess::start(s.args({"--upgrade-probation", "60"}));
  const pid_t gen1 = d.serving_pid();
  ::kill(gen1, SIGUSR2);
  auto line = d.wait_for_line(gen1, "upgrade: committed; successor=");
  ASSERT_TRUE(line) << d.log();
  const pid_t gen2 = static_cast<pid_t>(std::stol(field(*line, "successor")));
  d.process().track_descendant(gen2);
  ASSERT_TRUE(d.wait_for_line(gen1, "serves; probation for 60000 ms")) << d.log();
  nlohmann::json older;
  ASSERT_TRUE(eventually([&] {
    auto st = status_json(d);
    older = st.is_object() ? st["draining_generations"] : nlohmann::json();
    return older.is_array() && older.size() == 1 && older[0]["probation_left_ms"].is_number();
  })) << older.dump() << d.log();
  EXPECT_EQ(older[0]["pid"].get<pid_t>(), gen1);
  EXPECT_GT(older[0]["probation_left_ms"].get<long>(), 30000);
  EXPECT_LE(older[0]["probation_left_ms"].get<long>(), 60000);
}

}  // namespace
}  // namespace baton::test
