#pragma once
// LoopLag: how late the event loop runs a timer, measured by a timer of its
// own every 100 ms. A loop blocked (a slow syscall, a long callback) shows as
// lag; it is the figure that says whether an upgrade was felt by the
// connections the loop serves. Reported in status and metrics.

#include <uv.h>

#include <cstdint>

#include "baton/handoff/uv_handle.h"

namespace baton::daemon {

class LoopLag {
 public:
  static constexpr uint64_t kIntervalMs = 100;

  // Starts probing; an error is libuv's.
  int start(uv_loop_t* loop);
  void stop() { timer_.close(); }

  // Seconds: the last probe's lateness, and the largest since start.
  double last_s() const { return last_ns_ / 1e9; }
  double max_s() const { return max_ns_ / 1e9; }

 private:
  static void on_timer(uv_timer_t* t);

  handoff::UvHandle<uv_timer_t> timer_;
  uint64_t due_ns_ = 0;  // uv_hrtime() at which the probe should fire
  uint64_t last_ns_ = 0;
  uint64_t max_ns_ = 0;
};

}  // namespace baton::daemon
