#pragma once
// LoopLag: the event loop's own measure of how late it is, two ways.
//   - Blocked: after each I/O poll (a check handle), the time the loop spent
//     since the previous one doing anything but waiting in the kernel
//     (libuv's idle-time metric subtracted): the longest a new event could
//     have waited for it. Max and p99 per iteration since start. libuv 1.44
//     loses the wait that a signal interrupts (epoll_wait's EINTR restarts
//     its idle clock): the signal handlers say so (signal_woke), and the time
//     since the poll began (a prepare handle) less the CPU the thread used
//     meanwhile counts as waiting.
//   - Lag: how late a probe timer of its own fires, every 100 ms. Last, max
//     and p99 since start.
// Both also over a window (an upgrade: begin_window at its request,
// end_window at its outcome), kept until the next one. It is how an upgrade
// shows whether the connections it serves could feel it. In a window:
//   - the upgrade's own code (each Work scope) is timed, wall and CPU, and
//     summed per turn: how long the upgrade held the loop in one turn. Work
//     inside the library's own callbacks that does not call back into us
//     (sending a batch of connections, reading half a message) is not in it;
//   - the turns that ran upgrade code, or that fell while a connection
//     hand-off was in flight (hold_upgrade_turns), are counted whole: an
//     upper bound that includes the service's own work in the same turn (an
//     echo turn under load can use most of a millisecond by itself).
// Each turn's CPU time (the loop thread's) is kept beside its wall time: the
// difference is time the thread did not run (the kernel gave the core to
// another process, or a system call slept). For the upgrade code, the time
// the thread was runnable but waited for a core (its scheduler run-queue
// wait, /proc/thread-self/schedstat) is also taken out: what is left
// ("held") is the time the upgrade's own code kept the loop, sleeping system
// calls included, but not the time other processes (the new generation
// starting, a load generator) had the cores.

#include <uv.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "baton/handoff/unique_fd.h"
#include "baton/handoff/uv_handle.h"
#include "latency_histogram.h"  // stats/

namespace baton::daemon {

class LoopLag {
 public:
  static constexpr uint64_t kIntervalMs = 100;

  // Upgrade code runs in its scope; `what` names it (a string literal), for
  // the window's longest. Nested scopes count once, as the outer one.
  class Work {
   public:
    Work(LoopLag& lag, const char* what);
    ~Work();
    Work(const Work&) = delete;
    Work& operator=(const Work&) = delete;

   private:
    LoopLag& lag_;
    const char* what_;
    bool outer_;
    uint64_t span0_ = 0, wall0_ = 0, cpu0_ = 0;
    std::optional<uint64_t> waited0_;
  };

  // Starts probing (and turns on libuv's idle-time metric); an error is
  // libuv's. `window_ended` runs when a window has ended (after its last turn).
  int start(uv_loop_t* loop, std::function<void()> window_ended = {});
  void stop();

  // Seconds: the last probe's lateness, and the largest since start.
  double last_s() const { return last_ns_ / 1e9; }
  double max_s() const { return lag_.max() / 1e6; }

  // Call first thing in a uv_signal callback: the loop was woken by it.
  void signal_woke();

  // While on, every turn counts as one of the upgrade's (a connection
  // hand-off in flight: its sends and answers run in the library's callbacks).
  void hold_upgrade_turns(bool on) { hold_ = on; }

  void begin_window();
  // The window ends after the current turn, which it counts (a turn that
  // ends an upgrade is one of its own); `now`: at once, with this turn so
  // far (the process is about to exit), also if it was to end after it.
  void end_window(bool now = false);
  bool window_open() const { return window_.has_value() && !ending_; }
  // {"last","max","p99","blocked_max","blocked_p99"} in ms.
  nlohmann::json to_json() const;
  // The last window that ended, null before one has. Over all its turns
  // ("iterations"): "blocked_max", "blocked_p99", "cpu_max", "lag_max". Over
  // the "upgrade_turns": "upgrade_turn_max", "upgrade_turn_cpu_max". The
  // upgrade code's own time per turn: "upgrade_work_max",
  // "upgrade_work_p99", "upgrade_work_cpu_max", and the longest scope of the
  // turn with the most, "upgrade_work_max_in" (a Work's `what`); without the
  // run-queue wait, "upgrade_work_held_max" and "upgrade_work_held_p99"
  // (null where the kernel does not say). Times in ms.
  nlohmann::json last_window_json() const;
  uint64_t windows_ended() const { return windows_ended_; }
  // The last window that ended, for a log line: "loop blocked at most 0.40
  // ms (p99 0.10 ms, at most 0.41 ms of CPU) over 38 turn(s); the 9 that ran
  // upgrade code at most 0.40 ms (0.41 ms of CPU); the upgrade code itself
  // at most 0.21 ms in one turn (0.20 ms of CPU, 0.21 ms less its run-queue
  // wait; request)".
  std::string last_window_summary() const;

 private:
  struct Window {
    stats::LatencyHistogram blocked;  // µs, every turn
    uint64_t lag_max_ns = 0;
    uint64_t cpu_max_ns = 0;                // the most CPU time one turn used
    stats::LatencyHistogram upgrade_turns;  // µs blocked, the turns that were the upgrade's
    uint64_t upgrade_turn_cpu_max_ns = 0;
    stats::LatencyHistogram upgrade_work;  // µs of upgrade code per turn that ran some
    uint64_t upgrade_work_cpu_max_ns = 0;
    const char* upgrade_work_max_in = "";  // the longest scope of the turn with the most
    stats::LatencyHistogram upgrade_work_held;  // µs, the same less the run-queue wait
  };
  static void on_timer(uv_timer_t* t);
  static void on_check(uv_check_t* c);
  static void on_prepare(uv_prepare_t* p);
  struct TurnSoFar {
    uint64_t at_ns, idle_ns, cpu_at_ns;  // now: uv_hrtime, libuv idle time, thread CPU time
    uint64_t blocked_ns, cpu_ns;         // since the last check
  };
  TurnSoFar turn_so_far() const;
  void record_turn(uint64_t blocked_ns, uint64_t cpu_ns);
  void finish_window();

  uv_loop_t* loop_ = nullptr;
  std::function<void()> window_ended_;
  handoff::UvHandle<uv_timer_t> timer_;
  handoff::UvHandle<uv_check_t> check_;
  handoff::UvHandle<uv_prepare_t> prepare_;
  uint64_t poll_entered_ns_ = 0, cpu_at_poll_ns_ = 0;  // at the last prepare (thread CPU time)
  uint64_t signal_wait_ns_ = 0;                         // this turn's wait a signal ended
  bool idle_metric_ = false;  // uv_loop_configure(UV_METRICS_IDLE_TIME) took
  uint64_t due_ns_ = 0;       // uv_hrtime() at which the probe should fire
  uint64_t last_ns_ = 0;
  uint64_t last_check_ns_ = 0, last_idle_ns_ = 0, last_check_cpu_ns_ = 0;
  // The first turn of each probe only sets its base: before the loop runs
  // (a new generation's whole take-over) is not a loop turn.
  bool timer_based_ = false, check_based_ = false;
  // This turn: upgrade code ran (Work), for this long.
  bool upgrade_turn_ = false;
  uint64_t turn_work_ns_ = 0, turn_work_cpu_ns_ = 0, turn_work_held_ns_ = 0;
  // The loop thread's schedstat (its run-queue wait), read again at each
  // Work scope's ends; invalid where the kernel keeps none.
  handoff::UniqueFd schedstat_;
  // nullopt when it cannot be read.
  std::optional<uint64_t> run_queue_wait_ns() const;
  uint64_t turn_longest_ns_ = 0;          // this turn's longest scope
  const char* turn_longest_what_ = "";
  unsigned work_depth_ = 0;
  bool hold_ = false;
  stats::LatencyHistogram lag_, blocked_;  // µs
  std::optional<Window> window_;       // open while an upgrade runs
  bool ending_ = false;                // window_ ends after this turn
  std::optional<Window> last_window_;  // the last one that ended
  uint64_t windows_ended_ = 0;
};

}  // namespace baton::daemon
