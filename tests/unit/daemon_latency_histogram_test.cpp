// LatencyHistogram: quantiles within a bucket's width (12.5%), never above the max.

#include <gtest/gtest.h>

#include "latency_histogram.h"

namespace baton::daemon {
namespace {

TEST(LatencyHistogram, EmptyIsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.quantile_ns(0.99), 0u);
}

TEST(LatencyHistogram, QuantilesAreWithinOneBucketOfTheTruth) {
  LatencyHistogram h;
  for (uint64_t us = 1; us <= 1000; ++us) h.record(us * 1000);  // 1 µs .. 1 ms, evenly
  EXPECT_EQ(h.count(), 1000u);
  EXPECT_EQ(h.max_ns(), 1'000'000u);
  for (double q : {0.5, 0.9, 0.99}) {
    const double truth = q * 1'000'000, got = static_cast<double>(h.quantile_ns(q));
    EXPECT_GE(got, truth) << q;
    EXPECT_LE(got, truth * 1.125 + 1000) << q;
  }
  EXPECT_EQ(h.quantile_ns(1.0), h.max_ns());
}

TEST(LatencyHistogram, ARareLongStallIsTheMaxButNotTheP99) {
  LatencyHistogram h;
  for (int i = 0; i < 999; ++i) h.record(50'000);  // 50 µs
  h.record(25'000'000);                            // one 25 ms stall
  EXPECT_EQ(h.max_ns(), 25'000'000u);
  EXPECT_LE(h.quantile_ns(0.99), 57'000u);
  EXPECT_EQ(h.quantile_ns(1.0), 25'000'000u);
}

TEST(LatencyHistogram, HoursFitInTheLastBucket) {
  LatencyHistogram h;
  h.record(uint64_t{3600} * 1'000'000'000);
  EXPECT_EQ(h.quantile_ns(0.5), h.max_ns());
}

}  // namespace
}  // namespace baton::daemon
