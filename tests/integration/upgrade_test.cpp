// SIGUSR2 upgrades against the real batond: under continuous verified load,
// with misbehaving new binaries (rollback), while busy, and while an older
// generation still drains. Every failure baton-load counts is a failure here.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <set>

#include "support/batond.h"
#include "support/client.h"
#include "support/load.h"

namespace baton::test {
namespace {

std::string fake_successor() { return build_path("tests/integration/fake-successor"); }

int socket_count(pid_t pid) {
  int n = 0;
  for (const auto& target : open_fds(pid)) n += target.rfind("socket:", 0) == 0;
  return n;
}

// Persistent connections pipelining verified echoes, plus new short
// connections at a steady rate.
const std::vector<std::string> kLoad = {"--connections", "8", "--pipeline", "2", "--message-size", "512",
                                        "--rate", "200", "--churn-rate", "100"};

// Whether `binary` carries AddressSanitizer (its runtime's entry point is named in it).
bool built_with_asan(const std::string& binary) {
  std::ifstream in(binary, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return bytes.find("__asan_init") != std::string::npos;
}

// posix_spawn held for `delay_ms` (an LD_PRELOAD shim), as an exec that hangs would hold it.
ProcessOptions slow_spawn(int delay_ms) {
  return with_env({std::string("LD_PRELOAD=") + BATON_SLOW_SPAWN_SHIM,
                   "BATON_TEST_SPAWN_DELAY_MS=" + std::to_string(delay_ms)});
}

// The spawn runs on a thread of its own: one that does not return by the
// READY deadline fails the upgrade then (not when it returns), the loop
// serves meanwhile, and neither a new request nor a stop waits for it.
TEST(Upgrade, ASpawnThatHangsFailsAtTheReadyDeadlineAndNeitherARequestNorAStopWaitsForIt) {
  // An LD_PRELOAD ahead of the sanitizer runtime is refused by it; the
  // Release pass runs this (ChildProcess's own unit tests run in both).
  // Asked of the binary itself: gcc and clang announce the sanitizer differently.
  if (built_with_asan(batond_path())) GTEST_SKIP() << "LD_PRELOAD shim and AddressSanitizer do not mix";
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--upgrade-timeout", "1"}, slow_spawn(60000));
  const pid_t pid = d.serving_pid();
  auto held = connect_to(d.address());
  ASSERT_TRUE(held && echo_roundtrip(held.get(), "before"));
  auto r = d.upgrade(15s);  // the spawn returns after 60 s
  EXPECT_FALSE(r.ok) << r.line;
  EXPECT_NE(r.line.find("no READY within 1000 ms"), std::string::npos) << r.line << "\n" << d.log();
  EXPECT_NE(r.line.find("still serving"), std::string::npos) << r.line;
  EXPECT_TRUE(echo_roundtrip(held.get(), "during the spawn"));
  auto again = d.upgrade(15s);  // not "busy": that attempt is over
  EXPECT_NE(again.line.find("no READY within 1000 ms"), std::string::npos) << again.line << "\n" << d.log();
  EXPECT_EQ(d.count_lines(pid, "busy"), 0) << d.log();
  held.reset();  // nothing to drain: the stop is over at once, unless the spawn holds it
  ::kill(pid, SIGTERM);
  auto st = d.process().wait_exit(15s);
  ASSERT_TRUE(st) << "a stop waited for the spawn\n" << d.log();
  EXPECT_TRUE(st->success()) << st->describe() << "\n" << d.log();
}

// A binary the kernel cannot execute (no ELF, no #!): the spawn reports it
// after the request, as the upgrade's outcome; nothing was started.
TEST(Upgrade, ABinaryThatCannotBeExecutedFailsTheUpgradeAndServingGoesOn) {
  TempDir dir;
  const auto binary = dir.file("not-a-program");
  { std::ofstream(binary) << "this is text, not a program\n"; }
  ASSERT_EQ(::chmod(binary.c_str(), 0755), 0);
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--binary", binary});
  const pid_t pid = d.serving_pid();
  auto held = connect_to(d.address());
  ASSERT_TRUE(held && echo_roundtrip(held.get(), "before"));
  auto r = d.upgrade();
  EXPECT_FALSE(r.ok) << r.line;
  EXPECT_NE(r.line.find("spawn " + binary + ": exec format error"), std::string::npos) << r.line << "\n" << d.log();
  EXPECT_NE(r.line.find("still serving"), std::string::npos) << r.line;
  EXPECT_EQ(d.count_lines(pid, "upgrade: spawned"), 0) << d.log();
  EXPECT_TRUE(echo_roundtrip(held.get(), "after"));
  EXPECT_EQ(d.serving_pid(), pid);
  EXPECT_EQ(zombie_children_of(pid), 0);
}

TEST(Upgrade, TwentyUpgradesUnderLoadLoseNothing) {
  TempDir dir;
  const auto sock = dir.file("echo.sock");
  const auto pid_file = dir.file("batond.pid");
  auto d = BatondProcess::start(
      {"--listen", "echo=tcp://127.0.0.1:0", "--listen", "local=unix:" + sock, "--pid-file", pid_file});
  const auto tcp = "tcp://" + d.address();
  auto load = LoadRun::start(tcp, kLoad);
  auto unix_load = LoadRun::start("unix:" + sock, {"--connections", "2", "--churn-rate", "20", "--rate", "100"});

  std::vector<pid_t> pids{d.serving_pid()};
  for (int i = 0; i < 20; ++i) {
    auto r = d.upgrade();
    ASSERT_TRUE(r.ok) << "upgrade " << i + 1 << ": " << r.line << "\n" << d.log();
    ASSERT_EQ(std::set<pid_t>(pids.begin(), pids.end()).count(r.new_pid), 0u) << "pid reused";
    pids.push_back(r.new_pid);
    EXPECT_EQ(read_pid_file(pid_file), r.new_pid) << "pid file after upgrade " << i + 1;
  }

  auto report = load.stop();
  auto unix_report = unix_load.stop();
  EXPECT_EQ(report.failures, 0) << report.summary;
  EXPECT_TRUE(report.status.success()) << report.summary;
  EXPECT_GT(report.messages, 0);
  EXPECT_GT(report.churn_succeeded, 0);
  EXPECT_EQ(unix_report.failures, 0) << unix_report.summary;
  EXPECT_TRUE(unix_report.status.success()) << unix_report.summary;

  // The load's connections are closed now: every old generation exits, and
  // each is reaped (by its parent, or by us once re-parented): no zombie.
  for (size_t i = 0; i + 1 < pids.size(); ++i) {
    EXPECT_TRUE(d.wait_gone(pids[i])) << "generation " << i + 1 << " (pid " << pids[i] << ") still there";
  }
  EXPECT_TRUE(eventually([&] {
    reap_zombies();
    for (size_t i = 1; i + 1 < pids.size(); ++i)
      if (std::ifstream("/proc/" + std::to_string(pids[i]) + "/stat")) return false;
    return true;
  })) << "an old generation was left a zombie";
  EXPECT_TRUE(pid_alive(pids.back()));
  auto conn = connect_to(d.address());
  EXPECT_TRUE(conn && echo_roundtrip(conn.get(), "after twenty upgrades\n"));
}

TEST(Upgrade, BothLogsShowTheWholeSequenceWithTimings) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  const pid_t old_pid = d.serving_pid();
  auto r = d.upgrade();
  ASSERT_TRUE(r.ok) << d.log();
  for (const char* step : {"upgrade (SIGUSR2): starting", "upgrade: idle -> spawning", "spawning -> awaiting-ready",
                           "awaiting-ready -> probation", "READY", "COMMIT sent",
                           "probation -> handed-over", "passed probation", "ms after the request", "stopped accepting",
                           "drain: started (handed over to pid", "exiting with status 0"})
    EXPECT_TRUE(d.wait_for_line(old_pid, step)) << "old generation never logged '" << step << "'\n" << d.log();
  for (const char* step : {"hand-off: taking over as generation 2", "hand-off: received 2 listener(s), all valid",
                           "listening name=echo", "inherited=yes", "serving: generation 2 ready"})
    EXPECT_TRUE(d.wait_for_line(r.new_pid, step)) << "new generation never logged '" << step << "'\n" << d.log();
  EXPECT_NE(r.line.find("gen=1"), std::string::npos);
  EXPECT_TRUE(d.wait_for_line(r.new_pid, "gen=2 "));
}

TEST(Upgrade, NothingButTheListenersLeaksIntoTheNewProcess) {
  TempDir dir;
  const std::vector<std::string> args{"--listen", "echo=tcp://127.0.0.1:0", "--listen",
                                      "local=unix:" + dir.file("s.sock")};
  auto d = BatondProcess::start(args);
  // Clients of the old generation: their sockets must stay there.
  auto c1 = connect_to(d.address());
  auto c2 = connect_to(dir.file("s.sock"));
  ASSERT_TRUE(echo_roundtrip(c1.get(), "x") && echo_roundtrip(c2.get(), "y"));
  const auto old_fd_list = open_fds(d.serving_pid());
  auto r = d.upgrade();
  ASSERT_TRUE(r.ok) << d.log();
  ASSERT_TRUE(d.wait_for_line(r.new_pid, "serving: generation 2"));
  // Its listeners (echo, local, control) and its end of the hand-off channel,
  // kept for the old generation's drain reports.
  EXPECT_EQ(socket_count(r.new_pid), 4) << "new generation holds more sockets than its listeners and channel";
  // The same count as the old generation minus its two client connections.
  // Every fd of the new process is its stdio, one of its listeners, or its
  // own (libuv's epoll, pipes): none is a descriptor the old process held.
  std::set<std::string> old_set(old_fd_list.begin(), old_fd_list.end());
  int listeners = 0;
  for (const auto& target : open_fds(r.new_pid)) {
    // stdio, and anon inodes (epoll, eventfd), whose names carry no identity.
    if (target == "/dev/null" || target == d.process().log_path() || target.rfind("anon_inode:", 0) == 0) continue;
    if (target.rfind("socket:", 0) == 0 && old_set.count(target)) {
      ++listeners;
      continue;
    }
    EXPECT_EQ(old_set.count(target), 0u) << "the new process inherited " << target;
  }
  EXPECT_EQ(listeners, 3);  // echo, local and the control socket
  EXPECT_TRUE(echo_roundtrip(c1.get(), "old clients still served") && echo_roundtrip(c2.get(), "both"));
}

struct RollbackCase {
  const char* name;
  const char* binary;  // "" = fake-successor
  const char* mode;    // BATON_FAKE_MODE
  const char* reason;  // expected in the failure line
};

// Names the case in test output instead of dumping its bytes.
void PrintTo(const RollbackCase& c, std::ostream* os) { *os << c.name; }

class Rollback : public ::testing::TestWithParam<RollbackCase> {};

TEST_P(Rollback, OldGenerationServesOnWithZeroFailures) {
  const auto& c = GetParam();
  const std::string binary = *c.binary ? c.binary : fake_successor();
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--binary", binary, "--upgrade-timeout", "1"},
                                with_env({std::string("BATON_FAKE_MODE=") + c.mode}));
  const pid_t pid = d.serving_pid();
  auto held = connect_to(d.address());
  ASSERT_TRUE(echo_roundtrip(held.get(), "before"));
  auto load = LoadRun::start("tcp://" + d.address(), kLoad);

  auto r = d.upgrade();
  EXPECT_FALSE(r.ok) << r.line;
  EXPECT_NE(r.line.find(c.reason), std::string::npos) << r.line << "\n" << d.log();
  EXPECT_NE(r.line.find("still serving"), std::string::npos) << r.line;

  // The attempt really happened: a child was spawned, and it is gone now.
  if (std::string(c.name) != "missing_binary") {
    auto spawned = d.wait_for_line(pid, "upgrade: spawned");
    ASSERT_TRUE(spawned) << d.log();
    const pid_t child = static_cast<pid_t>(std::stol(spawned->substr(spawned->rfind("pid ") + 4)));
    EXPECT_FALSE(pid_alive(child)) << "the failed new process " << child << " is still running";
    EXPECT_TRUE(d.wait_for_line(pid, "reaped"));
  }

  EXPECT_TRUE(echo_roundtrip(held.get(), "after"));
  auto fresh = connect_to(d.address());
  EXPECT_TRUE(fresh && echo_roundtrip(fresh.get(), "fresh"));
  auto report = load.stop();
  EXPECT_EQ(report.failures, 0) << report.summary;
  EXPECT_TRUE(report.status.success()) << report.summary;
  EXPECT_EQ(d.serving_pid(), pid);
  EXPECT_TRUE(d.process().running());
  EXPECT_EQ(zombie_children_of(pid), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Upgrade, Rollback,
    ::testing::Values(RollbackCase{"bin_false", "/bin/false", "", "exited before READY with exit status 1"},
                      RollbackCase{"missing_binary", "/nonexistent/batond", "", "spawn /nonexistent/batond: no such file or directory"},
                      RollbackCase{"never_ready", "", "never-ready", "no READY within 1000 ms"},
                      RollbackCase{"exit_after_hello", "", "exit-after-hello", "exited before READY with exit status 3"},
                      RollbackCase{"crash_after_hello", "", "crash-after-hello", "signal 6"},
                      RollbackCase{"garbage", "", "garbage", "bad magic"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Upgrade, SecondRequestWhileOneIsInFlightIsRefusedAsBusy) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--binary", fake_successor(),
                                 "--upgrade-timeout", "3"},
                                with_env({"BATON_FAKE_MODE=never-ready"}));
  const pid_t pid = d.serving_pid();
  d.signal_serving(SIGUSR2);
  ASSERT_TRUE(d.wait_for_line(pid, "upgrade: spawning -> awaiting-ready")) << d.log();
  d.signal_serving(SIGUSR2);
  EXPECT_TRUE(d.wait_for_line(pid, "busy: an upgrade is already in progress (awaiting-ready)")) << d.log();
  auto r = d.wait_upgrade_outcome(pid, 0);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(d.count_lines(pid, "upgrade: spawned"), 1);
}

TEST(Upgrade, TwoSignalsAtOnceGiveOneUpgrade) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  const pid_t pid = d.serving_pid();
  d.signal_serving(SIGUSR2);
  d.signal_serving(SIGUSR2);
  auto r = d.wait_upgrade_outcome(pid, 0);
  ASSERT_TRUE(r.ok) << d.log();
  // The old generation has no connections: it exits at once, after which it
  // can start nothing more.
  ASSERT_TRUE(d.wait_gone(pid));
  EXPECT_EQ(d.count_lines(pid, "upgrade: spawned"), 1) << d.log();
  EXPECT_EQ(d.upgrade_outcomes(pid), 1);
}

TEST(Upgrade, NewGenerationCanUpgradeAgainWhileTheOldOneStillDrains) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  const pid_t gen1 = d.serving_pid();
  auto held = connect_to(d.address());
  ASSERT_TRUE(echo_roundtrip(held.get(), "pinned to generation 1"));
  auto r2 = d.upgrade();
  ASSERT_TRUE(r2.ok) << d.log();
  auto r3 = d.upgrade();
  ASSERT_TRUE(r3.ok) << d.log();
  EXPECT_TRUE(d.wait_gone(r2.new_pid)) << "generation 2 had no connections and should have exited";
  EXPECT_TRUE(pid_alive(gen1)) << "generation 1 exited while its client was connected";
  EXPECT_TRUE(echo_roundtrip(held.get(), "still echoed by generation 1"));
  auto fresh = connect_to(d.address());
  EXPECT_TRUE(fresh && echo_roundtrip(fresh.get(), "served by generation 3"));
  held.reset();
  EXPECT_TRUE(d.wait_gone(gen1)) << d.log();
  EXPECT_TRUE(d.wait_for_line(gen1, "1 closed by their clients"));
}

TEST(Upgrade, DrainingGenerationRefusesFurtherUpgrades) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  const pid_t gen1 = d.serving_pid();
  auto held = connect_to(d.address());
  ASSERT_TRUE(echo_roundtrip(held.get(), "x"));
  ASSERT_TRUE(d.upgrade().ok);
  ::kill(gen1, SIGUSR2);
  EXPECT_TRUE(d.wait_for_line(gen1, "upgrade (SIGUSR2) refused: this generation is draining")) << d.log();
}

}  // namespace
}  // namespace baton::test

namespace baton::test {
namespace {

TEST(Upgrade, OldGenerationResumesWhenTheNewOneDiesAfterTakingOverAndRefusesNothing) {
  TempDir dir;
  const auto pid_file = dir.file("batond.pid");
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--pid-file", pid_file});
  const pid_t gen1 = d.serving_pid();
  auto held = connect_to(d.address());  // keeps generation 1 draining, so alive
  ASSERT_TRUE(echo_roundtrip(held.get(), "pinned"));
  auto r = d.upgrade();
  ASSERT_TRUE(r.ok) << d.log();
  auto churn = LoadRun::start("tcp://" + d.address(), {"--connections", "0", "--churn-rate", "200"});

  ::kill(r.new_pid, SIGKILL);  // the new generation dies after READY
  ASSERT_TRUE(d.wait_for_line(gen1, "resumes serving", 15s)) << d.log();
  ASSERT_TRUE(d.wait_for_line(gen1, "resumed=yes"));
  EXPECT_TRUE(d.wait_for_line(gen1, "upgrade: handed-over -> idle"));
  EXPECT_EQ(read_pid_file(pid_file), gen1) << "the pid file must name the generation that serves again";

  auto fresh = connect_to(d.address());
  EXPECT_TRUE(fresh && echo_roundtrip(fresh.get(), "served by generation 1 again"));
  EXPECT_TRUE(echo_roundtrip(held.get(), "and the old client too"));
  auto report = churn.stop();
  // Connections that generation 2 had accepted died with it (reset); none may
  // have been refused: the listening socket never closed.
  EXPECT_NE(report.summary.find(" refused=0 "), std::string::npos) << report.summary;
  EXPECT_GT(report.churn_succeeded, 0);

  // It can be upgraded again.
  ::kill(gen1, SIGUSR2);
  auto again = d.wait_upgrade_outcome(gen1, 1);
  EXPECT_TRUE(again.ok) << d.log();
}

TEST(Upgrade, OldGenerationDoesNotResumeAfterACleanStopOfTheNewOne) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  const pid_t gen1 = d.serving_pid();
  auto held = connect_to(d.address());
  ASSERT_TRUE(echo_roundtrip(held.get(), "pinned"));
  auto r = d.upgrade();
  ASSERT_TRUE(r.ok);
  ::kill(r.new_pid, SIGTERM);
  ASSERT_TRUE(d.wait_for_line(gen1, "successor pid " + std::to_string(r.new_pid) + " exited with exit status 0"))
      << d.log();
  EXPECT_EQ(d.count_lines(gen1, "resumes serving"), 0);
  EXPECT_FALSE(connect_to(d.address())) << "nobody should accept after a deliberate stop";
}

TEST(Upgrade, OldGenerationDoesNotResumeWhenTheNewOneDiesAfterHandingOverInTurn) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  const pid_t gen1 = d.serving_pid();
  auto held = connect_to(d.address());
  ASSERT_TRUE(echo_roundtrip(held.get(), "pinned"));
  auto r2 = d.upgrade();
  ASSERT_TRUE(r2.ok);
  auto held2 = connect_to(d.address());
  ASSERT_TRUE(echo_roundtrip(held2.get(), "pins generation 2"));
  auto r3 = d.upgrade();
  ASSERT_TRUE(r3.ok);
  ASSERT_TRUE(d.wait_for_line(gen1, "commits to a newer generation (pid " + std::to_string(r3.new_pid) + ")")) << d.log();
  ::kill(r2.new_pid, SIGKILL);
  ASSERT_TRUE(d.wait_for_line(gen1, "after handing over in turn")) << d.log();
  EXPECT_EQ(d.count_lines(gen1, "resumes serving"), 0);
  auto fresh = connect_to(d.address());
  EXPECT_TRUE(fresh && echo_roundtrip(fresh.get(), "generation 3 serves"));
}

}  // namespace
}  // namespace baton::test
