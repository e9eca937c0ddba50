#pragma once
// What the files that implement Daemon share (daemon.cpp: life cycle and
// echo; daemon_upgrade.cpp: the upgrade; daemon_control.cpp: control and
// reload). Not for use outside them.

#include <chrono>
#include <cstdint>

namespace baton::daemon {

// How long a connection being handed over may take to write back what it owes.
inline constexpr std::chrono::milliseconds kHandoverFlushBound{1000};

// How often a draining generation tells its successor how far it has got.
inline constexpr uint64_t kDrainReportIntervalMs = 200;

inline double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace baton::daemon
