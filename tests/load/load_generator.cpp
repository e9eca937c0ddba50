#include "load_generator.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <queue>
#include <random>
#include <vector>

#include "echo_stream.h"
#include "epoll.h"
#include "sockets.h"
#include "stop_signals.h"

namespace baton::load {
namespace {

using std::chrono::duration_cast;
using std::chrono::microseconds;
using std::chrono::milliseconds;

// Beyond this many simultaneous churn connections a start is skipped (and
// counted): a server that stops answering must not make us open fds without bound.
constexpr size_t kMaxChurnConnections = 256;
// A connect that failed outright is retried after this pause, not in a busy loop.
constexpr milliseconds kReconnectBackoff{100};
// A unix socket whose accept queue is full answers EAGAIN; retry that soon.
constexpr milliseconds kUnixBacklogRetry{5};
constexpr milliseconds kSweepInterval{20};
constexpr size_t kReadChunk = 64 * 1024;
// Reads per readiness event: enough to drain a pipeline, bounded for fairness.
constexpr int kReadsPerEvent = 16;
constexpr int kLoggedFailures = 20;
constexpr uint64_t kSignalToken = ~uint64_t{0};

enum class Phase { Connect, Run, Drain, Done };
// Idle: no socket (a free churn slot, or a persistent connection waiting to reconnect).
// Connecting without a socket: a unix connect to retry at retry_at.
enum class State { Idle, Connecting, Open, Closing };

struct Conn {
  bool persistent = false;
  uint32_t index = 0;
  uint32_t generation = 0;  // bumped on every close, so stale epoll events are ignored
  State state = State::Idle;
  UniqueFd fd;
  uint32_t events = 0;
  EchoStream stream;
  Clock::time_point connect_started{};
  Clock::time_point last_progress{};
  Clock::time_point retry_at{};
  Clock::time_point next_send{};  // --rate pacing
  bool rate_wakeup_queued = false;
  int connects = 0;              // connect attempts so far (persistent: >1 means reconnecting)
  bool resolved = false;         // Connect phase: connected, or failed at least once
};

uint64_t token_of(const Conn& c) { return (uint64_t{c.generation} << 32) | c.index; }

std::string hex_byte(unsigned char b) {
  char out[8];
  std::snprintf(out, sizeof out, "0x%02x", b);
  return out;
}

}  // namespace

class LoadGenerator::Impl {
 public:
  Impl(const LoadOptions& options, Epoll epoll, StopSignals signals);
  handoff::Result<RunInfo> run();
  const LoadStats& stats() const { return stats_; }

 private:
  // Connection life cycle.
  void start_connect(Conn& c);
  void on_connected(Conn& c);
  void on_event(Conn& c, uint32_t events);
  bool read_ready(Conn& c);
  bool on_echo(Conn& c, std::string_view data);
  bool on_eof(Conn& c);
  bool flush(Conn& c);
  bool fill_pipeline(Conn& c);
  void begin_close(Conn& c);
  void close_conn(Conn& c);
  void fail(Conn& c, Failure why, const std::string& errno_detail, const std::string& what = {});
  bool watch(Conn& c, uint32_t events);

  // Timers and phases.
  void on_timers();
  void sweep();
  void connect_phase_check();
  void run_phase_timers();
  void start_churn();
  void emit_interval(int t, double seconds);
  void enter_run();
  void enter_drain();
  void drain_check();
  void finish_drain(bool deadline_passed);
  void on_stop_signal();
  int wait_timeout_ms() const;

  std::string describe(const Conn& c) const;
  double seconds_since(Clock::time_point t) const;

  LoadOptions options_;
  Epoll epoll_;
  StopSignals signals_;
  LoadStats stats_;
  RunInfo info_;
  PayloadRng rng_;
  std::vector<Conn> conns_;  // persistent first, then the churn slots
  std::vector<uint32_t> free_churn_;
  std::vector<uint32_t> reconnect_now_;
  using Wakeup = std::pair<Clock::time_point, uint32_t>;
  std::priority_queue<Wakeup, std::vector<Wakeup>, std::greater<>> rate_wakeups_;
  std::vector<char> read_buf_;

  Phase phase_ = Phase::Connect;
  Clock::time_point now_{};
  Clock::time_point started_{};
  Clock::time_point run_end_{};
  Clock::time_point drain_started_{};
  Clock::time_point drain_deadline_{};
  Clock::time_point next_sweep_{};
  Clock::time_point next_tick_{};
  Clock::time_point last_tick_{};
  Clock::time_point next_churn_{};
  int ticks_ = 0;
  int logged_failures_ = 0;
  Clock::duration send_interval_{};
  Clock::duration churn_interval_{};
  Clock::duration interval_{};  // of the timeline
};

LoadGenerator::Impl::Impl(const LoadOptions& options, Epoll epoll, StopSignals signals)
    : options_(options), epoll_(std::move(epoll)), signals_(std::move(signals)),
      rng_(std::random_device{}() | (uint64_t{std::random_device{}()} << 32)), read_buf_(kReadChunk) {
  const size_t persistent = static_cast<size_t>(options_.connections);
  const size_t churn = options_.churn_rate > 0 ? kMaxChurnConnections : 0;
  conns_.resize(persistent + churn);
  for (size_t i = 0; i < conns_.size(); ++i) {
    conns_[i].index = static_cast<uint32_t>(i);
    conns_[i].persistent = i < persistent;
  }
  for (size_t i = conns_.size(); i > persistent; --i) free_churn_.push_back(static_cast<uint32_t>(i - 1));
  auto per_second = [](double r) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / r));
  };
  if (options_.rate > 0) send_interval_ = per_second(options_.rate);
  if (options_.churn_rate > 0) churn_interval_ = per_second(options_.churn_rate);
  interval_ = std::chrono::milliseconds(options_.interval_ms);
}

handoff::Result<RunInfo> LoadGenerator::Impl::run() {
  if (auto st = epoll_.add(signals_.fd(), EPOLLIN, kSignalToken); !st) return st.error();
  now_ = Clock::now();
  next_sweep_ = now_ + kSweepInterval;
  for (auto& c : conns_)
    if (c.persistent) start_connect(c);
  std::vector<epoll_event> events(512);
  while (phase_ != Phase::Done) {
    connect_phase_check();  // connections=0, or every connect resolved synchronously
    if (phase_ == Phase::Done) break;
    auto n = epoll_.wait(events, wait_timeout_ms());
    if (!n) return n.error();
    now_ = Clock::now();
    for (int i = 0; i < n.value(); ++i) {
      const uint64_t token = events[i].data.u64;
      if (token == kSignalToken) {
        on_stop_signal();
        continue;
      }
      Conn& c = conns_[token & 0xffffffffu];
      if (c.generation == token >> 32 && c.state != State::Idle) on_event(c, events[i].events);
    }
    if (phase_ != Phase::Done) on_timers();
  }
  for (auto& c : conns_) close_conn(c);
  return info_;
}

// ---- connection life cycle -------------------------------------------------

void LoadGenerator::Impl::start_connect(Conn& c) {
  if (c.state == State::Idle) {
    c.connect_started = now_;
    if (c.persistent && c.connects++ > 0) ++stats_.totals.reconnect_attempts;
  }
  c.state = State::Connecting;
  UniqueFd fd(::socket(options_.target.domain(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) {
    const int err = errno;
    return fail(c, classify_connect_errno(err), handoff::sys_error("socket", err).message);
  }
  sockaddr_storage ss;
  const socklen_t len = options_.target.to_sockaddr(ss);
  int rc = ::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len);
  const int err = rc == 0 ? 0 : errno;
  if (err == EAGAIN && !options_.target.is_tcp()) {
    c.retry_at = now_ + kUnixBacklogRetry;  // the sweep retries, until the connect timeout
    return;
  }
  if (err != 0 && err != EINPROGRESS) return fail(c, classify_connect_errno(err), handoff::sys_error("connect", err).message);
  c.fd = std::move(fd);
  c.events = 0;
  if (err == 0) return on_connected(c);
  watch(c, EPOLLOUT);
}

void LoadGenerator::Impl::on_connected(Conn& c) {
  if (options_.target.is_tcp()) {
    if (auto st = set_nodelay(c.fd.get()); !st) return fail(c, Failure::Other, st.error().message);
  }
  c.state = State::Open;
  c.resolved = true;
  c.last_progress = now_;
  if (c.persistent && c.connects > 1) ++stats_.totals.reconnects;
  if (!watch(c, EPOLLIN)) return;
  if (!c.persistent) {
    c.stream.queue_message(options_.message_size, rng_, now_);
    flush(c);
    return;
  }
  if (phase_ == Phase::Run) fill_pipeline(c);
}

void LoadGenerator::Impl::on_event(Conn& c, uint32_t events) {
  if (c.state == State::Connecting) {
    const int err = pending_socket_error(c.fd.get());
    if (err != 0) return fail(c, classify_connect_errno(err), handoff::sys_error("connect", err).message);
    return on_connected(c);
  }
  if ((events & EPOLLOUT) && !flush(c)) return;
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_ready(c);
}

bool LoadGenerator::Impl::read_ready(Conn& c) {
  for (int i = 0; i < kReadsPerEvent; ++i) {
    ssize_t n = ::recv(c.fd.get(), read_buf_.data(), read_buf_.size(), 0);
    if (n > 0) {
      now_ = Clock::now();  // latency is measured at the read, not at the batch start
      if (!on_echo(c, std::string_view(read_buf_.data(), static_cast<size_t>(n)))) return false;
      continue;
    }
    if (n == 0) return on_eof(c);
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return true;
    fail(c, classify_io_errno(errno), handoff::errno_error("recv").message);
    return false;
  }
  return true;
}

bool LoadGenerator::Impl::on_echo(Conn& c, std::string_view data) {
  c.last_progress = now_;
  auto r = c.stream.verify(data, now_, [&](Clock::duration latency) {
    if (c.persistent) stats_.record_message(static_cast<uint64_t>(duration_cast<microseconds>(latency).count()));
  });
  if (c.persistent) stats_.totals.bytes_verified += r.bytes_verified;
  if (!r.ok) {
    fail(c, Failure::Mismatch, {},
         r.excess ? "received more bytes than were sent, at stream offset " + std::to_string(r.offset)
                  : "echo differs at stream offset " + std::to_string(r.offset) + ": sent " + hex_byte(r.expected) +
                        ", got " + hex_byte(r.got));
    return false;
  }
  if (!c.persistent) {
    if (!c.stream.idle()) return true;
    ++stats_.totals.churn_ok;
    stats_.churn_latency.record(static_cast<uint64_t>(duration_cast<microseconds>(now_ - c.connect_started).count()));
    close_conn(c);
    return false;
  }
  if (phase_ == Phase::Run) return fill_pipeline(c);
  if (phase_ == Phase::Drain && c.state == State::Open && c.stream.idle()) begin_close(c);
  return true;
}

bool LoadGenerator::Impl::on_eof(Conn& c) {
  if (c.state == State::Closing && c.stream.idle()) {
    close_conn(c);
    return false;
  }
  // The peer closed while echoes were owed, or while we were still using the connection.
  fail(c, Failure::EarlyEof, {},
       c.stream.idle() ? "peer closed the connection" : "peer closed with " + std::to_string(c.stream.messages_in_flight()) +
                                                          " message(s) not fully echoed");
  return false;
}

bool LoadGenerator::Impl::fill_pipeline(Conn& c) {
  const size_t depth = static_cast<size_t>(options_.pipeline);
  while (c.stream.messages_in_flight() < depth) {
    if (send_interval_.count() > 0 && now_ < c.next_send) {
      if (!c.rate_wakeup_queued) {
        c.rate_wakeup_queued = true;
        rate_wakeups_.emplace(c.next_send, c.index);
      }
      break;
    }
    if (c.stream.idle()) c.last_progress = now_;  // the stall clock starts with the first message in flight
    c.stream.queue_message(options_.message_size, rng_, now_);
    // Pace from the schedule, not from now, but never bank more than one message of credit.
    if (send_interval_.count() > 0) c.next_send = std::max(c.next_send, now_ - send_interval_) + send_interval_;
  }
  return flush(c);
}

bool LoadGenerator::Impl::flush(Conn& c) {
  for (;;) {
    auto pending = c.stream.unsent();
    if (pending.empty()) break;
    ssize_t n = ::send(c.fd.get(), pending.data(), pending.size(), MSG_NOSIGNAL);
    if (n > 0) {
      c.stream.mark_sent(static_cast<size_t>(n));
      c.last_progress = now_;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    fail(c, classify_io_errno(errno), handoff::errno_error("send").message);
    return false;
  }
  return watch(c, EPOLLIN | (c.stream.unsent().empty() ? 0u : uint32_t{EPOLLOUT}));
}

// A clean end: our half-close tells the server we are done; its EOF tells us
// it echoed everything and agrees.
void LoadGenerator::Impl::begin_close(Conn& c) {
  if (::shutdown(c.fd.get(), SHUT_WR) != 0) {
    fail(c, classify_io_errno(errno), handoff::errno_error("shutdown").message);
    return;
  }
  c.state = State::Closing;
}

void LoadGenerator::Impl::close_conn(Conn& c) {
  if (c.state == State::Idle) return;
  c.fd.reset();  // also removes it from the epoll set
  c.events = 0;
  c.state = State::Idle;
  c.stream.clear();
  ++c.generation;
  if (!c.persistent) free_churn_.push_back(c.index);
}

void LoadGenerator::Impl::fail(Conn& c, Failure why, const std::string& errno_detail, const std::string& what) {
  stats_.count_failure(why, errno_detail);
  if (!c.persistent) ++stats_.totals.churn_failed;
  if (logged_failures_ < kLoggedFailures) {
    std::string why_text = errno_detail.empty() ? what : errno_detail;
    std::fprintf(stderr, "baton-load: %s: %s%s%s\n", describe(c).c_str(), std::string(failure_name(why)).c_str(),
                 why_text.empty() ? "" : ": ", why_text.c_str());
    if (++logged_failures_ == kLoggedFailures) std::fprintf(stderr, "baton-load: further failures are only counted\n");
  }
  const bool was_open = c.state == State::Open || c.state == State::Closing;
  c.resolved = true;
  c.state = State::Connecting;  // so close_conn treats it as live, whatever it was
  close_conn(c);
  if (!c.persistent || phase_ == Phase::Drain || phase_ == Phase::Done) return;
  // A connection that worked is replaced at once; one that never connected waits,
  // or a refused target would be hammered in a tight loop.
  c.retry_at = was_open ? now_ : now_ + kReconnectBackoff;
  if (was_open) reconnect_now_.push_back(c.index);
}

// Returns false when the connection had to be given up.
bool LoadGenerator::Impl::watch(Conn& c, uint32_t events) {
  if (c.events == events) return true;
  auto st = c.events == 0 ? epoll_.add(c.fd.get(), events, token_of(c)) : epoll_.modify(c.fd.get(), events, token_of(c));
  if (!st) {
    fail(c, Failure::Other, st.error().message);
    return false;
  }
  c.events = events;
  return true;
}

std::string LoadGenerator::Impl::describe(const Conn& c) const {
  return (c.persistent ? "persistent connection " : "churn connection ") + std::to_string(c.index);
}

double LoadGenerator::Impl::seconds_since(Clock::time_point t) const {
  return std::chrono::duration<double>(now_ - t).count();
}

// ---- timers and phases -----------------------------------------------------

void LoadGenerator::Impl::on_timers() {
  for (uint32_t i : std::exchange(reconnect_now_, {})) {
    Conn& c = conns_[i];
    if (c.state == State::Idle && (phase_ == Phase::Run || phase_ == Phase::Connect)) start_connect(c);
  }
  if (now_ >= next_sweep_) {
    sweep();
    next_sweep_ = now_ + kSweepInterval;
  }
  switch (phase_) {
    case Phase::Connect: connect_phase_check(); break;
    case Phase::Run: run_phase_timers(); break;
    case Phase::Drain: drain_check(); break;
    case Phase::Done: break;
  }
}

// Connect timeouts, stalls, reconnects and unix backlog retries: all of them
// are "something should have happened by now" checks, done in one pass.
void LoadGenerator::Impl::sweep() {
  const auto timeout = milliseconds(options_.timeout_ms);
  for (auto& c : conns_) {
    switch (c.state) {
      case State::Idle:
        if (c.persistent && (phase_ == Phase::Run || phase_ == Phase::Connect) && now_ >= c.retry_at)
          start_connect(c);
        break;
      case State::Connecting:
        if (now_ - c.connect_started >= timeout)
          fail(c, Failure::Timeout, {}, "connect did not complete in " + std::to_string(options_.timeout_ms) + " ms");
        else if (!c.fd && now_ >= c.retry_at)
          start_connect(c);
        break;
      case State::Open:
      case State::Closing:
        if (!c.stream.idle() && now_ - c.last_progress >= timeout)
          fail(c, Failure::Stall, {},
               std::to_string(c.stream.messages_in_flight()) + " message(s) in flight, no progress for " +
                   std::to_string(options_.timeout_ms) + " ms");
        break;
    }
  }
}

void LoadGenerator::Impl::connect_phase_check() {
  if (phase_ != Phase::Connect) return;
  int connected = 0;
  for (const auto& c : conns_) {
    if (!c.persistent) continue;
    if (!c.resolved) return;
    connected += c.state == State::Open;
  }
  info_.connected_at_start = connected;
  if (options_.connections > 0 && connected == 0) {
    std::fprintf(stderr, "baton-load: none of the %d connections to %s could be established\n", options_.connections,
                 options_.target.to_string().c_str());
    phase_ = Phase::Done;
    return;
  }
  enter_run();
}

void LoadGenerator::Impl::enter_run() {
  phase_ = Phase::Run;
  started_ = last_tick_ = now_;
  info_.started_monotonic_us = duration_cast<microseconds>(now_.time_since_epoch()).count();
  next_tick_ = now_ + interval_;
  run_end_ = now_ + duration_cast<Clock::duration>(std::chrono::duration<double>(options_.duration_s));
  next_churn_ = now_;
  print_line("baton-load: started connections=" + std::to_string(info_.connected_at_start));
  for (auto& c : conns_)
    if (c.persistent && c.state == State::Open) fill_pipeline(c);
}

void LoadGenerator::Impl::run_phase_timers() {
  while (!rate_wakeups_.empty() && rate_wakeups_.top().first <= now_) {
    Conn& c = conns_[rate_wakeups_.top().second];
    rate_wakeups_.pop();
    c.rate_wakeup_queued = false;
    if (c.state == State::Open) fill_pipeline(c);
  }
  // Catch up after a slow iteration, but in bounded steps.
  for (int i = 0; i < 1000 && churn_interval_.count() > 0 && now_ >= next_churn_ && now_ < run_end_; ++i) {
    start_churn();
    next_churn_ += churn_interval_;
  }
  while (now_ >= next_tick_ && next_tick_ <= run_end_) {
    emit_interval(++ticks_, std::chrono::duration<double>(now_ - last_tick_).count());
    last_tick_ = now_;
    next_tick_ += interval_;
  }
  if (now_ >= run_end_) enter_drain();
}

void LoadGenerator::Impl::start_churn() {
  if (free_churn_.empty()) {
    ++stats_.totals.churn_skipped;
    return;
  }
  Conn& c = conns_[free_churn_.back()];
  free_churn_.pop_back();
  ++stats_.totals.churn_attempted;
  start_connect(c);
}

void LoadGenerator::Impl::emit_interval(int t, double seconds) {
  const auto& p = stats_.close_interval(t, seconds_since(started_), seconds);
  if (!options_.quiet) print_line(timeline_line(p));
}

void LoadGenerator::Impl::enter_drain() {
  if (phase_ == Phase::Run) info_.run_seconds = seconds_since(started_);
  phase_ = Phase::Drain;
  drain_started_ = now_;
  drain_deadline_ = now_ + milliseconds(options_.timeout_ms);
  for (auto& c : conns_) {
    if (!c.persistent) continue;
    // A reconnect in progress carries no messages: abandon it, it owes us nothing.
    if (c.state == State::Connecting || c.state == State::Idle) close_conn(c);
    else if (c.state == State::Open && c.stream.idle()) begin_close(c);
  }
  drain_check();
}

void LoadGenerator::Impl::drain_check() {
  const bool active = std::any_of(conns_.begin(), conns_.end(), [](const Conn& c) { return c.state != State::Idle; });
  if (!active) return finish_drain(false);
  if (now_ >= drain_deadline_) finish_drain(true);
}

void LoadGenerator::Impl::finish_drain(bool deadline_passed) {
  if (deadline_passed) {
    for (auto& c : conns_) {
      if (c.state == State::Idle) continue;
      if (c.state == State::Connecting) fail(c, Failure::Timeout, {}, "connect did not complete before the end");
      else if (!c.stream.idle()) fail(c, Failure::Stall, {}, "echo not complete before the end");
      else {
        ++stats_.totals.unclean_closes;  // the server kept the connection open after our half-close
        close_conn(c);
      }
    }
  }
  info_.drain_seconds = seconds_since(drain_started_);
  // The time since the last full interval, drain included, is one last (short) interval,
  // kept when it is not negligible or counted anything (the timeline sums to the totals).
  const bool ran = started_ != Clock::time_point{};
  const double tail = std::chrono::duration<double>(now_ - last_tick_).count();
  if (ran && (tail > 0.0005 || stats_.interval_has_counts())) emit_interval(++ticks_, tail);
  phase_ = Phase::Done;
}

void LoadGenerator::Impl::on_stop_signal() {
  if (signals_.drain() == 0) return;
  switch (phase_) {
    case Phase::Connect:
    case Phase::Run:
      info_.interrupted = true;
      enter_drain();
      break;
    case Phase::Drain:
      // Asked twice: stop now; what is still in flight is neither success nor failure.
      info_.aborted = true;
      info_.drain_seconds = seconds_since(drain_started_);
      phase_ = Phase::Done;
      break;
    case Phase::Done: break;
  }
}

int LoadGenerator::Impl::wait_timeout_ms() const {
  if (!reconnect_now_.empty()) return 0;
  Clock::time_point next = next_sweep_;
  if (phase_ == Phase::Run) {
    next = std::min({next, next_tick_, run_end_});
    if (churn_interval_.count() > 0) next = std::min(next, next_churn_);
    if (!rate_wakeups_.empty()) next = std::min(next, rate_wakeups_.top().first);
  } else if (phase_ == Phase::Drain) {
    next = std::min(next, drain_deadline_);
  }
  const auto left = duration_cast<microseconds>(next - Clock::now()).count();
  // Round up: a 0 ms wait for a deadline 300 us away would spin.
  return left <= 0 ? 0 : static_cast<int>((left + 999) / 1000);
}

// ---- public face -------------------------------------------------------------

handoff::Result<LoadGenerator> LoadGenerator::create(const LoadOptions& options) {
  auto signals = StopSignals::install();
  if (!signals) return signals.error();
  auto epoll = Epoll::create();
  if (!epoll) return epoll.error();
  return LoadGenerator(std::make_unique<Impl>(options, std::move(epoll).value(), std::move(signals).value()));
}

LoadGenerator::LoadGenerator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LoadGenerator::LoadGenerator(LoadGenerator&&) noexcept = default;
LoadGenerator::~LoadGenerator() = default;
handoff::Result<RunInfo> LoadGenerator::run() { return impl_->run(); }
const LoadStats& LoadGenerator::stats() const { return impl_->stats(); }

}  // namespace baton::load
