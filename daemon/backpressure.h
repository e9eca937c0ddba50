#pragma once
// When to stop reading a connection and when to start again: pure arithmetic
// over the bytes read but not yet written back, so it is tested without sockets.
// Reading stops at or above the high-water mark (a client that never reads cannot
// grow our memory) and resumes only below the low one (no flapping per write).

#include <cstddef>

namespace baton::daemon {

struct WaterMarks {
  size_t high = 256 * 1024;
  size_t low = 64 * 1024;
};

class Backpressure {
 public:
  explicit Backpressure(WaterMarks marks = {}) : marks_(marks) {}

  enum class Action { None, PauseReading, ResumeReading };

  Action queued(size_t bytes) {
    pending_ += bytes;
    if (!paused_ && pending_ >= marks_.high) {
      paused_ = true;
      return Action::PauseReading;
    }
    return Action::None;
  }

  Action written(size_t bytes) {
    pending_ -= bytes < pending_ ? bytes : pending_;
    if (paused_ && pending_ <= marks_.low) {
      paused_ = false;
      return Action::ResumeReading;
    }
    return Action::None;
  }

  size_t pending() const { return pending_; }
  bool paused() const { return paused_; }

 private:
  WaterMarks marks_;
  size_t pending_ = 0;
  bool paused_ = false;
};

}  // namespace baton::daemon
