// Never down: no failure after a take-over leaves nothing serving, and a
// connection is read by one process only. Each test sets up the fault, proves
// that it happened, then checks that TCP, the Unix listener and batonctl
// still work.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <poll.h>
#include <sys/socket.h>
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

// A client pinned to the serving generation, then an upgrade whose new
// generation serves while the old one still has it on probation (60 s).
void upgrade_into_probation(BatondProcess& d, UniqueFd& held, pid_t& gen2) {
  const pid_t gen1 = d.serving_pid();
  held = connect_to(d.address());
  ASSERT_TRUE(echo_roundtrip(held.get(), "pinned to generation 1"));
  ::kill(gen1, SIGUSR2);
  gen2 = d.wait_commit(gen1);
  ASSERT_NE(gen2, 0) << d.log();
  ASSERT_TRUE(d.wait_for_line(gen2, "serving: generation 2")) << d.log();
}

// Reproduction 2: a new generation that dies inside its probation, with a
// client on the old one. The old one resumes, and the Unix socket files
// (listener and control) are still there: no generation removes a path an
// older living one could resume on.
TEST(NeverDown, ANewGenerationDyingInProbationLeavesTheSocketFilesToTheOldOne) {
  Service s;
  auto d = BatondProcess::start(s.args({"--upgrade-probation", "60"}));
  const std::string tcp = d.address();
  const pid_t gen1 = d.serving_pid();
  UniqueFd held;
  pid_t gen2 = 0;
  ASSERT_NO_FATAL_FAILURE(upgrade_into_probation(d, held, gen2));
  ::kill(gen2, SIGKILL);
  ASSERT_TRUE(d.wait_for_line(gen1, "exited during probation with signal 9")) << d.log();
  ASSERT_TRUE(d.wait_for_line(gen1, "resumes serving")) << d.log();
  ASSERT_TRUE(d.wait_gone(gen2));
  expect_everything_served(d, tcp, s.sock, s.pid, gen1);
  EXPECT_TRUE(echo_roundtrip(held.get(), "and the old client too"));
}

// A stop is for the service: the new generation, stopped inside its
// probation, passes the stop to the old one, which therefore does not
// resume once the new one has exited. Both drain and exit 0, and the last
// one standing removes the socket file.
TEST(NeverDown, AStopOfTheNewGenerationInProbationStopsTheOldOneToo) {
  Service s;
  auto d = BatondProcess::start(s.args({"--upgrade-probation", "60"}));
  const pid_t gen1 = d.serving_pid();
  UniqueFd held;
  pid_t gen2 = 0;
  ASSERT_NO_FATAL_FAILURE(upgrade_into_probation(d, held, gen2));
  ::kill(gen2, SIGTERM);
  ASSERT_TRUE(d.wait_for_line(gen2, "stop passed on to the previous generation pid " + std::to_string(gen1)))
      << d.log();
  ASSERT_TRUE(d.wait_gone(gen2));
  ASSERT_TRUE(d.wait_for_line(gen1, "not resuming: a stop was asked of this generation")) << d.log();
  EXPECT_TRUE(echo_roundtrip(held.get(), "generation 1 drains its client"));
  EXPECT_EQ(read_pid_file(s.pid), gen1) << "the pid file names the process still stopping, not the dead one";
  held.reset();
  auto status = d.process().wait_exit(20s);
  ASSERT_TRUE(status) << d.log();
  EXPECT_TRUE(status->success()) << status->describe() << "\n" << d.log();
  EXPECT_EQ(d.count_lines(gen1, "resumes serving"), 0) << d.log();
  struct stat st;
  EXPECT_NE(::lstat(s.sock.c_str(), &st), 0) << "the last generation standing removes its socket file";
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
  const pid_t gen2 = d.wait_commit(gen1);
  ASSERT_NE(gen2, 0) << d.log();
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

// `n` clients of the serving generation, each of which has had an echo.
void connect_clients(const BatondProcess& d, int n, std::vector<UniqueFd>& out) {
  for (int i = 0; i < n; ++i) {
    out.push_back(connect_to(d.address()));
    ASSERT_TRUE(echo_roundtrip(out.back().get(), "before"));
  }
}

std::vector<std::string> handoff_args(std::vector<std::string> more) {
  std::vector<std::string> a{"--listen", "echo=tcp://127.0.0.1:0", "--drain", "handoff"};
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

// Item 1 of the issue. The successor adopts the connections it is handed and
// serves them, but closes the channel without acknowledging them. The old
// process cannot know it serves them: it must not read them (two readers
// reorder and lose bytes) until the successor's exit proves it no longer
// can, then serve them again. baton-load verifies every byte, in order.
TEST(NeverDown, AConnectionWhoseHandOffWasNeverAnsweredIsReadByOneProcessOnly) {
  auto d = BatondProcess::start(
      handoff_args({"--binary", build_path("tests/integration/fake-successor"), "--upgrade-probation", "0"}),
      with_env({"BATON_FAKE_MODE=adopt-and-close", "BATON_FAKE_HOLD_MS=2000"}));
  const pid_t gen1 = d.serving_pid();
  auto load = LoadRun::start("tcp://" + d.address(),
                             {"--connections", "8", "--pipeline", "4", "--message-size", "256", "--timeout-ms", "15000"});
  ::kill(gen1, SIGUSR2);
  ASSERT_TRUE(d.process().wait_for_line("closed the channel without an answer", 20s)) << "the fault did not happen\n"
                                                                                       << d.log();
  EXPECT_TRUE(d.wait_for_line(gen1, "sent but unanswered stay untouched until the successor answers or exits")) << d.log();
  ASSERT_TRUE(d.process().wait_for_line("fake-successor: held them", 20s)) << d.log();
  ASSERT_TRUE(d.wait_for_line(gen1, "resumes serving")) << d.log();
  EXPECT_TRUE(d.wait_for_line(gen1, "served here again (the successor is gone)")) << d.log();
  auto report = load.stop();
  EXPECT_EQ(report.failures, 0) << report.summary << "\n" << d.log();
  EXPECT_GT(report.bytes_verified, 0) << report.summary;
}

// Sends one byte on each connection and counts those echoed within `timeout`.
size_t count_echoing(std::vector<UniqueFd>& conns, std::chrono::milliseconds timeout) {
  for (auto& c : conns) send_all(c.get(), "x");
  std::vector<pollfd> p;
  for (auto& c : conns) p.push_back({c.get(), POLLIN, 0});
  size_t echoed = 0;
  const auto end = std::chrono::steady_clock::now() + timeout;
  while (echoed < conns.size() && std::chrono::steady_clock::now() < end) {
    if (::poll(p.data(), p.size(), 100) <= 0) continue;
    for (auto& q : p) {
      if (q.fd < 0 || !(q.revents & POLLIN)) continue;
      char b;
      if (::recv(q.fd, &b, 1, MSG_DONTWAIT) == 1 && b == 'x') ++echoed;
      q.fd = -1;  // counted (or broken): not polled again
    }
  }
  return echoed;
}

// A successor that takes over, then never reads its channel again. The old
// process sends at most a few batches without an answer, so its loop never
// blocks on a full channel; after the stall bound the connections it did not
// send are served here again, while those it sent (fate unknown) are left
// alone until the successor dies.
TEST(NeverDown, AStalledSuccessorNeverBlocksTheOldLoopAndTheUnsentStayServed) {
  auto d = BatondProcess::start(handoff_args({"--binary", build_path("tests/integration/fake-successor"),
                                              "--upgrade-probation", "0", "--drain-timeout", "600"}),
                                with_env({"BATON_FAKE_MODE=stall"}));
  const pid_t gen1 = d.serving_pid();
  std::vector<UniqueFd> conns;
  for (int i = 0; i < 1500; ++i) {
    conns.push_back(connect_to(d.address()));
    ASSERT_TRUE(conns.back()) << i;
  }
  ASSERT_EQ(count_echoing(conns, 20s), conns.size());
  ::kill(gen1, SIGUSR2);
  const pid_t stalled = d.wait_commit(gen1);
  ASSERT_NE(stalled, 0) << d.log();
  auto kept = d.wait_for_line(gen1, "made no progress for 2000 ms; keeping ", 30s);
  ASSERT_TRUE(kept) << d.log();
  const size_t n_kept = std::stoul(kept->substr(kept->find("; keeping ") + 10));
  EXPECT_GE(n_kept, conns.size() - 4 * 253) << *kept;
  EXPECT_LT(n_kept, conns.size()) << *kept;
  ASSERT_TRUE(pid_alive(stalled)) << "the stalled successor is still alive";
  // The old loop was never blocked, and exactly the kept ones are served.
  EXPECT_EQ(count_echoing(conns, 10s), n_kept);
  // The successor dies: nothing can be serving the others now.
  ::kill(stalled, SIGKILL);
  ASSERT_TRUE(d.wait_for_line(gen1, "resumes serving")) << d.log();
  // Every connection answers now: those left alone echo the "x" they were
  // sent during the stall first.
  for (auto& c : conns) send_all(c.get(), "y");
  size_t answered = 0;
  for (auto& c : conns) {
    auto first = recv_exact(c.get(), 1, 10s);
    if (first == "x") first = recv_exact(c.get(), 1, 10s);
    if (first == "y") ++answered;
  }
  EXPECT_EQ(answered, conns.size());
}

// Item 2: the connection hand-off's callbacks are registered with the
// Predecessor for as long as it lives and no longer. Hand-off upgrade, the
// successor dies, the old process resumes; a reload switches to `wait`;
// another upgrade with connections open; that successor's link closes. Under
// AddressSanitizer (scripts/test.sh) a callback left behind is a
// use-after-free.
TEST(NeverDown, CallbacksOfAnEndedHandOffNeverRunAgain) {
  TempDir dir;
  const auto conf = dir.file("batond.toml");
  auto write_conf = [&](const char* mode) {
    std::ofstream(conf) << "[listeners]\necho = \"tcp://127.0.0.1:0\"\n[drain]\nmode = \"" << mode
                        << "\"\n[upgrade]\nprobation = 0\n";
  };
  write_conf("handoff");
  auto d = BatondProcess::start({"--config", conf, "--binary", build_path("tests/integration/fake-successor")},
                                with_env({"BATON_FAKE_MODE=die-on-connections"}));
  const pid_t gen1 = d.serving_pid();
  std::vector<UniqueFd> conns;
  ASSERT_NO_FATAL_FAILURE(connect_clients(d, 3, conns));
  ::kill(gen1, SIGUSR2);
  ASSERT_TRUE(d.process().wait_for_line("dying without an answer", 15s)) << d.log();
  ASSERT_TRUE(d.wait_for_line(gen1, "resumes serving")) << d.log();
  write_conf("wait");
  ::kill(gen1, SIGHUP);
  ASSERT_TRUE(d.wait_for_line(gen1, "drain.mode=wait")) << d.log();
  auto up = batonctl(d, {"upgrade", "--binary", batond_path()});
  ASSERT_EQ(up.status.code, 0) << up.out << up.err << d.log();
  const pid_t gen2 = d.wait_commit(gen1, 10s, /*skip the fake's*/ 1);
  ASSERT_NE(gen2, 0) << d.log();
  ::kill(gen2, SIGTERM);  // its link to gen1 closes as it exits
  ASSERT_TRUE(d.wait_for_line(gen1, "successor pid " + std::to_string(gen2) + " exited with exit status 0")) << d.log();
  for (auto& c : conns) EXPECT_TRUE(echo_roundtrip(c.get(), "still served by generation 1 while it drains"));
  conns.clear();
  auto status = d.process().wait_exit(20s);
  ASSERT_TRUE(status) << d.log();
  EXPECT_TRUE(status->success()) << status->describe() << "\n" << d.log();
}

// Item 3 (a generation that committed to a newer one, offered an older
// one's connections) is ConnectionHandoff.AnUpgradeInsideThePreviousProbation…:
// it passes them on to the newest generation.

// Item 4, one level further: gen 2 committed to gen 3 (gen 1 is told),
// gen 3 to gen 4 (gen 2 is told, and tells gen 1), and gen 3 is gone. When
// gen 2 dies, gen 1, still draining a client, must see that gen 4 serves:
// it does not resume beside it.
TEST(NeverDown, AnOlderGenerationKnowsEveryNewerOneAndNeverResumesBesideIt) {
  Service s;
  auto d = BatondProcess::start(s.args({"--upgrade-probation", "0", "--drain-timeout", "120"}));
  const std::string tcp = d.address();
  const pid_t gen1 = d.serving_pid();
  auto on_gen1 = connect_to(tcp);
  ASSERT_TRUE(echo_roundtrip(on_gen1.get(), "keeps generation 1 draining"));
  auto up2 = d.upgrade();
  ASSERT_TRUE(up2.ok) << d.log();
  const pid_t gen2 = up2.new_pid;
  auto on_gen2 = connect_to(tcp);
  ASSERT_TRUE(echo_roundtrip(on_gen2.get(), "keeps generation 2 draining"));
  auto up3 = d.upgrade();
  ASSERT_TRUE(up3.ok) << d.log();
  const pid_t gen3 = up3.new_pid;
  auto up4 = d.upgrade();
  ASSERT_TRUE(up4.ok) << d.log();
  const pid_t gen4 = up4.new_pid;
  ASSERT_TRUE(d.wait_gone(gen3)) << "generation 3 had nothing to drain\n" << d.log();
  ASSERT_TRUE(d.wait_for_line(gen1, "commits to a newer generation (pid " + std::to_string(gen4) + ")"))
      << "generation 2 did not pass generation 4's pid on\n" << d.log();

  ASSERT_EQ(::kill(gen2, SIGKILL), 0);
  ASSERT_TRUE(d.wait_for_line(gen1, "successor pid " + std::to_string(gen2) + " exited with signal 9")) << d.log();
  EXPECT_TRUE(d.wait_for_line(gen1, "after handing over in turn", 5s)) << d.log();
  EXPECT_EQ(d.count_lines(gen1, "resumes serving"), 0) << d.log();
  expect_everything_served(d, tcp, s.sock, s.pid, gen4);
  EXPECT_TRUE(echo_roundtrip(on_gen1.get(), "generation 1 still drains its client"));
  on_gen1.reset();
  EXPECT_TRUE(d.wait_gone(gen1)) << d.log();
  EXPECT_EQ(d.count_lines(gen1, "resumes serving"), 0) << d.log();
}

// H3 of the review: gen 2 upgrades to gen 3 while gen 1 still has it on
// probation, then dies. Gen 3 serves: gen 1 must not resume beside it.
TEST(NeverDown, ASuccessorThatHandedOverInsideItsProbationIsNotResumedOver) {
  Service s;
  auto d = BatondProcess::start(s.args({"--upgrade-probation", "60"}));
  const std::string tcp = d.address();
  const pid_t gen1 = d.serving_pid();
  ::kill(gen1, SIGUSR2);
  const pid_t gen2 = d.wait_commit(gen1);
  ASSERT_NE(gen2, 0) << d.log();
  ASSERT_TRUE(d.wait_for_line(gen1, "serves; probation for 60000 ms")) << d.log();
  ::kill(gen2, SIGUSR2);
  const pid_t gen3 = d.wait_commit(gen2);
  ASSERT_NE(gen3, 0) << d.log();
  ASSERT_TRUE(d.wait_for_line(gen1, "commits to a newer generation (pid " + std::to_string(gen3) + ")")) << d.log();
  ASSERT_TRUE(d.wait_for_line(gen3, "serving: generation 3")) << d.log();

  ASSERT_EQ(::kill(gen2, SIGKILL), 0);
  EXPECT_TRUE(d.wait_for_line(gen1, "a newer generation serves")) << d.log();
  EXPECT_TRUE(d.wait_gone(gen1)) << "generation 1 had nothing to drain\n" << d.log();
  EXPECT_EQ(d.count_lines(gen1, "resumes serving"), 0) << d.log();
  expect_everything_served(d, tcp, s.sock, s.pid, gen3);
}

// M3 of the review: a stop asked of the old generation while the new one is
// on probation is not forgotten when the probation fails: it stops, as
// asked, instead of resuming.
TEST(NeverDown, AStopAskedDuringTheProbationIsHonouredWhenItFails) {
  Service s;
  auto d = BatondProcess::start(s.args({"--binary", build_path("tests/integration/fake-successor"),
                                        "--upgrade-timeout", "3"}),
                                with_env({"BATON_FAKE_MODE=silent-after-commit"}));
  const pid_t gen1 = d.serving_pid();
  ::kill(gen1, SIGUSR2);
  ASSERT_TRUE(d.process().wait_for_line("fake-successor: now deaf")) << d.log();
  ASSERT_EQ(::kill(gen1, SIGTERM), 0);
  ASSERT_TRUE(d.wait_for_line(gen1, "upgrade failed in probation", 20s)) << d.log();
  auto status = d.process().wait_exit(20s);
  ASSERT_TRUE(status) << "generation 1 resumed instead of stopping\n" << d.log();
  EXPECT_TRUE(status->success()) << status->describe() << "\n" << d.log();
  EXPECT_EQ(d.count_lines(gen1, "resumes serving"), 0) << d.log();
  struct stat st;
  EXPECT_NE(::lstat(s.sock.c_str(), &st), 0) << "the last generation standing removes its socket files on a stop";
}

// With `drain = handoff`, a drain deadline shorter than the probation must
// not half-close the connections before the hand-off can take them.
TEST(NeverDown, ADrainDeadlineShorterThanTheProbationStillHandsEveryConnectionOver) {
  auto d = BatondProcess::start(handoff_args({"--drain-timeout", "0.2", "--upgrade-probation", "1"}));
  const pid_t gen1 = d.serving_pid();
  std::vector<UniqueFd> conns;
  ASSERT_NO_FATAL_FAILURE(connect_clients(d, 3, conns));
  auto up = d.upgrade();
  ASSERT_TRUE(up.ok) << d.log();
  auto done = d.wait_for_line(gen1, "handoff: done in", 20s);
  ASSERT_TRUE(done) << d.log();
  EXPECT_NE(done->find("3 connection(s) handed over, 0 kept"), std::string::npos) << *done;
  for (auto& c : conns) EXPECT_TRUE(echo_roundtrip(c.get(), "served by generation 2")) << d.log();
}

// M1 of the review: the successor closes the channel after SERVING but
// lives on. When the probation passes, the hand-off has nobody to send to:
// every connection is served here again, none left hanging unread.
TEST(NeverDown, AHandOffOverALinkClosedInTheProbationKeepsEveryConnection) {
  auto d = BatondProcess::start(handoff_args({"--binary", build_path("tests/integration/fake-successor"),
                                              "--upgrade-probation", "1"}),
                                with_env({"BATON_FAKE_MODE=close-after-serving"}));
  const pid_t gen1 = d.serving_pid();
  std::vector<UniqueFd> conns;
  ASSERT_NO_FATAL_FAILURE(connect_clients(d, 3, conns));
  ::kill(gen1, SIGUSR2);
  ASSERT_TRUE(d.process().wait_for_line("closed the channel after SERVING")) << d.log();
  ASSERT_TRUE(d.wait_for_line(gen1, "closed before the hand-off; keeping 3 connection(s)", 20s)) << d.log();
  for (auto& c : conns) EXPECT_TRUE(echo_roundtrip(c.get(), "served here again")) << d.log();
  conns.clear();
  auto status = d.process().wait_exit(20s);
  ASSERT_TRUE(status) << d.log();
  EXPECT_TRUE(status->success()) << status->describe() << "\n" << d.log();
}

}  // namespace
}  // namespace baton::test
