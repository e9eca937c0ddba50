#include "rate_limited_log.h"

namespace baton::daemon {

std::optional<uint64_t> RateLimiter::allow(std::chrono::steady_clock::time_point now) {
  if (logged_once_ && now - last_ < interval_) {
    ++suppressed_;
    return std::nullopt;
  }
  logged_once_ = true;
  last_ = now;
  uint64_t count = suppressed_ + 1;
  suppressed_ = 0;
  return count;
}

}  // namespace baton::daemon
