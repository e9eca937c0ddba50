#include "loop_lag.h"

namespace baton::daemon {

int LoopLag::start(uv_loop_t* loop) {
  if (int rc = timer_.init(uv_timer_init, loop, this); rc != 0) return rc;
  // The probe alone must not keep the loop alive once everything else is done.
  uv_unref(timer_.handle());
  due_ns_ = uv_hrtime() + kIntervalMs * 1000000;
  return uv_timer_start(timer_.get(), &LoopLag::on_timer, kIntervalMs, kIntervalMs);
}

void LoopLag::on_timer(uv_timer_t* t) {
  auto* self = static_cast<LoopLag*>(t->data);
  const uint64_t now = uv_hrtime();
  self->last_ns_ = now > self->due_ns_ ? now - self->due_ns_ : 0;
  if (self->last_ns_ > self->max_ns_) self->max_ns_ = self->last_ns_;
  // libuv re-arms a repeating timer from the loop's cached time when it ran,
  // so the next due time counts from now.
  self->due_ns_ = now + kIntervalMs * 1000000;
}

}  // namespace baton::daemon
