#pragma once
// LatencyHistogram: microsecond values in log-linear buckets, exact below
// 128, then 64 buckets per power of two (under 1.6% error), in memory that
// grows only with the largest value: cheap enough to record every echo of a
// load run, or every turn of an event loop for a process's life. Shared by
// baton-load (round trips) and batond (its loop's lag).

#include <cstddef>
#include <cstdint>
#include <vector>

namespace baton::stats {

class LatencyHistogram {
 public:
  void record(uint64_t us);
  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  // The smallest bucket bound with at least q (0..1] of the values at or
  // below it, never above max(); 0 when empty.
  uint64_t percentile(double q) const;
  void clear() { *this = LatencyHistogram(); }

 private:
  static size_t bucket_of(uint64_t v);
  static uint64_t bucket_upper(size_t b);
  std::vector<uint64_t> buckets_;
  uint64_t count_ = 0;
  uint64_t max_ = 0;
};

}  // namespace baton::stats
