#pragma once
// Durations as the logs and the status show them: milliseconds, fractional.

#include <chrono>

namespace baton::daemon {

inline double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace baton::daemon
