// LoopLag: in an upgrade's window, the turns that ran upgrade code are
// counted apart from the service's own, each with its wall and CPU time.

#include "loop_lag.h"

#include <time.h>

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

struct Turn {
  LoopLag* lag;
  uint64_t spin_ms;
  bool upgrade;
};

TEST(LoopLag, TurnsThatRanUpgradeCodeAreMeasuredApartWithTheirCpuTime) {
  unit::TestLoop loop;
  LoopLag lag;
  ASSERT_EQ(lag.start(&loop.loop), 0);
  EXPECT_TRUE(lag.last_window_json().is_null());
  // A first turn sets the probes' base; then the window opens.
  uv_run(&loop.loop, UV_RUN_NOWAIT);
  lag.begin_window();
  Turn upgrade{&lag, 3, true}, service{&lag, 8, false};
  uv_timer_t t1, t2;
  for (auto [t, turn, at] : {std::tuple{&t1, &upgrade, 5}, std::tuple{&t2, &service, 40}}) {
    uv_timer_init(&loop.loop, t);
    t->data = turn;
    uv_timer_start(t, [](uv_timer_t* t) {
      auto* turn = static_cast<Turn*>(t->data);
      if (turn->upgrade) turn->lag->upgrade_work();
      spin_cpu_ms(turn->spin_ms);
      uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
    }, at, 0);
  }
  loop.run_until([&] { return uv_is_closing(reinterpret_cast<uv_handle_t*>(&t2)); });
  uv_run(&loop.loop, UV_RUN_NOWAIT);  // the turn's check runs after its timers
  lag.end_window();
  lag.stop();
  const auto w = lag.last_window_json();
  ASSERT_TRUE(w.is_object());
  EXPECT_EQ(w["upgrade_turns"].get<uint64_t>(), 1u) << w;
  EXPECT_GE(w["upgrade_turn_cpu_max"].get<double>(), 3.0) << w;
  EXPECT_LT(w["upgrade_turn_cpu_max"].get<double>(), 8.0) << "the service's turn is not the upgrade's: " << w;
  EXPECT_GE(w["upgrade_turn_max"].get<double>(), 2.9) << w;  // wall, 10 µs buckets
  EXPECT_GE(w["cpu_max"].get<double>(), 8.0) << w;
  EXPECT_GE(w["blocked_max"].get<double>(), 7.9) << w;
  EXPECT_GE(w["iterations"].get<uint64_t>(), 2u) << w;
}

}  // namespace
}  // namespace baton::daemon
