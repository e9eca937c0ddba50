#include "loop_lag.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
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

LoopLag::Work::Work(LoopLag& lag, const char* what) : lag_(lag), what_(what), outer_(lag.work_depth_++ == 0) {
  if (!outer_) return;
  span0_ = uv_hrtime();
  waited0_ = lag_.run_queue_wait_ns();
  wall0_ = uv_hrtime();
  cpu0_ = thread_cpu_ns();
}

LoopLag::Work::~Work() {
  --lag_.work_depth_;
  lag_.upgrade_turn_ = true;
  if (!outer_) return;
  const uint64_t wall = uv_hrtime() - wall0_;
  lag_.turn_work_ns_ += wall;
  lag_.turn_work_cpu_ns_ += thread_cpu_ns() - cpu0_;
  // The wait is read outside the wall time: a wait during a read is in the
  // span, which includes the reads, and what is left is capped at the wall
  // time. Not known (a read failed): the wall time, never less than held.
  const auto waited1 = lag_.run_queue_wait_ns();
  const uint64_t span = uv_hrtime() - span0_;
  uint64_t held = wall;
  if (waited0_ && waited1 && *waited1 >= *waited0_) {
    const uint64_t waited = *waited1 - *waited0_;
    held = std::min(wall, span > waited ? span - waited : 0);
  }
  lag_.turn_work_held_ns_ += held;
  if (wall >= lag_.turn_longest_ns_) {
    lag_.turn_longest_ns_ = wall;
    lag_.turn_longest_what_ = what_;
  }
}

namespace {

// "<ns on a core> <ns waiting for one> <slices>\n" (the wait is added when
// the thread gets a core, so it is current while we run). nullopt if it
// cannot be read or parsed.
std::optional<std::array<uint64_t, 3>> read_schedstat(int fd) {
  char buf[96];
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return std::nullopt;
  buf[n] = '\0';
  std::array<uint64_t, 3> fields{};
  const char* at = buf;
  for (auto& f : fields) {
    char* end = nullptr;
    errno = 0;
    f = std::strtoull(at, &end, 10);
    if (end == at || errno != 0) return std::nullopt;
    at = end;
  }
  return fields;
}

}  // namespace

std::optional<uint64_t> LoopLag::run_queue_wait_ns() const {
  if (!schedstat_) return std::nullopt;
  auto fields = read_schedstat(schedstat_.get());
  if (!fields) return std::nullopt;
  return (*fields)[1];
}

int LoopLag::start(uv_loop_t* loop, std::function<void()> window_ended) {
  loop_ = loop;
  window_ended_ = std::move(window_ended);
  // The calling thread's: the loop's. Without it (a kernel without
  // CONFIG_SCHED_INFO) "held" is not reported.
  schedstat_ = handoff::UniqueFd(::open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC));
  // A running thread has had at least one slice; a kernel that keeps no
  // scheduler statistics says "0 0 0".
  if (schedstat_) {
    auto fields = read_schedstat(schedstat_.get());
    if (!fields || (*fields)[2] == 0) schedstat_.reset();
  }
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
  if (window_ && ending_) finish_window();
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

LoopLag::TurnSoFar LoopLag::turn_so_far() const {
  const uint64_t now = uv_hrtime();
  const uint64_t idle = idle_metric_ ? uv_metrics_idle_time(loop_) : last_idle_ns_;
  const uint64_t wall = now - last_check_ns_;
  // A newer libuv may count the signal's wait itself: not twice.
  const uint64_t waited = std::max(idle - last_idle_ns_, signal_wait_ns_);
  const uint64_t cpu = thread_cpu_ns();
  return {now, idle, cpu, wall > waited ? wall - waited : 0, cpu - last_check_cpu_ns_};
}

void LoopLag::on_check(uv_check_t* c) {
  auto* self = static_cast<LoopLag*>(c->data);
  const auto turn = self->turn_so_far();
  self->last_check_ns_ = turn.at_ns;
  self->last_idle_ns_ = turn.idle_ns;
  self->last_check_cpu_ns_ = turn.cpu_at_ns;
  self->signal_wait_ns_ = 0;
  if (self->check_based_) {
    self->blocked_.record(turn.blocked_ns / 1000);
    self->record_turn(turn.blocked_ns, turn.cpu_ns);
  }
  self->check_based_ = true;
  self->upgrade_turn_ = false;
  self->turn_work_ns_ = self->turn_work_cpu_ns_ = self->turn_work_held_ns_ = self->turn_longest_ns_ = 0;
  if (self->window_ && self->ending_) self->finish_window();
}

void LoopLag::record_turn(uint64_t blocked_ns, uint64_t cpu_ns) {
  if (!window_) return;
  auto& w = *window_;
  w.blocked.record(blocked_ns / 1000);
  w.cpu_max_ns = std::max(w.cpu_max_ns, cpu_ns);
  if (upgrade_turn_ || hold_) {
    w.upgrade_turns.record(blocked_ns / 1000);
    w.upgrade_turn_cpu_max_ns = std::max(w.upgrade_turn_cpu_max_ns, cpu_ns);
  }
  if (turn_work_ns_ > 0) {
    if (turn_work_ns_ / 1000 >= w.upgrade_work.max()) w.upgrade_work_max_in = turn_longest_what_;
    w.upgrade_work.record(turn_work_ns_ / 1000);
    w.upgrade_work_cpu_max_ns = std::max(w.upgrade_work_cpu_max_ns, turn_work_cpu_ns_);
    w.upgrade_work_held.record(turn_work_held_ns_ / 1000);
  }
}

void LoopLag::begin_window() {
  if (window_ && ending_) finish_window();  // the last one ended in this very turn
  window_.emplace();
  ending_ = false;
}

void LoopLag::end_window(bool now) {
  if (!window_) return;
  ending_ = true;
  if (!now) return;
  // This turn so far, then the window ends before the turn does.
  if (check_based_) {
    const auto turn = turn_so_far();
    record_turn(turn.blocked_ns, turn.cpu_ns);
  }
  finish_window();
}

void LoopLag::finish_window() {
  last_window_ = std::move(window_);
  window_.reset();
  ending_ = false;
  ++windows_ended_;
  if (window_ended_) window_ended_();
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
  const auto& w = *last_window_;
  return {{"blocked_max", us_ms(w.blocked.max())},
          {"blocked_p99", us_ms(w.blocked.percentile(0.99))},
          {"lag_max", ms(w.lag_max_ns)},
          {"cpu_max", ms(w.cpu_max_ns)},
          {"iterations", w.blocked.count()},
          {"upgrade_turns", w.upgrade_turns.count()},
          {"upgrade_turn_max", us_ms(w.upgrade_turns.max())},
          {"upgrade_turn_cpu_max", ms(w.upgrade_turn_cpu_max_ns)},
          {"upgrade_work_max", us_ms(w.upgrade_work.max())},
          {"upgrade_work_p99", us_ms(w.upgrade_work.percentile(0.99))},
          {"upgrade_work_cpu_max", ms(w.upgrade_work_cpu_max_ns)},
          {"upgrade_work_max_in", w.upgrade_work_max_in},
          {"upgrade_work_held_max", schedstat_ ? nlohmann::json(us_ms(w.upgrade_work_held.max())) : nlohmann::json()},
          {"upgrade_work_held_p99",
           schedstat_ ? nlohmann::json(us_ms(w.upgrade_work_held.percentile(0.99))) : nlohmann::json()}};
}

std::string LoopLag::last_window_summary() const {
  if (!last_window_) return "no window";
  const auto& w = *last_window_;
  char held[64] = "not known";
  if (schedstat_) std::snprintf(held, sizeof held, "%.2f ms", us_ms(w.upgrade_work_held.max()));
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "loop blocked at most %.2f ms (p99 %.2f ms, at most %.2f ms of CPU) over %llu turn(s); the %llu that "
                "ran upgrade code at most %.2f ms (%.2f ms of CPU); the upgrade code itself at most %.2f ms in one "
                "turn (%.2f ms of CPU, %s less its run-queue wait; %s)",
                us_ms(w.blocked.max()), us_ms(w.blocked.percentile(0.99)), ms(w.cpu_max_ns),
                static_cast<unsigned long long>(w.blocked.count()),
                static_cast<unsigned long long>(w.upgrade_turns.count()), us_ms(w.upgrade_turns.max()),
                ms(w.upgrade_turn_cpu_max_ns), us_ms(w.upgrade_work.max()), ms(w.upgrade_work_cpu_max_ns),
                held, *w.upgrade_work_max_in ? w.upgrade_work_max_in : "none");
  return buf;
}

}  // namespace baton::daemon
