#pragma once
// UpgradeAttempt: the latest upgrade this generation started, as batonctl
// and status see it: who asked (trigger), when, the READY timeout it
// applies, the control sessions waiting for its outcome (`batonctl upgrade`
// hears "spawned", then "ready", "draining" and its reply, or an error), and
// the outcome of the last attempt for `status` (upgrade.last).

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "control_session.h"

namespace baton::daemon {

class UpgradeAttempt {
 public:
  explicit UpgradeAttempt(ControlSessions& sessions) : sessions_(sessions) {}

  // A new attempt starts: `timeout` is READY's (and SERVING's) bound.
  void begin(const std::string& trigger, std::chrono::milliseconds timeout);
  // The session waits for this attempt's outcome (it has gone: it is skipped).
  void wait(uint64_t session) { waiters_.push_back(session); }

  const std::string& trigger() const { return trigger_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  double ms_since_request() const;

  // The new process exists: the waiters learn its pid and the longest the
  // rest can take (READY, then SERVING, each within the timeout, then the probation).
  void spawned(pid_t pid, std::chrono::milliseconds probation);
  // Nothing could be started (the spawn itself failed at once).
  void not_started(const std::string& error);
  // A stop came and cancelled it before COMMIT.
  void abandoned();
  // It failed (rolled back) `ms` after the request: before COMMIT, or in
  // the probation (`committed`).
  void failed(pid_t pid, double ms, const std::string& reason, bool committed);
  // It passed the probation `ms` after the request: `generation` serves as
  // `pid`; this one drains `old_connections`.
  void succeeded(pid_t pid, double ms, unsigned generation, size_t old_connections);

  // The outcome of the last attempt that failed or passed (or could not
  // start); null before one did. An abandoned one (a stop) leaves it as it was.
  const nlohmann::json& last() const { return last_; }

 private:
  // Each waiter still connected gets `messages`, in order; the list empties.
  void tell_waiters(const std::vector<nlohmann::json>& messages);

  ControlSessions& sessions_;
  std::vector<uint64_t> waiters_;
  std::chrono::steady_clock::time_point requested_{};
  std::chrono::milliseconds timeout_{};
  std::string trigger_;
  nlohmann::json last_;
};

}  // namespace baton::daemon
