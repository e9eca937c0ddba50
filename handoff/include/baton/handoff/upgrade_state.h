#pragma once
// The upgrade, as seen by the process that hands over. One enum, one place
// that changes it (UpgradeStateMachine::transition), one log line per change.
//
//   Idle -> Spawning -> AwaitingReady -> Probation -> HandedOver --(successor died)--> Idle
//              |             |              |  |
//              |             |              |  +--(successor died in probation)--> Idle
//              +-------------+--------------+--> RollingBack -> Idle

#include <chrono>
#include <string>

namespace baton::handoff {

enum class UpgradeState {
  Idle,           // serving; an upgrade may start
  Spawning,       // new binary started, waiting for its HELLO
  AwaitingReady,  // listeners sent, waiting for READY
  Probation,      // COMMIT sent: the new generation accepts; this one keeps idle listeners to resume on
  HandedOver,     // the new generation serves and passed probation; this one only drains
  RollingBack,    // the attempt failed; waiting to reap the new process
};

const char* to_string(UpgradeState state);

class UpgradeStateMachine {
 public:
  UpgradeState state() const { return state_; }
  // Time spent in the current attempt (since leaving Idle).
  std::chrono::microseconds since_start() const;
  // Changes state and logs "upgrade: A -> B (why)"; illegal moves are refused
  // (returns false and logs an error), so a bug cannot skip a step silently.
  bool transition(UpgradeState to, const std::string& why);

 private:
  UpgradeState state_ = UpgradeState::Idle;
  std::chrono::steady_clock::time_point started_{};
};

}  // namespace baton::handoff
