#include "latency_histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace baton::daemon {

int LatencyHistogram::bucket(uint64_t us) {
  if (us < kLinear) return static_cast<int>(us);
  const int exp = std::bit_width(us) - 1;  // >= 4
  const int sub = static_cast<int>((us >> (exp - 3)) & (kSub - 1));
  return std::min(kBuckets - 1, kLinear + (exp - 4) * kSub + sub);
}

uint64_t LatencyHistogram::upper_us(int b) {
  if (b < kLinear) return static_cast<uint64_t>(b) + 1;
  const int exp = (b - kLinear) / kSub + 4, sub = (b - kLinear) % kSub;
  return static_cast<uint64_t>(kSub + sub + 1) << (exp - 3);
}

void LatencyHistogram::record(uint64_t ns) {
  ++counts_[bucket(ns / 1000)];
  ++count_;
  max_ns_ = std::max(max_ns_, ns);
}

uint64_t LatencyHistogram::quantile_ns(double q) const {
  if (count_ == 0) return 0;
  // Nearest rank: the smallest value with at least q of the samples at or below it.
  const auto rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(std::clamp(q, 0.0, 1.0) * count_)));
  uint64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += counts_[b];
    if (seen >= rank) return std::min(max_ns_, upper_us(b) * 1000);
  }
  return max_ns_;
}

}  // namespace baton::daemon
