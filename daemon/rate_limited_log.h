#pragma once
// A log line that may fire thousands of times a second (accept failures,
// connections refused at the limit) is printed at most once per interval,
// with the number of occurrences it stands for.

#include <chrono>
#include <cstdint>
#include <optional>

namespace baton::daemon {

class RateLimiter {
 public:
  explicit RateLimiter(std::chrono::milliseconds interval = std::chrono::seconds(1)) : interval_(interval) {}

  // nullopt: stay quiet. Otherwise log now; the value is how many events this
  // line stands for (this one plus those suppressed since the last line).
  std::optional<uint64_t> allow(std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());

 private:
  std::chrono::milliseconds interval_;
  std::chrono::steady_clock::time_point last_{};
  bool logged_once_ = false;
  uint64_t suppressed_ = 0;
};

}  // namespace baton::daemon
