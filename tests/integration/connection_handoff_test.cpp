// --drain handoff: the old generation gives its open connections to the new
// one and exits at once, and no client notices; whatever cannot be handed
// over is drained the ordinary way, never closed.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>

#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <thread>

#include "support/batond.h"
#include "support/client.h"
#include "support/load.h"

namespace baton::test {
namespace {

std::set<std::string> sockets_of(pid_t pid) {
  std::set<std::string> out;
  for (const auto& t : open_fds(pid))
    if (t.rfind("socket:", 0) == 0) out.insert(t);
  return out;
}

// The old generation exits while the load's persistent clients stay
// connected: only a hand-off can explain that.
void upgrade_under_load_hands_everything_over(const std::string& target_listener) {
  TempDir dir;
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--listen", "local=unix:" + dir.file("e.sock"),
                                 "--drain", "handoff", "--drain-timeout", "600"});
  const std::string target =
      target_listener == "local" ? "unix:" + dir.file("e.sock") : "tcp://" + d.address(target_listener);
  auto load = LoadRun::start(target, {"--connections", "16", "--pipeline", "4", "--message-size", "1024"});
  for (int i = 0; i < 5; ++i) {
    const pid_t old_pid = d.serving_pid();
    auto r = d.upgrade();
    ASSERT_TRUE(r.ok) << d.log();
    ASSERT_TRUE(d.wait_gone(old_pid, 20s)) << "old generation still running with a 600 s drain timeout\n" << d.log();
    EXPECT_TRUE(d.wait_for_line(old_pid, "16 connection(s) handed over, 0 kept here")) << d.log();
    EXPECT_TRUE(d.wait_for_line(old_pid, "0 closed by their clients, 0 half-closed at the deadline, 0 closed forcibly, 16 handed over"));
    // The new generation now holds the clients' sockets: 16 more than a generation with none.
    EXPECT_TRUE(eventually([&] { return sockets_of(r.new_pid).size() >= 16 + 3; }))
        << sockets_of(r.new_pid).size() << " sockets";
  }
  auto report = load.stop();
  EXPECT_EQ(report.failures, 0) << report.summary;
  EXPECT_TRUE(report.status.success()) << report.summary;
  EXPECT_GT(report.messages, 0);
}

TEST(ConnectionHandoff, PipeliningTcpClientsNeverNoticeFiveUpgrades) { upgrade_under_load_hands_everything_over("echo"); }

TEST(ConnectionHandoff, PipeliningUnixClientsNeverNoticeFiveUpgrades) {
  upgrade_under_load_hands_everything_over("local");
}

TEST(ConnectionHandoff, BytesSentDuringTheHandOffAreEchoedByTheNewProcessInOrder) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--drain", "handoff"});
  auto conn = connect_to(d.address());
  ASSERT_TRUE(echo_roundtrip(conn.get(), "before\n"));
  // Sent just before the signal: some of it may be read by the old process,
  // the rest waits in the kernel for the new one. All of it comes back in order.
  const std::string burst = random_bytes(256 * 1024, 11);
  ASSERT_TRUE(send_all(conn.get(), burst.substr(0, 128 * 1024)));
  const pid_t old_pid = d.serving_pid();
  ::kill(old_pid, SIGUSR2);
  ASSERT_TRUE(send_all(conn.get(), burst.substr(128 * 1024)));
  auto back = recv_exact(conn.get(), burst.size(), 20s);
  ASSERT_TRUE(back);
  EXPECT_TRUE(*back == burst);
  auto r = d.wait_upgrade_outcome(old_pid, 0);
  ASSERT_TRUE(r.ok);
  EXPECT_TRUE(d.wait_gone(old_pid));
  EXPECT_TRUE(echo_roundtrip(conn.get(), "after, served by the new pid\n"));
}

TEST(ConnectionHandoff, ClientThatNeverReadsIsDrainedByTheOldProcessOthersMove) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--drain", "handoff", "--drain-timeout", "600"});
  std::vector<UniqueFd> good;
  for (int i = 0; i < 3; ++i) {
    good.push_back(connect_to(d.address()));
    ASSERT_TRUE(echo_roundtrip(good.back().get(), "fine"));
  }
  auto hog = connect_to(d.address());
  ASSERT_TRUE(hog);
  // Fill every buffer between us and the daemon until it stops reading.
  const std::string chunk(64 * 1024, 'x');
  auto last_progress = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - last_progress < 1s) {
    if (::send(hog.get(), chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
      last_progress = std::chrono::steady_clock::now();
    else
      std::this_thread::sleep_for(5ms);
  }
  const pid_t old_pid = d.serving_pid();
  auto r = d.upgrade();
  ASSERT_TRUE(r.ok) << d.log();
  EXPECT_TRUE(d.wait_for_line(old_pid, "did not flush within 1000 ms", 15s)) << d.log();
  EXPECT_TRUE(d.wait_for_line(old_pid, "3 connection(s) handed over, 1 kept here to drain", 15s)) << d.log();
  EXPECT_TRUE(pid_alive(old_pid)) << "the old generation must keep serving the client it could not hand over";
  for (auto& g : good) EXPECT_TRUE(echo_roundtrip(g.get(), "moved"));
  hog.reset();
  EXPECT_TRUE(d.wait_gone(old_pid)) << d.log();
}

TEST(ConnectionHandoff, NewProcessDyingMidTransferLosesNoConnection) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--drain", "handoff", "--binary",
                                 build_path("tests/integration/fake-successor")},
                                with_env({"BATON_FAKE_MODE=die-on-connections"}));
  std::vector<UniqueFd> conns;
  for (int i = 0; i < 5; ++i) {
    conns.push_back(connect_to(d.address()));
    ASSERT_TRUE(echo_roundtrip(conns.back().get(), "before"));
  }
  const pid_t old_pid = d.serving_pid();
  ::kill(old_pid, SIGUSR2);
  // The fake takes over properly, then dies on the first CONNECTIONS message.
  ASSERT_TRUE(d.process().wait_for_line("dying without an answer", 15s)) << d.log();
  // Sent and unanswered: not read here until the successor's death proves it
  // cannot be serving them; then served again.
  EXPECT_TRUE(d.wait_for_line(old_pid, "5 connection(s) sent but unanswered stay untouched", 15s)) << d.log();
  EXPECT_TRUE(d.wait_for_line(old_pid, "0 connection(s) handed over, 0 kept here, 5 served here again", 15s)) << d.log();
  EXPECT_TRUE(d.wait_for_line(old_pid, "resumes serving", 15s)) << d.log();
  for (auto& c : conns) EXPECT_TRUE(echo_roundtrip(c.get(), "still served by the old generation"));
  EXPECT_TRUE(pid_alive(old_pid));
}

// SIGUSR2 to the serving generation (gen 1); its successor (gen 2), once that serves, or 0.
pid_t upgrade_until_serving(BatondProcess& d) {
  const pid_t gen1 = d.serving_pid();
  if (::kill(gen1, SIGUSR2) != 0) return 0;
  const pid_t gen2 = d.wait_commit(gen1);
  if (gen2 == 0 || !d.wait_for_line(gen2, "serving: generation 2")) return 0;
  return gen2;
}

// Generations 1 and 2 both passed every one of the `n` clients on (through
// gen 2 to the newest), kept none and are gone, and no client noticed.
void expect_passed_on(BatondProcess& d, LoadRun& load, pid_t gen1, pid_t gen2, int n) {
  const std::string moved = std::to_string(n) + " connection(s) handed over, 0 kept here";
  EXPECT_TRUE(d.wait_for_line(gen1, moved, 15s)) << d.log();
  EXPECT_TRUE(d.wait_for_line(gen2, moved, 15s)) << d.log();
  EXPECT_TRUE(d.wait_gone(gen1, 30s)) << d.log();
  EXPECT_TRUE(d.wait_gone(gen2, 30s)) << d.log();
  auto report = load.stop();
  EXPECT_EQ(report.failures, 0) << report.summary;
  EXPECT_TRUE(report.status.success()) << report.summary;
}

// The new generation is upgraded again while its predecessor is still in
// probation: the predecessor's connections reach it only after it has
// committed to the next one. They must go on to the newest generation, not
// stay with the predecessor to be half-closed at its drain deadline.
TEST(ConnectionHandoff, AnUpgradeInsideThePreviousProbationPassesItsConnectionsOnToTheNewest) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--drain", "handoff", "--upgrade-probation", "5",
                                 "--drain-timeout", "1", "--upgrade-timeout", "10"});
  auto load = LoadRun::start("tcp://" + d.address(), {"--connections", "8", "--rate", "50"});
  const pid_t gen1 = d.serving_pid();
  const pid_t gen2 = upgrade_until_serving(d);
  ASSERT_NE(gen2, 0) << d.log();
  ASSERT_EQ(::kill(gen2, SIGUSR2), 0);
  const pid_t gen3 = d.wait_commit(gen2);
  ASSERT_NE(gen3, 0) << d.log();
  // The case under test: generation 1 had not begun handing its connections over.
  ASSERT_EQ(d.count_lines(gen1, "handoff: handing connections"), 0)
      << "the first probation (5 s) ended before the second upgrade committed\n" << d.log();
  ASSERT_TRUE(d.wait_upgrade_outcome(gen1, 0, 30s).ok) << d.log();
  ASSERT_TRUE(d.wait_upgrade_outcome(gen2, 0, 30s).ok) << d.log();
  // Its listener and control socket, and the 8 clients.
  EXPECT_TRUE(eventually([&] { return sockets_of(gen3).size() >= 8 + 2; })) << sockets_of(gen3).size() << " sockets";
  expect_passed_on(d, load, gen1, gen2, 8);
}

// Generation 2's own hand-off begins before generation 1's: a reload made
// its probation (0.2 s) shorter than generation 1's (6 s). Returns {gen 1,
// gen 2, gen 3} once generation 2's upgrade has passed, or zeros.
struct Chain {
  pid_t gen1 = 0, gen2 = 0, gen3 = 0;
};
Chain middle_handoff_first(BatondProcess& d, const std::string& conf, const std::string& common) {
  Chain c;
  c.gen1 = d.serving_pid();
  const pid_t gen2 = upgrade_until_serving(d);
  if (gen2 == 0) return {};
  std::ofstream(conf) << common << "probation = 0.2\n";
  if (::kill(gen2, SIGHUP) != 0 || !d.wait_for_line(gen2, "re-read; applied now") || ::kill(gen2, SIGUSR2) != 0)
    return {};
  c.gen3 = d.wait_commit(gen2);
  if (c.gen3 == 0 || !d.wait_upgrade_outcome(gen2, 0, 30s).ok) return {};
  c.gen2 = gen2;
  return c;
}

const std::string kChainConfig =
    "[listeners]\necho = \"tcp://127.0.0.1:0\"\n[drain]\nmode = \"handoff\"\ntimeout = 1\n[upgrade]\n";

// Generation 1 under load, then middle_handoff_first: the case under test
// is that generation 2's hand-off began before generation 1's.
struct MiddleFirst {
  TempDir dir;
  std::string conf = dir.file("batond.toml");
  std::optional<BatondProcess> d;
  std::optional<LoadRun> load;
  Chain c;
};
void start_middle_first(MiddleFirst& m) {
  std::ofstream(m.conf) << kChainConfig << "probation = 6\n";
  m.d.emplace(BatondProcess::start({"--config", m.conf}));
  m.load.emplace(LoadRun::start("tcp://" + m.d->address(), {"--connections", "8", "--rate", "50"}));
  m.c = middle_handoff_first(*m.d, m.conf, kChainConfig);
  ASSERT_NE(m.c.gen2, 0) << m.d->log();
  ASSERT_EQ(m.d->count_lines(m.c.gen1, "handoff: handing connections"), 0)
      << "the first probation (6 s) ended before the second upgrade's (0.2 s)\n" << m.d->log();
}

// The middle generation holds none of the clients when its own hand-off
// begins, and must still take what its predecessor sends later, pass it on,
// and live until nothing more can come.
TEST(ConnectionHandoff, ConnectionsArrivingAfterTheMiddleGenerationsOwnHandOffBeganStillGoOn) {
  MiddleFirst m;
  ASSERT_NO_FATAL_FAILURE(start_middle_first(m));
  ASSERT_TRUE(m.d->wait_upgrade_outcome(m.c.gen1, 0, 30s).ok) << m.d->log();
  expect_passed_on(*m.d, *m.load, m.c.gen1, m.c.gen2, 8);
}

// A stop while the middle generation waits for what its predecessor may
// still send (systemd signals every process of the unit): every generation
// exits (the middle one neither waits for an offer it would refuse, nor
// misses the end of its wait when its successor exits first).
TEST(ConnectionHandoff, AStopWhileTheMiddleGenerationWaitsForItsPredecessorStopsEveryGeneration) {
  MiddleFirst m;
  ASSERT_NO_FATAL_FAILURE(start_middle_first(m));
  m.load->stop();
  for (pid_t pid : {m.c.gen3, m.c.gen2, m.c.gen1}) ASSERT_EQ(::kill(pid, SIGTERM), 0);
  for (pid_t pid : {m.c.gen3, m.c.gen2, m.c.gen1}) EXPECT_TRUE(m.d->wait_gone(pid, 30s)) << pid << "\n" << m.d->log();
}

TEST(ConnectionHandoff, AThousandConnectionsMoveAndTheOldProcessExitsQuickly) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--drain", "handoff", "--drain-timeout", "600"});
  std::vector<UniqueFd> conns;
  for (int i = 0; i < 1000; ++i) {
    conns.push_back(connect_to(d.address()));
    ASSERT_TRUE(conns.back()) << i;
  }
  for (size_t i = 0; i < conns.size(); i += 50) ASSERT_TRUE(echo_roundtrip(conns[i].get(), "up"));
  const pid_t old_pid = d.serving_pid();
  auto r = d.upgrade();
  ASSERT_TRUE(r.ok) << d.log();
  ASSERT_TRUE(d.wait_gone(old_pid, 30s));
  auto done = d.wait_for_line(old_pid, "handoff: done in");
  ASSERT_TRUE(done);
  EXPECT_NE(done->find("1000 connection(s) handed over, 0 kept"), std::string::npos) << *done;
  std::cout << "[ figure ] " << done->substr(done->find("handoff:")) << "\n";
  for (size_t i = 0; i < conns.size(); ++i) ASSERT_TRUE(echo_roundtrip(conns[i].get(), "moved")) << i;
}

}  // namespace
}  // namespace baton::test
