// Endurance: many upgrades in a row with --drain handoff, under light load
// that never stops (persistent connections moved from generation to
// generation, plus short connections coming and going). Whatever leaks a
// little per generation (an fd, memory, a zombie) shows after enough of them.
//
// BATON_ENDURANCE_UPGRADES sets the number of upgrades: 40 in the normal
// suite; the full run is 200:
//
//   BATON_ENDURANCE_UPGRADES=200 ./build/tests/integration/endurance_test
//
// Figures (fd counts, RSS, timings) are printed on lines starting "[ figure ]".

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include "support/batond.h"
#include "support/client.h"
#include "support/load.h"

namespace baton::test {
namespace {

using Clock = std::chrono::steady_clock;

// How much the serving generation's RSS may differ from the baseline's.
// Under ASan (scripts/test.sh sets it) the quarantine keeps freed memory, so
// RSS follows how much a generation allocated and freed (it grows with the
// history each one receives and parses): there LeakSanitizer checks leaks.
long rss_margin_kib() {
  const char* v = std::getenv("BATON_ENDURANCE_RSS_MARGIN_KIB");
  if (!v || !*v) return 2048;
  return std::clamp(std::atol(v), 1L, 1L << 22);
}

int upgrades_wanted() {
  const char* v = std::getenv("BATON_ENDURANCE_UPGRADES");
  if (!v || !*v) return 40;
  const int n = std::atoi(v);
  return std::clamp(n, 1, 1000);
}

// The fds of a process, by kind ("socket", "anon_inode:[eventpoll]", "pipe",
// or the path of a file), for figures and for naming what leaked.
std::map<std::string, int> fd_kinds(pid_t pid) {
  std::map<std::string, int> kinds;
  for (const auto& t : open_fds(pid)) {
    if (t.rfind("socket:", 0) == 0) ++kinds["socket"];
    else if (t.rfind("pipe:", 0) == 0) ++kinds["pipe"];
    else ++kinds[t];
  }
  return kinds;
}

std::string describe(const std::map<std::string, int>& kinds) {
  std::string s;
  for (const auto& [k, n] : kinds) s += (s.empty() ? "" : ", ") + std::to_string(n) + " " + k;
  return s;
}

// The fd count of a generation that serves alone (its predecessor gone).
// A short connection of the load may be open at any one instant: the least
// seen over a 100 ms window is the count without it. A leaked fd stays, so
// it is never hidden.
size_t settled_fd_count(pid_t pid) {
  size_t least = open_fds(pid).size();
  const auto until = Clock::now() + std::chrono::milliseconds(100);
  eventually([&] {
    least = std::min(least, open_fds(pid).size());
    return Clock::now() >= until;
  });
  return least;
}

struct Generation {
  int upgrade = 0;  // how many upgrades preceded it
  pid_t pid = 0;
  size_t fds = 0;
  long rss_kib = 0;
  std::string kinds;  // what those fds are
};

TEST(Endurance, ManyUpgradesUnderLoadWithHandoffLeakNothing) {
  const int n = upgrades_wanted();
  constexpr int kBaselineAfter = 3;  // earlier generations may still warm up (first CONNECTIONS, ...)
  const long rss_margin = rss_margin_kib();
  ASSERT_GE(n, kBaselineAfter) << "BATON_ENDURANCE_UPGRADES must be at least " << kBaselineAfter;

  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--drain", "handoff", "--drain-timeout", "60"});
  auto load = LoadRun::start("tcp://" + d.address(), {"--connections", "4", "--pipeline", "1", "--message-size", "512",
                                                      "--rate", "50", "--churn-rate", "20"});
  std::vector<pid_t> pids{d.serving_pid()};
  std::vector<Generation> measured;
  std::vector<double> upgrade_ms;
  const auto started = Clock::now();

  for (int i = 1; i <= n; ++i) {
    const pid_t old_pid = d.serving_pid();
    const auto t0 = Clock::now();
    auto r = d.upgrade();
    ASSERT_TRUE(r.ok) << "upgrade " << i << ": " << r.line << "\n" << d.log();
    upgrade_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    ASSERT_EQ(std::count(pids.begin(), pids.end(), r.new_pid), 0) << "pid reused at upgrade " << i;
    pids.push_back(r.new_pid);
    // The old generation hands its connections over and exits: gone, and
    // reaped (by the test, which re-parents orphaned generations).
    ASSERT_TRUE(d.wait_gone(old_pid, std::chrono::seconds(30)))
        << "generation " << i << " (pid " << old_pid << ") did not exit after upgrade " << i << "\n" << d.log();
    auto drained = d.wait_for_line(old_pid, "drain: done");
    ASSERT_TRUE(drained) << d.log();
    EXPECT_NE(drained->find(" 0 half-closed at the deadline, 0 closed forcibly"), std::string::npos)
        << "upgrade " << i << ": " << *drained;
    ASSERT_TRUE(d.wait_for_line(r.new_pid, "previous generations: all have exited"))
        << "generation " << i + 1 << " never saw its predecessor go\n" << d.log();
    EXPECT_EQ(zombie_children_of(r.new_pid), 0) << "after upgrade " << i;
    if (i >= kBaselineAfter) {
      const size_t fds = settled_fd_count(r.new_pid);
      measured.push_back({i, r.new_pid, fds, rss_kib(r.new_pid), describe(fd_kinds(r.new_pid))});
    }
  }
  const double total_s = std::chrono::duration<double>(Clock::now() - started).count();

  auto report = load.stop();
  EXPECT_EQ(report.failures, 0) << report.summary;
  EXPECT_TRUE(report.status.success()) << report.summary;
  EXPECT_GT(report.messages, 0) << report.summary;
  EXPECT_GT(report.churn_succeeded, 0) << report.summary;

  // fds: every generation from the baseline on holds exactly as many.
  const Generation& base = measured.front();
  const Generation& last = measured.back();
  std::string off;
  for (const auto& g : measured)
    if (g.fds != base.fds) off += " upgrade " + std::to_string(g.upgrade) + ": " + std::to_string(g.fds) + ";";
  EXPECT_TRUE(off.empty()) << "fd count differs from the " << base.fds << " after upgrade " << kBaselineAfter << ":"
                           << off;
  EXPECT_EQ(last.fds, base.fds) << "after upgrade " << base.upgrade << ": " << base.kinds << "; newest generation: "
                                << last.kinds;
  // Memory: the serving generation does not grow from one to the next.
  const auto [rss_lo, rss_hi] = std::minmax_element(measured.begin(), measured.end(),
                                                    [](const auto& a, const auto& b) { return a.rss_kib < b.rss_kib; });
  EXPECT_LE(last.rss_kib, base.rss_kib + rss_margin)
      << "RSS grew from " << base.rss_kib << " KiB to " << last.rss_kib << " KiB";

  // Processes: every old generation (each seen gone above) is reaped: no
  // /proc entry left. The newest one serves; nothing alive has a zombie child.
  EXPECT_TRUE(eventually([&] {
    reap_zombies();
    for (size_t i = 0; i + 1 < pids.size(); ++i)
      if (std::ifstream("/proc/" + std::to_string(pids[i]) + "/stat")) return false;
    return true;
  })) << "an old generation was left a zombie";
  for (pid_t p : pids) {
    if (!pid_alive(p)) continue;
    EXPECT_EQ(zombie_children_of(p), 0) << "pid " << p;
  }
  EXPECT_TRUE(pid_alive(pids.back()));
  auto conn = connect_to(d.address());
  EXPECT_TRUE(conn && echo_roundtrip(conn.get(), "after " + std::to_string(n) + " upgrades\n"));

  std::sort(upgrade_ms.begin(), upgrade_ms.end());
  std::cout << "[ figure ] " << n << " upgrades in " << total_s << " s (" << total_s * 1000 / n
            << " ms each incl. the old generation's exit); upgrade request to READY+COMMIT: median "
            << upgrade_ms[upgrade_ms.size() / 2] << " ms, max " << upgrade_ms.back() << " ms\n"
            << "[ figure ] fds of the serving generation: " << base.fds << " after upgrade " << base.upgrade << " ("
            << base.kinds << "), " << last.fds << " after upgrade " << last.upgrade << " (" << last.kinds << ")\n"
            << "[ figure ] RSS of the serving generation: " << base.rss_kib << " KiB after upgrade " << base.upgrade
            << ", " << last.rss_kib << " KiB after upgrade " << last.upgrade << " (range " << rss_lo->rss_kib << ".."
            << rss_hi->rss_kib << " KiB, margin " << rss_margin << " KiB)\n"
            << "[ figure ] load: " << report.summary << "\n";
}

}  // namespace
}  // namespace baton::test
