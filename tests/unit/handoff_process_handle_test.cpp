// ProcessHandle: alive while the process runs, not once it has exited, even
// before anyone reaps it; a pid that is gone when the handle is taken is dead.

#include "baton/handoff/process_handle.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace baton::handoff {
namespace {

TEST(ProcessHandle, FollowsAProcessUntilItExits) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::pause();
    ::_exit(0);
  }
  auto h = ProcessHandle::open(child);
  EXPECT_EQ(h.pid(), child);
  EXPECT_TRUE(h.alive());
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  siginfo_t info{};
  // Exited, not yet reaped (a zombie): already dead to the handle.
  ASSERT_EQ(::waitid(P_PID, static_cast<id_t>(child), &info, WEXITED | WNOWAIT), 0);
  EXPECT_FALSE(h.alive());
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  EXPECT_FALSE(h.alive());
}

TEST(ProcessHandle, AProcessGoneBeforeTheHandleIsDead) {
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  EXPECT_FALSE(ProcessHandle::open(child).alive());
  EXPECT_FALSE(ProcessHandle().alive());
}

}  // namespace
}  // namespace baton::handoff
