// RateLimiter: one line per interval, standing for every event since the last.

#include "rate_limited_log.h"

#include <chrono>

#include <gtest/gtest.h>

namespace baton::daemon {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const Clock::time_point t0 = Clock::time_point{} + 1000s;

TEST(RateLimiter, FirstEventIsLogged) {
  RateLimiter rl(1s);
  auto n = rl.allow(t0);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, 1u);
}

TEST(RateLimiter, FirstEventIsLoggedEvenAtTheClockEpoch) {
  RateLimiter rl(1s);
  auto n = rl.allow(Clock::time_point{});
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, 1u);
}

TEST(RateLimiter, SuppressedWithinTheInterval) {
  RateLimiter rl(1s);
  ASSERT_TRUE(rl.allow(t0).has_value());
  EXPECT_FALSE(rl.allow(t0).has_value());
  EXPECT_FALSE(rl.allow(t0 + 1ms).has_value());
  EXPECT_FALSE(rl.allow(t0 + 999ms).has_value());
}

TEST(RateLimiter, NextLineCountsTheSuppressed) {
  RateLimiter rl(1s);
  ASSERT_EQ(rl.allow(t0), 1u);
  for (int i = 0; i < 4; ++i) ASSERT_FALSE(rl.allow(t0 + std::chrono::milliseconds(100 * (i + 1))).has_value());
  auto n = rl.allow(t0 + 1s);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, 5u) << "4 suppressed + this one";
  // The count starts over, and so does the interval (from the last line, t0 + 1 s).
  EXPECT_FALSE(rl.allow(t0 + 1500ms).has_value());
  auto again = rl.allow(t0 + 2s);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(*again, 2u);
  // Nothing suppressed since: a lone event much later counts 1.
  EXPECT_EQ(rl.allow(t0 + 60s), 1u);
}

TEST(RateLimiter, IntervalIsConfigurable) {
  RateLimiter rl(10ms);
  ASSERT_EQ(rl.allow(t0), 1u);
  EXPECT_FALSE(rl.allow(t0 + 9ms).has_value());
  EXPECT_EQ(rl.allow(t0 + 10ms), 2u);
}

}  // namespace
}  // namespace baton::daemon
