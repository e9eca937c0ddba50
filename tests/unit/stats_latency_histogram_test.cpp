// stats::LatencyHistogram (baton-load's round trips, batond's loop lag):
// percentiles within a bucket's width (1.6%), never above the max.

#include <gtest/gtest.h>

#include "latency_histogram.h"

namespace baton::stats {
namespace {

TEST(LatencyHistogram, EmptyIsZero) {
  LatencyHistogram h;
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.percentile(0.99), 0u);
}

TEST(LatencyHistogram, ExactBelow128) {
  LatencyHistogram h;
  for (uint64_t us = 1; us <= 100; ++us) h.record(us);
  EXPECT_EQ(h.percentile(0.5), 50u);
  EXPECT_EQ(h.percentile(0.99), 99u);
  EXPECT_EQ(h.percentile(1.0), 100u);
}

TEST(LatencyHistogram, PercentilesAreWithinOneBucketOfTheTruth) {
  LatencyHistogram h;
  for (uint64_t us = 1; us <= 100'000; ++us) h.record(us);  // 1 µs .. 100 ms, evenly
  EXPECT_EQ(h.count(), 100'000u);
  EXPECT_EQ(h.max(), 100'000u);
  for (double q : {0.5, 0.9, 0.99}) {
    const double truth = q * 100'000, got = static_cast<double>(h.percentile(q));
    EXPECT_GE(got, truth) << q;
    EXPECT_LE(got, truth * 1.016 + 1) << q;
  }
}

TEST(LatencyHistogram, ARareLongStallIsTheMaxButNotTheP99) {
  LatencyHistogram h;
  for (int i = 0; i < 999; ++i) h.record(50);
  h.record(25'000);  // one 25 ms stall among 50 µs turns
  EXPECT_EQ(h.max(), 25'000u);
  EXPECT_EQ(h.percentile(0.99), 50u);
  EXPECT_EQ(h.percentile(1.0), 25'000u);
}

}  // namespace
}  // namespace baton::stats
