// LoopLag: in an upgrade's window, the upgrade's own code is timed per turn,
// and the turns that ran it are counted apart from the service's own, each
// with its wall and CPU time; the turn that ends the window is one of it.

#include "loop_lag.h"

#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "unit_util.h"

namespace baton::daemon {
namespace {

uint64_t thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Busy for `ms` of this thread's CPU time (wall time is at least that).
void spin_cpu_ms(uint64_t ms) {
  const uint64_t until = thread_cpu_ns() + ms * 1000000;
  while (thread_cpu_ns() < until) {
  }
}

// Three turns, each a timer started by the one before (so never two in one
// turn): upgrade code for 3 ms beside 2 ms of the service's own; the
// service alone for 8 ms; then upgrade code that ends the window, 4 ms.
// Runs one loop turn (a pending idle handle keeps the poll from waiting).
void one_turn(uv_loop_t* loop) {
  uv_idle_t idle;
  uv_idle_init(loop, &idle);
  uv_idle_start(&idle, [](uv_idle_t*) {});
  uv_run(loop, UV_RUN_NOWAIT);
  uv_close(reinterpret_cast<uv_handle_t*>(&idle), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);  // its close callback, and one turn more
}

struct Script {
  LoopLag* lag;
  uv_timer_t timer{};
  int step = 0;
  bool done = false;
  // Each scope's wall time, as measured around it here: which is longer
  // depends on preemption as well as on the CPU it spins.
  uint64_t first_ns = 0, last_ns = 0;
};

void next_turn(uv_timer_t* t) {
  auto* s = static_cast<Script*>(t->data);
  switch (s->step++) {
    case 0: {
      const uint64_t t0 = uv_hrtime();
      {
        const LoopLag::Work work(*s->lag, "first");
        const LoopLag::Work nested(*s->lag, "nested");  // counted once, as the outer one
        spin_cpu_ms(3);
      }
      s->first_ns = uv_hrtime() - t0;
      spin_cpu_ms(2);
      break;
    }
    case 1:
      spin_cpu_ms(8);
      break;
    default: {
      const uint64_t t0 = uv_hrtime();
      {
        const LoopLag::Work work(*s->lag, "last");
        spin_cpu_ms(4);
      }
      s->last_ns = uv_hrtime() - t0;
      s->lag->end_window();
      s->done = true;
      return;
    }
  }
  uv_timer_start(t, &next_turn, 1, 0);
}

TEST(LoopLag, UpgradeWorkAndTheTurnsThatRanItAreMeasuredApartWithTheirCpuTime) {
  unit::TestLoop loop;
  LoopLag lag;
  int ended = 0;
  ASSERT_EQ(lag.start(&loop.loop, [&] { ++ended; }), 0);
  EXPECT_TRUE(lag.last_window_json().is_null());
  one_turn(&loop.loop);  // a first turn sets the probes' base
  lag.begin_window();
  Script script{&lag};
  uv_timer_init(&loop.loop, &script.timer);
  script.timer.data = &script;
  uv_timer_start(&script.timer, &next_turn, 1, 0);
  loop.run_until([&] { return script.done; });
  ASSERT_TRUE(script.done);
  one_turn(&loop.loop);  // should this libuv run the ending turn's check later
  EXPECT_FALSE(lag.window_open());
  EXPECT_EQ(ended, 1) << "it ended with the check of the turn that ended it";
  uv_close(reinterpret_cast<uv_handle_t*>(&script.timer), nullptr);
  lag.stop();
  const auto w = lag.last_window_json();
  ASSERT_TRUE(w.is_object());
  EXPECT_EQ(w["upgrade_turns"].get<uint64_t>(), 2u) << w;
  // The upgrade code: 3 ms (the nested scope not twice), then 4 ms in the last turn.
  EXPECT_GE(w["upgrade_work_cpu_max"].get<double>(), 4.0) << w;
  EXPECT_LT(w["upgrade_work_cpu_max"].get<double>(), 6.0) << w;
  EXPECT_GE(w["upgrade_work_max"].get<double>(), 3.9) << w;  // wall, µs resolution
  EXPECT_EQ(w["upgrade_work_max_in"], script.last_ns >= script.first_ns ? "last" : "first") << w;
  // The first turn whole: its upgrade code and the service's 2 ms.
  EXPECT_GE(w["upgrade_turn_cpu_max"].get<double>(), 5.0) << w;
  EXPECT_LT(w["upgrade_turn_cpu_max"].get<double>(), 8.0) << "the service's turn is not the upgrade's: " << w;
  EXPECT_GE(w["cpu_max"].get<double>(), 8.0) << w;
  EXPECT_GE(w["blocked_max"].get<double>(), 7.9) << w;
  EXPECT_GE(w["iterations"].get<uint64_t>(), 3u) << w;
  EXPECT_NE(lag.last_window_summary().find("the 2 that ran upgrade code"), std::string::npos)
      << lag.last_window_summary();
  // Without the run-queue wait: at least its CPU time, at most its wall time.
  if (w["upgrade_work_held_max"].is_null()) GTEST_SKIP() << "no /proc/thread-self/schedstat";
  EXPECT_GE(w["upgrade_work_held_max"].get<double>(), 3.9) << w;
  EXPECT_LE(w["upgrade_work_held_max"].get<double>(), w["upgrade_work_max"].get<double>()) << w;
}

// This thread and a busy one on this thread's core, until it goes out of
// scope (also when an assertion returns early): the affinity is restored.
class SharedCore {
 public:
  SharedCore() {
    const int cpu = ::sched_getcpu();
    if (cpu < 0 || ::sched_getaffinity(0, sizeof before_, &before_) != 0) return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (::sched_setaffinity(0, sizeof one, &one) != 0) return;  // this thread, and the spinner it starts
    pinned_ = true;
    spinner_ = std::thread([this] {
      while (spin_.load(std::memory_order_relaxed)) {
      }
    });
  }
  ~SharedCore() {
    spin_ = false;
    if (spinner_.joinable()) spinner_.join();
    if (pinned_) ::sched_setaffinity(0, sizeof before_, &before_);
  }
  bool ok() const { return pinned_; }

 private:
  cpu_set_t before_{};
  bool pinned_ = false;
  std::atomic<bool> spin_{true};
  std::thread spinner_;
};

// Upgrade code that shares its core with a busy thread waits for it in the
// run queue: that wait is in its wall time, not in what it held the loop.
TEST(LoopLag, TheUpgradeCodesHeldTimeLeavesOutItsWaitForACore) {
  unit::TestLoop loop;
  LoopLag lag;
  ASSERT_EQ(lag.start(&loop.loop), 0);
  one_turn(&loop.loop);
  {
    SharedCore shared;
    if (!shared.ok()) GTEST_SKIP() << "cannot pin this thread to one core";
    lag.begin_window();
    {
      const LoopLag::Work work(lag, "shared");
      spin_cpu_ms(20);  // about 40 ms of wall time, half of it waiting for the spinner's slices
    }
    lag.end_window(/*now=*/true);
  }
  lag.stop();
  const auto w = lag.last_window_json();
  if (w["upgrade_work_held_max"].is_null()) GTEST_SKIP() << "no scheduler statistics (/proc/thread-self/schedstat)";
  const double wall = w["upgrade_work_max"].get<double>(), held = w["upgrade_work_held_max"].get<double>();
  EXPECT_GE(held, 19.9) << w;
  ASSERT_GE(wall, 30.0) << "the spinner took no turn: " << w;
  EXPECT_LE(held, wall - 8.0) << "the run-queue wait counted as held: " << w;
}

TEST(LoopLag, WhileHeldEveryTurnIsTheUpgradesAndAWindowEndedNowCountsItsTurnSoFar) {
  unit::TestLoop loop;
  LoopLag lag;
  int ended = 0;
  ASSERT_EQ(lag.start(&loop.loop, [&] { ++ended; }), 0);
  one_turn(&loop.loop);
  lag.begin_window();
  lag.hold_upgrade_turns(true);
  one_turn(&loop.loop);  // two turns
  lag.hold_upgrade_turns(false);
  one_turn(&loop.loop);
  spin_cpu_ms(3);
  lag.end_window(/*now=*/true);
  EXPECT_EQ(ended, 1);
  const auto w = lag.last_window_json();
  EXPECT_EQ(w["upgrade_turns"].get<uint64_t>(), 2u) << w;
  EXPECT_EQ(w["iterations"].get<uint64_t>(), 5u) << "four turns and the one in progress: " << w;
  EXPECT_GE(w["cpu_max"].get<double>(), 3.0) << w;
  EXPECT_EQ(w["upgrade_work_max"].get<double>(), 0.0) << w;
  lag.stop();
  EXPECT_EQ(ended, 1);
}

}  // namespace
}  // namespace baton::daemon
