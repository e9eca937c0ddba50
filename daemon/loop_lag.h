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
// shows whether the connections it serves could feel it. In a window, the
// turns that ran upgrade code (upgrade_work) are also counted apart: the
// others are the service's own work (an echo turn under load can use most
// of a millisecond), which the window would show without an upgrade too.
// Each turn's CPU time (the loop thread's) is kept beside its wall time:
// the difference is the time the scheduler gave the CPU to others (on a
// busy machine: the new generation starting, clients woken by our writes).

#include <uv.h>

#include <cstdint>
#include <optional>

#include <nlohmann/json.hpp>

#include "baton/handoff/uv_handle.h"
#include "latency_histogram.h"  // stats/

namespace baton::daemon {

class LoopLag {
 public:
  static constexpr uint64_t kIntervalMs = 100;

  // Starts probing (and turns on libuv's idle-time metric); an error is libuv's.
  int start(uv_loop_t* loop);
  void stop();

  // Seconds: the last probe's lateness, and the largest since start.
  double last_s() const { return last_ns_ / 1e9; }
  double max_s() const { return lag_.max() / 1e6; }

  // Call first thing in a uv_signal callback: the loop was woken by it.
  void signal_woke();

  // Call from a callback that runs upgrade code: this turn is the upgrade's.
  void upgrade_work() { upgrade_turn_ = true; }

  void begin_window();
  void end_window();
  bool window_open() const { return window_.has_value(); }
  // {"last","max","p99","blocked_max","blocked_p99"} in ms.
  nlohmann::json to_json() const;
  // The last window that ended, null before one has: over all its turns
  // ("iterations"), "blocked_max", "blocked_p99", "cpu_max" and "lag_max";
  // over the "upgrade_turns" that ran upgrade code, "upgrade_turn_max" and
  // "upgrade_turn_cpu_max". Times in ms.
  nlohmann::json last_window_json() const;
  uint64_t windows_ended() const { return windows_ended_; }
  // "loop blocked at most 0.40 ms (p99 0.10 ms) over 38 iteration(s)": the open window, for a log line.
  std::string window_summary() const;

 private:
  struct Window {
    stats::LatencyHistogram blocked;  // µs
    uint64_t lag_max_ns = 0;
    uint64_t cpu_max_ns = 0;  // the most CPU time one turn used
    stats::LatencyHistogram upgrade_turns;  // µs blocked, the turns that ran upgrade code
    uint64_t upgrade_cpu_max_ns = 0;
  };
  static void on_timer(uv_timer_t* t);
  static void on_check(uv_check_t* c);
  static void on_prepare(uv_prepare_t* p);

  uv_loop_t* loop_ = nullptr;
  handoff::UvHandle<uv_timer_t> timer_;
  handoff::UvHandle<uv_check_t> check_;
  handoff::UvHandle<uv_prepare_t> prepare_;
  uint64_t poll_entered_ns_ = 0, cpu_at_poll_ns_ = 0;  // at the last prepare (thread CPU time)
  uint64_t signal_wait_ns_ = 0;                         // this turn's wait a signal ended
  bool upgrade_turn_ = false;                           // this turn ran upgrade code
  bool idle_metric_ = false;  // uv_loop_configure(UV_METRICS_IDLE_TIME) took
  uint64_t due_ns_ = 0;       // uv_hrtime() at which the probe should fire
  uint64_t last_ns_ = 0;
  uint64_t last_check_ns_ = 0, last_idle_ns_ = 0, last_check_cpu_ns_ = 0;
  // The first turn of each probe only sets its base: before the loop runs
  // (a new generation's whole take-over) is not a loop turn.
  bool timer_based_ = false, check_based_ = false;
  stats::LatencyHistogram lag_, blocked_;  // µs
  std::optional<Window> window_;       // open while an upgrade runs
  std::optional<Window> last_window_;  // the last one that ended
  uint64_t windows_ended_ = 0;
};

}  // namespace baton::daemon
