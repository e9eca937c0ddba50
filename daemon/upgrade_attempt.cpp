#include "upgrade_attempt.h"

#include <unistd.h>

#include "elapsed.h"

namespace baton::daemon {

void UpgradeAttempt::begin(const std::string& trigger, std::chrono::milliseconds timeout) {
  requested_ = std::chrono::steady_clock::now();
  trigger_ = trigger;
  timeout_ = timeout;
}

double UpgradeAttempt::ms_since_request() const { return ms_since(requested_); }

void UpgradeAttempt::spawned(pid_t pid, std::chrono::milliseconds probation) {
  auto spawned = control::event("spawned");
  spawned["pid"] = pid;
  spawned["timeout_ms"] = 2 * timeout_.count() + probation.count();
  for (uint64_t id : waiters_)
    if (auto* s = sessions_.find(id)) s->send(spawned);
}

void UpgradeAttempt::not_started(const std::string& error) {
  last_ = {{"ok", false}, {"trigger", trigger_}, {"error", error}};
}

void UpgradeAttempt::abandoned() { tell_waiters({control::error_reply("abandoned: batond is stopping")}); }

void UpgradeAttempt::failed(pid_t pid, double ms, const std::string& reason, bool committed) {
  last_ = {{"ok", false}, {"trigger", trigger_}, {"pid", pid}, {"ms", ms}, {"error", reason}, {"committed", committed}};
  tell_waiters({control::error_reply("rolled back: " + reason)});
}

void UpgradeAttempt::succeeded(pid_t pid, double ms, unsigned generation, size_t old_connections) {
  last_ = {{"ok", true}, {"trigger", trigger_}, {"pid", pid}, {"ms", ms}};
  auto ready = control::event("ready");
  ready["pid"] = pid;
  ready["generation"] = generation;
  ready["ms"] = ms;
  auto draining = control::event("draining");
  draining["pid"] = ::getpid();
  draining["connections"] = old_connections;
  auto done = control::ok_reply();
  done["pid"] = pid;
  done["generation"] = generation;
  done["ready_ms"] = ms;
  done["old_pid"] = ::getpid();
  done["old_connections"] = old_connections;
  tell_waiters({ready, draining, done});
}

void UpgradeAttempt::tell_waiters(const std::vector<nlohmann::json>& messages) {
  // Taken first: a send may fail and close its session, which changes nothing here.
  const auto waiters = std::exchange(waiters_, {});
  for (uint64_t id : waiters)
    if (auto* s = sessions_.find(id))
      for (const auto& m : messages) s->send(m);
}

}  // namespace baton::daemon
