// Chaos: random upgrades under byte-verifying load, disturbed at different
// moments: the new generation stopped (SIGSTOP) before READY, during the
// connection hand-off and after it serves, each time for longer than any
// internal timeout; killed before READY; upgrade storms; drain-mode flips by
// reload. At the end: zero client errors, one serving generation named by
// the pid file, no zombie, every old generation gone.
//
// Short by default (scripts/test.sh); BATON_CHAOS_SECONDS=600 for the long
// form (scripts/chaos.sh MINUTES). BATON_CHAOS_SEED replays a run.

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "support/batond.h"
#include "support/client.h"
#include "support/load.h"
#include "support/process.h"

namespace baton::test {
namespace {

using Clock = std::chrono::steady_clock;

// Longer than every internal timeout: upgrade.timeout (1 s here), the
// hand-off's stall bound (2 s) and flush bound (1 s), the start-up send timeout (2 s).
constexpr auto kHold = 2500ms;

long env_number(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atol(v) : fallback;
}

enum class Disturbance {
  Plain,
  Storm,
  StopBeforeReady,
  StopInProbation,
  StopDuringHandoff,
  StopAfterServing,
  KillBeforeReady,
  FlipDrain
};
const char* name(Disturbance d) {
  switch (d) {
    case Disturbance::Plain: return "plain";
    case Disturbance::Storm: return "storm";
    case Disturbance::StopBeforeReady: return "stop-before-ready";
    case Disturbance::StopInProbation: return "stop-in-probation";
    case Disturbance::StopDuringHandoff: return "stop-during-handoff";
    case Disturbance::StopAfterServing: return "stop-after-serving";
    case Disturbance::KillBeforeReady: return "kill-before-ready";
    case Disturbance::FlipDrain: return "flip-drain";
  }
  return "?";
}

// The pid the (skip+1)-th "spawned ... as pid N" line of `from` names, or 0.
pid_t wait_spawned(BatondProcess& d, pid_t from, int skip) {
  auto line = d.wait_for_line(from, "upgrade: spawned ", 10s, skip);
  if (!line) return 0;
  const pid_t pid = static_cast<pid_t>(std::stol(line->substr(line->rfind(" as pid ") + 8)));
  d.process().track_descendant(pid);
  return pid;
}

void hold_stopped(pid_t pid) {
  ::kill(pid, SIGSTOP);
  std::this_thread::sleep_for(kHold);  // the disturbance itself: longer than any timeout
  ::kill(pid, SIGCONT);
}

TEST(Chaos, DisturbedUpgradesUnderLoadLoseNothing) {
  const long seconds = env_number("BATON_CHAOS_SECONDS", 40);
  const unsigned seed = static_cast<unsigned>(env_number("BATON_CHAOS_SEED", static_cast<long>(::time(nullptr))));
  std::cout << "[ chaos ] seed " << seed << ", " << seconds << " s (BATON_CHAOS_SEED=" << seed << " replays it)\n";
  std::mt19937 rng(seed);

  TempDir dir;
  const auto conf = dir.file("batond.toml");
  const auto sock = dir.file("echo.sock");
  const auto pid_file = dir.file("batond.pid");
  std::string drain_mode = "handoff";
  auto write_conf = [&] {
    // The drain deadline outlasts the run: no connection is closed under the load.
    std::ofstream(conf) << "pid_file = \"" << pid_file << "\"\n[listeners]\necho = \"tcp://127.0.0.1:0\"\nlocal = \"unix:"
                        << sock << "\"\n[drain]\nmode = \"" << drain_mode << "\"\ntimeout = " << seconds + 120
                        << "\n[upgrade]\ntimeout = 1\nprobation = 0.5\n";
  };
  write_conf();
  auto d = BatondProcess::start({"--config", conf});
  auto load = LoadRun::start("tcp://" + d.address(), {"--connections", "8", "--pipeline", "2", "--message-size", "512",
                                                      "--rate", "100", "--churn-rate", "20", "--timeout-ms", "15000"});
  auto unix_load = LoadRun::start("unix:" + sock, {"--connections", "2", "--rate", "50", "--churn-rate", "5",
                                                   "--timeout-ms", "15000"});

  std::map<std::string, int> by_kind;
  int attempted = 0, disturbed = 0, succeeded = 0, rolled_back = 0, rounds = 0;
  std::set<pid_t> generations{d.serving_pid()};
  const auto end = Clock::now() + std::chrono::seconds(seconds);
  const std::vector<Disturbance> kinds{Disturbance::Plain,           Disturbance::Storm,
                                       Disturbance::StopBeforeReady,  Disturbance::StopInProbation,
                                       Disturbance::StopDuringHandoff, Disturbance::StopAfterServing,
                                       Disturbance::KillBeforeReady};
  while (Clock::now() < end && rounds < 5000) {
    ++rounds;
    // A drain-mode flip every few rounds; an upgrade, disturbed or not, in the others.
    const auto kind = rng() % 8 == 0 ? Disturbance::FlipDrain : kinds[rng() % kinds.size()];
    ++by_kind[name(kind)];
    const pid_t cur = d.serving_pid();
    if (kind == Disturbance::FlipDrain) {
      drain_mode = drain_mode == "handoff" ? "wait" : "handoff";
      write_conf();
      const int before = d.count_lines(cur, "reload (SIGHUP)");
      ::kill(cur, SIGHUP);
      ASSERT_TRUE(d.wait_for_line(cur, "reload (SIGHUP)", 10s, before)) << "round " << rounds << "\n" << d.log();
      continue;
    }
    const int outcomes = d.upgrade_outcomes(cur);
    const int spawned_before = d.count_lines(cur, "upgrade: spawned ");
    const int commits_before = d.count_lines(cur, "upgrade: committed; successor=");
    ::kill(cur, SIGUSR2);
    ++attempted;
    disturbed += kind != Disturbance::Plain;
    if (kind == Disturbance::Storm)
      for (int i = 0; i < 3; ++i) ::kill(cur, SIGUSR2);  // refused: busy
    const pid_t next = wait_spawned(d, cur, spawned_before);
    ASSERT_NE(next, 0) << "round " << rounds << ": nothing spawned\n" << d.log();
    generations.insert(next);
    switch (kind) {
      case Disturbance::StopBeforeReady: hold_stopped(next); break;
      case Disturbance::KillBeforeReady: ::kill(next, SIGKILL); break;
      case Disturbance::StopInProbation:
        // COMMIT sent: it accepts; stopped before or after its SERVING.
        if (d.wait_commit(cur, 10s, commits_before) == next) hold_stopped(next);
        break;
      default: break;
    }
    auto r = d.wait_upgrade_outcome(cur, outcomes, 30s);
    ASSERT_FALSE(r.line.empty()) << "round " << rounds << " (" << name(kind) << "): no outcome\n" << d.log();
    if (r.ok) {
      ++succeeded;
      // The probation is over: with handoff, the connections are moving right now.
      if (kind == Disturbance::StopDuringHandoff) hold_stopped(r.new_pid);
      if (kind == Disturbance::StopAfterServing) {
        auto st = run_command({batonctl_path(), "--control", d.control_path(), "status", "--json"});
        EXPECT_TRUE(st.status.success()) << "round " << rounds << ": " << st.err;
        hold_stopped(r.new_pid);
      }
    } else {
      ++rolled_back;
    }
  }

  auto report = load.stop();
  auto unix_report = unix_load.stop();
  const pid_t serving = d.serving_pid();
  nlohmann::json summary{{"seed", seed},           {"seconds", seconds},       {"rounds", rounds},
                         {"upgrades", attempted},  {"disturbed", disturbed}, {"succeeded", succeeded},   {"rolled_back", rolled_back},
                         {"disturbances", by_kind}, {"client_errors", report.failures + unix_report.failures},
                         {"messages", report.messages + unix_report.messages}};
  std::cout << "chaos-summary: " << summary.dump() << std::endl;
  EXPECT_EQ(report.failures, 0) << report.summary << "\n" << d.log();
  EXPECT_EQ(unix_report.failures, 0) << unix_report.summary;
  EXPECT_GT(report.bytes_verified, 0) << report.summary;

  // One generation serves, named by the pid file, and answers batonctl.
  EXPECT_TRUE(pid_alive(serving));
  EXPECT_TRUE(eventually([&] { return read_pid_file(pid_file) == serving; })) << "pid file names " << read_pid_file(pid_file);
  auto st = run_command({batonctl_path(), "--control", d.control_path(), "status", "--json"});
  ASSERT_TRUE(st.status.success()) << st.err;
  EXPECT_EQ(nlohmann::json::parse(st.out)["pid"].get<pid_t>(), serving);
  auto c = connect_to(d.address());
  EXPECT_TRUE(c && echo_roundtrip(c.get(), "served after the chaos"));
  // Every older generation is gone (its clients left with the load), none a zombie.
  for (pid_t g : generations) {
    if (g == serving) continue;
    EXPECT_TRUE(wait_pid_gone(g, 30s)) << "generation pid " << g << " still runs\n" << d.log();
  }
  EXPECT_EQ(zombie_children_of(serving), 0);
}

}  // namespace
}  // namespace baton::test
