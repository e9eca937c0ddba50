#include "latency_histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace baton::stats {
namespace {

constexpr size_t kSubBits = 6;  // 64 buckets per power of two
constexpr uint64_t kExactBelow = uint64_t{2} << kSubBits;  // 128

}  // namespace

size_t LatencyHistogram::bucket_of(uint64_t v) {
  if (v < kExactBelow) return static_cast<size_t>(v);
  const unsigned shift = static_cast<unsigned>(std::bit_width(v)) - 1 - kSubBits;
  return (static_cast<size_t>(shift) << kSubBits) + static_cast<size_t>(v >> shift);
}

uint64_t LatencyHistogram::bucket_upper(size_t b) {
  if (b < kExactBelow) return b;
  const size_t shift = (b >> kSubBits) - 1;
  const uint64_t mantissa = (b & ((size_t{1} << kSubBits) - 1)) | (uint64_t{1} << kSubBits);
  return ((mantissa + 1) << shift) - 1;
}

void LatencyHistogram::record(uint64_t us) {
  const size_t b = bucket_of(us);
  if (b >= buckets_.size()) buckets_.resize(b + 1);
  ++buckets_[b];
  ++count_;
  if (us > max_) max_ = us;
}

uint64_t LatencyHistogram::percentile(double q) const {
  if (count_ == 0) return 0;
  const auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  uint64_t seen = 0;
  for (size_t b = 0; b < buckets_.size(); ++b) {
    seen += buckets_[b];
    if (seen >= rank && seen > 0) return std::min(bucket_upper(b), max_);
  }
  return max_;
}

}  // namespace baton::stats
