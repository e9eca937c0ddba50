#pragma once
// Draining: the one path by which a generation lets its connections finish,
// whether it is stopping or has handed its listeners to a successor. The
// caller stops accepting first; Drain then waits for clients to close, at the
// deadline half-closes what is left (pending writes flushed, then FIN), and
// after a short grace closes whatever is still open.

#include <uv.h>

#include <chrono>
#include <functional>
#include <string>

#include "baton/handoff/uv_handle.h"
#include "connection_registry.h"

namespace baton::daemon {

class Drain {
 public:
  // How long a half-closed connection gets to finish reading our FIN.
  static constexpr std::chrono::milliseconds kCloseGrace{2000};

  Drain(uv_loop_t* loop, ConnectionRegistry& registry, DrainCounts& counts, std::function<void()> on_done);
  Drain(const Drain&) = delete;
  Drain& operator=(const Drain&) = delete;

  // Starts draining (once; later calls are ignored). on_done runs when the
  // last connection has gone, at once if there are none.
  void start(const std::string& cause, std::chrono::milliseconds deadline);
  // Closes every connection now (a second stop signal).
  void force(const std::string& cause);
  bool active() const { return phase_ != Phase::Idle; }
  bool done() const { return phase_ == Phase::Done; }
  const std::string& cause() const { return cause_; }
  // Connections open when draining began.
  size_t started_with() const { return started_with_; }
  void stop_timers();
  // Back to serving (the successor died): no deadline, nothing more to wait for.
  void cancel();
  // A connection joined after the drain was done (adopted from the previous
  // generation, to be passed on): it is waited for too, with a deadline from
  // now; on_done runs again when it has gone.
  void reopen(std::chrono::milliseconds deadline);

 private:
  enum class Phase { Idle, Draining, Done };
  static void on_deadline(uv_timer_t* t);
  static void on_grace_over(uv_timer_t* t);
  void arm_deadline(std::chrono::milliseconds deadline);
  void check_done();

  uv_loop_t* loop_;
  ConnectionRegistry& registry_;
  DrainCounts& counts_;
  DrainCounts at_start_;  // counts_ when the drain started
  std::function<void()> on_done_;
  handoff::UvHandle<uv_timer_t> deadline_;
  handoff::UvHandle<uv_timer_t> grace_;
  std::string cause_;
  size_t started_with_ = 0;
  Phase phase_ = Phase::Idle;
};

}  // namespace baton::daemon
