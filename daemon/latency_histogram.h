#pragma once
// LatencyHistogram: durations counted in log-linear buckets (8 per power of
// two, so a quantile is within 12.5% of the truth) from 1 µs to hours, in a
// fixed 2.5 KiB: cheap enough to record every loop iteration for the life of
// a process.

#include <array>
#include <cstdint>

namespace baton::daemon {

class LatencyHistogram {
 public:
  void record(uint64_t ns);
  uint64_t count() const { return count_; }
  uint64_t max_ns() const { return max_ns_; }
  // The upper bound of the bucket holding the q-quantile (q in [0, 1]),
  // never above max_ns(); 0 when empty.
  uint64_t quantile_ns(double q) const;

 private:
  static constexpr int kSub = 8;      // buckets per power of two
  static constexpr int kLinear = 16;  // below 16 µs, one bucket per µs
  static constexpr int kBuckets = kLinear + (40 - 4) * kSub;
  static int bucket(uint64_t us);
  static uint64_t upper_us(int bucket);

  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  uint64_t max_ns_ = 0;
};

}  // namespace baton::daemon
