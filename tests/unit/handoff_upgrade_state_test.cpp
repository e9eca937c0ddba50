// UpgradeStateMachine: every legal move succeeds, every other one is refused
// and leaves the state as it was.

#include "baton/handoff/upgrade_state.h"

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace baton::handoff {
namespace {

using S = UpgradeState;
using namespace std::chrono_literals;

const std::vector<S> kAll{S::Idle, S::Spawning, S::AwaitingReady, S::Probation, S::HandedOver, S::RollingBack};

// A machine brought to `target` through legal moves only.
UpgradeStateMachine machine_in(S target) {
  UpgradeStateMachine m;
  auto go = [&](S to) {
    if (!m.transition(to, "test setup")) throw std::runtime_error("setup transition refused");
  };
  switch (target) {
    case S::Idle: break;
    case S::Spawning: go(S::Spawning); break;
    case S::AwaitingReady: go(S::Spawning); go(S::AwaitingReady); break;
    case S::Probation: go(S::Spawning); go(S::AwaitingReady); go(S::Probation); break;
    case S::HandedOver: go(S::Spawning); go(S::AwaitingReady); go(S::Probation); go(S::HandedOver); break;
    case S::RollingBack: go(S::Spawning); go(S::RollingBack); break;
  }
  return m;
}

bool legal(S from, S to) {
  return (from == S::Idle && to == S::Spawning) ||
         (from == S::Spawning && (to == S::AwaitingReady || to == S::RollingBack)) ||
         (from == S::AwaitingReady && (to == S::Probation || to == S::RollingBack)) ||
         // Past COMMIT: probation passed, or failed (killed: rolling back; died: serving again).
         (from == S::Probation && (to == S::HandedOver || to == S::RollingBack || to == S::Idle)) ||
         (from == S::RollingBack && to == S::Idle) ||
         (from == S::HandedOver && to == S::Idle);  // the successor died: serving again
}

TEST(UpgradeState, StartsIdle) {
  UpgradeStateMachine m;
  EXPECT_EQ(m.state(), S::Idle);
  EXPECT_EQ(m.since_start().count(), 0);
}

TEST(UpgradeState, HappyPath) {
  UpgradeStateMachine m;
  ASSERT_TRUE(m.transition(S::Spawning, "SIGUSR2"));
  EXPECT_EQ(m.state(), S::Spawning);
  ASSERT_TRUE(m.transition(S::AwaitingReady, "HELLO"));
  EXPECT_EQ(m.state(), S::AwaitingReady);
  ASSERT_TRUE(m.transition(S::Probation, "READY"));
  EXPECT_EQ(m.state(), S::Probation);
  ASSERT_TRUE(m.transition(S::HandedOver, "SERVING, probation over"));
  EXPECT_EQ(m.state(), S::HandedOver);
}

TEST(UpgradeState, RollbackFromSpawningAndFromAwaitingReady) {
  UpgradeStateMachine m;
  ASSERT_TRUE(m.transition(S::Spawning, "a"));
  ASSERT_TRUE(m.transition(S::RollingBack, "child exited"));
  ASSERT_TRUE(m.transition(S::Idle, "reaped"));
  EXPECT_EQ(m.state(), S::Idle);
  ASSERT_TRUE(m.transition(S::Spawning, "b"));
  ASSERT_TRUE(m.transition(S::AwaitingReady, "HELLO"));
  ASSERT_TRUE(m.transition(S::RollingBack, "timeout"));
  ASSERT_TRUE(m.transition(S::Idle, "reaped"));
  EXPECT_EQ(m.state(), S::Idle);
  // And a new attempt may start.
  EXPECT_TRUE(m.transition(S::Spawning, "c"));
}

TEST(UpgradeState, IdleCannotSkipToHandedOver) {
  UpgradeStateMachine m;
  EXPECT_FALSE(m.transition(S::HandedOver, "bug"));
  EXPECT_EQ(m.state(), S::Idle);
  EXPECT_EQ(m.since_start().count(), 0) << "a refused move does not start an attempt";
}

TEST(UpgradeState, HandedOverLeadsOnlyBackToIdle) {
  for (S to : kAll) {
    SCOPED_TRACE(to_string(to));
    auto m = machine_in(S::HandedOver);
    const bool ok = m.transition(to, "successor died?");
    EXPECT_EQ(ok, to == S::Idle);
    EXPECT_EQ(m.state(), ok ? S::Idle : S::HandedOver);
  }
}

TEST(UpgradeState, EveryPairMatchesTheDiagram) {
  for (S from : kAll) {
    for (S to : kAll) {
      SCOPED_TRACE(std::string(to_string(from)) + " -> " + to_string(to));
      auto m = machine_in(from);
      ASSERT_EQ(m.state(), from);
      bool ok = m.transition(to, "matrix");
      EXPECT_EQ(ok, legal(from, to));
      EXPECT_EQ(m.state(), ok ? to : from);
    }
  }
}

TEST(UpgradeState, SinceStartCountsFromLeavingIdle) {
  UpgradeStateMachine m;
  ASSERT_TRUE(m.transition(S::Spawning, "go"));
  std::this_thread::sleep_for(5ms);
  EXPECT_GE(m.since_start(), 5ms);
  ASSERT_TRUE(m.transition(S::RollingBack, "fail"));
  ASSERT_TRUE(m.transition(S::Idle, "done"));
  EXPECT_EQ(m.since_start().count(), 0);
}

TEST(UpgradeState, Names) {
  EXPECT_STREQ(to_string(S::Idle), "idle");
  EXPECT_STREQ(to_string(S::Spawning), "spawning");
  EXPECT_STREQ(to_string(S::AwaitingReady), "awaiting-ready");
  EXPECT_STREQ(to_string(S::Probation), "probation");
  EXPECT_STREQ(to_string(S::HandedOver), "handed-over");
  EXPECT_STREQ(to_string(S::RollingBack), "rolling-back");
}

}  // namespace
}  // namespace baton::handoff
