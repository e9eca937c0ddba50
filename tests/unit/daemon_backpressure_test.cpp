// Backpressure: pure arithmetic over bytes read but not yet written back.

#include "backpressure.h"

#include <gtest/gtest.h>

namespace baton::daemon {
namespace {

using A = Backpressure::Action;

TEST(Backpressure, DefaultMarks) {
  WaterMarks m;
  EXPECT_EQ(m.high, 256u * 1024);
  EXPECT_EQ(m.low, 64u * 1024);
  Backpressure bp;
  EXPECT_EQ(bp.queued(256 * 1024 - 1), A::None);
  EXPECT_EQ(bp.queued(2), A::PauseReading);
}

TEST(Backpressure, PausesOnceAboveHigh) {
  Backpressure bp({.high = 100, .low = 40});
  EXPECT_EQ(bp.queued(50), A::None);
  EXPECT_FALSE(bp.paused());
  EXPECT_EQ(bp.queued(49), A::None);
  EXPECT_EQ(bp.pending(), 99u);
  EXPECT_FALSE(bp.paused());
  EXPECT_EQ(bp.queued(11), A::PauseReading);
  EXPECT_TRUE(bp.paused());
  EXPECT_EQ(bp.pending(), 110u);
  // Already paused: more data does not ask again.
  EXPECT_EQ(bp.queued(10), A::None);
  EXPECT_TRUE(bp.paused());
}

TEST(Backpressure, NoFlappingBetweenTheMarks) {
  Backpressure bp({.high = 100, .low = 40});
  ASSERT_EQ(bp.queued(150), A::PauseReading);
  // Writes that leave pending above low do not resume, whatever their size.
  EXPECT_EQ(bp.written(60), A::None);  // 90
  EXPECT_EQ(bp.written(49), A::None);  // 41
  EXPECT_EQ(bp.pending(), 41u);
  EXPECT_TRUE(bp.paused());
  // Data read meanwhile (already in flight) does not pause again.
  EXPECT_EQ(bp.queued(30), A::None);  // 71
  EXPECT_TRUE(bp.paused());
  EXPECT_EQ(bp.written(20), A::None);  // 51
  EXPECT_TRUE(bp.paused());

  // Once resumed, data between the marks does not pause.
  ASSERT_EQ(bp.written(11), A::ResumeReading);  // 40
  EXPECT_EQ(bp.queued(59), A::None);            // 99
  EXPECT_EQ(bp.written(30), A::None);           // 69
  EXPECT_EQ(bp.queued(30), A::None);            // 99
  EXPECT_FALSE(bp.paused());
}

TEST(Backpressure, ResumesAtLow) {
  Backpressure bp({.high = 100, .low = 40});
  ASSERT_EQ(bp.queued(100), A::PauseReading);
  EXPECT_EQ(bp.written(59), A::None);  // 41
  EXPECT_EQ(bp.written(1), A::ResumeReading);  // exactly low
  EXPECT_EQ(bp.pending(), 40u);
  EXPECT_FALSE(bp.paused());
  // Further writes while reading do not resume again.
  EXPECT_EQ(bp.written(10), A::None);
}

TEST(Backpressure, ResumesBelowLow) {
  Backpressure bp({.high = 100, .low = 40});
  ASSERT_EQ(bp.queued(120), A::PauseReading);
  EXPECT_EQ(bp.written(115), A::ResumeReading);  // 5, well below low
  EXPECT_EQ(bp.pending(), 5u);
  EXPECT_FALSE(bp.paused());
  // And a new burst pauses again.
  EXPECT_EQ(bp.queued(200), A::PauseReading);
}

TEST(Backpressure, PendingNeverGoesNegative) {
  Backpressure bp({.high = 100, .low = 40});
  EXPECT_EQ(bp.written(10), A::None);
  EXPECT_EQ(bp.pending(), 0u);
  ASSERT_EQ(bp.queued(30), A::None);
  EXPECT_EQ(bp.written(1000), A::None);
  EXPECT_EQ(bp.pending(), 0u);
  ASSERT_EQ(bp.queued(500), A::PauseReading);
  EXPECT_EQ(bp.written(501), A::ResumeReading);
  EXPECT_EQ(bp.pending(), 0u);
  EXPECT_EQ(bp.queued(1), A::None);
  EXPECT_EQ(bp.pending(), 1u) << "an underflow would show up here as a huge pending count";
}

}  // namespace
}  // namespace baton::daemon
