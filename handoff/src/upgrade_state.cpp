#include "baton/handoff/upgrade_state.h"

#include <spdlog/spdlog.h>

namespace baton::handoff {
namespace {

bool allowed(UpgradeState from, UpgradeState to) {
  using S = UpgradeState;
  switch (from) {
    case S::Idle: return to == S::Spawning;
    case S::Spawning: return to == S::AwaitingReady || to == S::RollingBack;
    case S::AwaitingReady: return to == S::Probation || to == S::RollingBack;
    // Idle: the successor died during probation, this generation serves again.
    case S::Probation: return to == S::HandedOver || to == S::RollingBack || to == S::Idle;
    case S::RollingBack: return to == S::Idle;
    case S::HandedOver: return to == S::Idle;  // only when the successor died and we serve again
  }
  return false;
}

}  // namespace

const char* to_string(UpgradeState state) {
  switch (state) {
    case UpgradeState::Idle: return "idle";
    case UpgradeState::Spawning: return "spawning";
    case UpgradeState::AwaitingReady: return "awaiting-ready";
    case UpgradeState::Probation: return "probation";
    case UpgradeState::HandedOver: return "handed-over";
    case UpgradeState::RollingBack: return "rolling-back";
  }
  return "unknown";
}

std::chrono::microseconds UpgradeStateMachine::since_start() const {
  if (state_ == UpgradeState::Idle) return std::chrono::microseconds(0);
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started_);
}

bool UpgradeStateMachine::transition(UpgradeState to, const std::string& why) {
  if (!allowed(state_, to)) {
    spdlog::error("upgrade: refused transition {} -> {} ({})", to_string(state_), to_string(to), why);
    return false;
  }
  if (state_ == UpgradeState::Idle) started_ = std::chrono::steady_clock::now();
  spdlog::info("upgrade: {} -> {} after {:.1f} ms ({})", to_string(state_), to_string(to),
               since_start().count() / 1000.0, why);
  state_ = to;
  return true;
}

}  // namespace baton::handoff
