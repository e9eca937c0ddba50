#include "drain.h"

#include <spdlog/spdlog.h>

#include "echo_connection.h"

namespace baton::daemon {

Drain::Drain(uv_loop_t* loop, ConnectionRegistry& registry, DrainCounts& counts, std::function<void()> on_done)
    : loop_(loop), registry_(registry), counts_(counts), on_done_(std::move(on_done)) {}

void Drain::start(const std::string& cause, std::chrono::milliseconds deadline) {
  if (active()) return;
  phase_ = Phase::Draining;
  cause_ = cause;
  started_with_ = registry_.size();
  at_start_ = counts_;  // the counts run for the whole life (metrics); the drain reports its own part
  spdlog::info("drain: started ({}); {} connection(s) open; deadline {} ms", cause, started_with_, deadline.count());
  registry_.on_empty([this] { check_done(); });
  if (registry_.empty()) {
    check_done();
    return;
  }
  arm_deadline(deadline);
}

void Drain::arm_deadline(std::chrono::milliseconds deadline) {
  deadline_.init(uv_timer_init, loop_, this);
  uv_timer_start(deadline_.get(), &Drain::on_deadline, static_cast<uint64_t>(deadline.count()), 0);
}

void Drain::reopen(std::chrono::milliseconds deadline) {
  if (phase_ != Phase::Done || registry_.empty()) return;
  phase_ = Phase::Draining;
  spdlog::info("drain: reopened ({}); {} connection(s) joined; deadline {} ms", cause_, registry_.size(),
               deadline.count());
  arm_deadline(deadline);
}

void Drain::on_deadline(uv_timer_t* t) {
  auto* self = static_cast<Drain*>(t->data);
  spdlog::info("drain: deadline reached; half-closing {} connection(s) (pending writes flushed, then FIN)",
               self->registry_.size());
  self->registry_.for_each([](EchoConnection& c) { c.finish(); });
  if (self->registry_.empty()) return;
  self->grace_.init(uv_timer_init, self->loop_, self);
  uv_timer_start(self->grace_.get(), &Drain::on_grace_over, static_cast<uint64_t>(kCloseGrace.count()), 0);
}

void Drain::on_grace_over(uv_timer_t* t) {
  auto* self = static_cast<Drain*>(t->data);
  spdlog::info("drain: grace over; closing {} connection(s) that did not close after our FIN", self->registry_.size());
  self->registry_.for_each([](EchoConnection& c) { c.close_now(EchoConnection::EndReason::Forced); });
}

void Drain::force(const std::string& cause) {
  spdlog::info("drain: {}; closing {} connection(s) now", cause, registry_.size());
  if (!active()) start(cause, std::chrono::milliseconds(0));
  registry_.for_each([](EchoConnection& c) { c.close_now(EchoConnection::EndReason::Forced); });
}

void Drain::check_done() {
  if (phase_ != Phase::Draining || !registry_.empty()) return;
  phase_ = Phase::Done;
  stop_timers();
  spdlog::info(
      "drain: done ({}): {} closed by their clients, {} half-closed at the deadline, {} closed forcibly, {} handed over",
      cause_, counts_.closed_by_client - at_start_.closed_by_client,
      counts_.closed_at_deadline - at_start_.closed_at_deadline, counts_.closed_forcibly - at_start_.closed_forcibly,
      counts_.handed_over - at_start_.handed_over);
  on_done_();
}

void Drain::cancel() {
  stop_timers();
  registry_.on_empty({});
  phase_ = Phase::Idle;
  cause_.clear();
}

void Drain::stop_timers() {
  deadline_.close();
  grace_.close();
}

}  // namespace baton::daemon
