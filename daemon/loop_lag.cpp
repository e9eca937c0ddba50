#include "loop_lag.h"

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <utility>

namespace baton::daemon {
namespace {

double ms(uint64_t ns) { return static_cast<double>(ns) / 1e6; }
double us_ms(uint64_t us) { return static_cast<double>(us) / 1e3; }

// The CPU time this thread (the loop's) has used.
uint64_t thread_cpu_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

int LoopLag::start(uv_loop_t* loop) {
  loop_ = loop;
  // Without it (an error) the blocked time includes the time spent waiting
  // in epoll: an upper bound, still worth showing.
  idle_metric_ = uv_loop_configure(loop, UV_METRICS_IDLE_TIME) == 0;
  if (int rc = timer_.init(uv_timer_init, loop, this); rc != 0) return rc;
  // Neither probe alone may keep the loop alive once everything else is done.
  uv_unref(timer_.handle());
  due_ns_ = uv_hrtime() + kIntervalMs * 1000000;
  if (int rc = uv_timer_start(timer_.get(), &LoopLag::on_timer, kIntervalMs, kIntervalMs); rc != 0) return rc;
  if (int rc = check_.init(uv_check_init, loop, this); rc != 0) return rc;
  uv_unref(check_.handle());
  last_check_ns_ = uv_hrtime();
  last_check_cpu_ns_ = thread_cpu_ns();
  last_idle_ns_ = idle_metric_ ? uv_metrics_idle_time(loop) : 0;
  if (int rc = prepare_.init(uv_prepare_init, loop, this); rc != 0) return rc;
  uv_unref(prepare_.handle());
  if (int rc = uv_prepare_start(prepare_.get(), &LoopLag::on_prepare); rc != 0) return rc;
  return uv_check_start(check_.get(), &LoopLag::on_check);
}

void LoopLag::on_prepare(uv_prepare_t* p) {
  auto* self = static_cast<LoopLag*>(p->data);
  self->poll_entered_ns_ = uv_hrtime();
  self->cpu_at_poll_ns_ = thread_cpu_ns();
}

void LoopLag::signal_woke() {
  // Since the poll began: the wait, and the callbacks libuv ran before ours
  // (it runs signal watchers last), which used the CPU; waiting did not.
  if (poll_entered_ns_ == 0) return;
  const uint64_t since = uv_hrtime() - poll_entered_ns_, busy = thread_cpu_ns() - cpu_at_poll_ns_;
  signal_wait_ns_ = since > busy ? since - busy : 0;
}

void LoopLag::stop() {
  timer_.close();
  check_.close();
  prepare_.close();
}

void LoopLag::on_timer(uv_timer_t* t) {
  auto* self = static_cast<LoopLag*>(t->data);
  const uint64_t now = uv_hrtime();
  if (!self->timer_based_) {
    self->timer_based_ = true;
    self->due_ns_ = now + kIntervalMs * 1000000;
    return;
  }
  self->last_ns_ = now > self->due_ns_ ? now - self->due_ns_ : 0;
  self->lag_.record(self->last_ns_ / 1000);
  if (self->window_) self->window_->lag_max_ns = std::max(self->window_->lag_max_ns, self->last_ns_);
  // libuv re-arms a repeating timer from the loop's cached time when it ran,
  // so the next due time counts from now.
  self->due_ns_ = now + kIntervalMs * 1000000;
}

void LoopLag::on_check(uv_check_t* c) {
  auto* self = static_cast<LoopLag*>(c->data);
  const uint64_t now = uv_hrtime();
  const uint64_t idle = self->idle_metric_ ? uv_metrics_idle_time(self->loop_) : self->last_idle_ns_;
  const uint64_t wall = now - self->last_check_ns_;
  // A newer libuv may count the signal's wait itself: not twice.
  const uint64_t waited = std::max(idle - self->last_idle_ns_, std::exchange(self->signal_wait_ns_, 0));
  const uint64_t blocked = wall > waited ? wall - waited : 0;
  const uint64_t cpu_now = thread_cpu_ns(), cpu = cpu_now - self->last_check_cpu_ns_;
  self->last_check_cpu_ns_ = cpu_now;
  self->last_check_ns_ = now;
  self->last_idle_ns_ = idle;
  if (!self->check_based_) {
    self->check_based_ = true;
    self->upgrade_turn_ = false;
    return;
  }
  self->blocked_.record(blocked / 1000);
  if (auto& w = self->window_) {
    w->blocked.record(blocked / 1000);
    w->cpu_max_ns = std::max(w->cpu_max_ns, cpu);
    if (self->upgrade_turn_) {
      w->upgrade_turns.record(blocked / 1000);
      w->upgrade_cpu_max_ns = std::max(w->upgrade_cpu_max_ns, cpu);
    }
  }
  self->upgrade_turn_ = false;
}

void LoopLag::begin_window() { window_.emplace(); }

void LoopLag::end_window() {
  if (!window_) return;
  last_window_ = std::move(window_);
  window_.reset();
  ++windows_ended_;
}

nlohmann::json LoopLag::to_json() const {
  return {{"last", ms(last_ns_)},
          {"max", us_ms(lag_.max())},
          {"p99", us_ms(lag_.percentile(0.99))},
          {"blocked_max", us_ms(blocked_.max())},
          {"blocked_p99", us_ms(blocked_.percentile(0.99))}};
}

nlohmann::json LoopLag::last_window_json() const {
  if (!last_window_) return nullptr;
  return {{"blocked_max", us_ms(last_window_->blocked.max())},
          {"blocked_p99", us_ms(last_window_->blocked.percentile(0.99))},
          {"lag_max", ms(last_window_->lag_max_ns)},
          {"cpu_max", ms(last_window_->cpu_max_ns)},
          {"iterations", last_window_->blocked.count()},
          {"upgrade_turns", last_window_->upgrade_turns.count()},
          {"upgrade_turn_max", us_ms(last_window_->upgrade_turns.max())},
          {"upgrade_turn_cpu_max", ms(last_window_->upgrade_cpu_max_ns)}};
}

std::string LoopLag::window_summary() const {
  if (!window_) return "no window";
  char buf[320];
  std::snprintf(buf, sizeof buf,
                "loop blocked at most %.2f ms (p99 %.2f ms, at most %.2f ms of CPU) over %llu iteration(s); "
                "the %llu that ran upgrade code at most %.2f ms (%.2f ms of CPU)",
                us_ms(window_->blocked.max()), us_ms(window_->blocked.percentile(0.99)), ms(window_->cpu_max_ns),
                static_cast<unsigned long long>(window_->blocked.count()),
                static_cast<unsigned long long>(window_->upgrade_turns.count()), us_ms(window_->upgrade_turns.max()),
                ms(window_->upgrade_cpu_max_ns));
  return buf;
}

}  // namespace baton::daemon
