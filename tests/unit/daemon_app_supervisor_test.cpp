// AppSupervisor::adopt: the app state a previous batond generation hands
// over (a STATE message) is input from another process. Anything malformed
// is an error naming what is wrong, so the new generation exits before READY
// and the upgrade rolls back; nothing is adopted half.

#include "app_supervisor.h"

#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace baton::daemon {
namespace {

class AdoptTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(uv_loop_init(&loop_), 0); }
  void TearDown() override {
    supervisor_.reset();
    uv_run(&loop_, UV_RUN_NOWAIT);
    EXPECT_EQ(uv_loop_close(&loop_), 0);
  }
  std::string adopt_error(const std::string& data, std::vector<handoff::UniqueFd> fds) {
    AppOptions options;
    options.command = {"/bin/true"};
    supervisor_ = std::make_unique<AppSupervisor>(&loop_, options, std::vector<std::pair<std::string, int>>{}, AppEvents{});
    auto st = supervisor_->adopt(data, std::move(fds));
    return st ? std::string("adopted") : st.error().message;
  }
  // A real notify socket, as the older generation would hand it.
  static handoff::UniqueFd notify_fd() {
    auto s = NotifySocket::create();
    EXPECT_TRUE(s.ok());
    return handoff::UniqueFd(::dup(s->fd()));
  }
  static nlohmann::json valid() {
    return {{"v", 1}, {"notify", 0}, {"instances", nlohmann::json::array()}, {"next_number", 3}, {"restarts", 1},
            {"failures", 0}, {"crashes", 0}, {"last_good", {"/bin/true"}}};
  }
  uv_loop_t loop_{};
  std::unique_ptr<AppSupervisor> supervisor_;
};

std::vector<handoff::UniqueFd> fds_of(handoff::UniqueFd fd) {
  std::vector<handoff::UniqueFd> v;
  v.push_back(std::move(fd));
  return v;
}

TEST_F(AdoptTest, InvalidJsonIsAnError) {
  EXPECT_NE(adopt_error("not json", fds_of(notify_fd())).find("app state: invalid JSON"), std::string::npos);
}

TEST_F(AdoptTest, AnUnknownVersionIsAnError) {
  auto j = valid();
  j["v"] = 2;
  EXPECT_EQ(adopt_error(j.dump(), fds_of(notify_fd())), "app state: unknown version");
}

TEST_F(AdoptTest, AMissingFieldIsAnError) {
  auto j = valid();
  j.erase("restarts");
  EXPECT_NE(adopt_error(j.dump(), fds_of(notify_fd())).find("app state: "), std::string::npos);
}

TEST_F(AdoptTest, AnFdIndexOutOfRangeIsAnError) {
  auto j = valid();
  j["notify"] = 5;
  EXPECT_EQ(adopt_error(j.dump(), fds_of(notify_fd())),
            "app state: 'notify' names fd index 5, which is missing or used twice");
}

TEST_F(AdoptTest, AnFdUsedTwiceIsAnError) {
  auto j = valid();
  j["instances"] = {{{"pid", ::getpid()}, {"number", 1}, {"state", "serving"}, {"status", ""}, {"command", {"/bin/true"}},
                     {"deadline_left_ms", -1}, {"uptime_ms", 0}, {"pidfd", 0}, {"stdout", -1}, {"stderr", -1}}};
  EXPECT_EQ(adopt_error(j.dump(), fds_of(notify_fd())),
            "app state: 'pidfd' names fd index 0, which is missing or used twice");
}

TEST_F(AdoptTest, AnInstanceInAStateThatIsNeverHandedOverIsAnError) {
  auto j = valid();
  j["instances"] = {{{"pid", 4242}, {"number", 1}, {"state", "probation"}, {"status", ""}, {"command", {"/bin/true"}},
                     {"deadline_left_ms", -1}, {"uptime_ms", 0}, {"pidfd", -1}, {"stdout", -1}, {"stderr", -1}}};
  EXPECT_EQ(adopt_error(j.dump(), fds_of(notify_fd())), "app state: instance 4242 in state 'probation'");
}

TEST_F(AdoptTest, ANotifyFdThatIsNoAbstractSocketIsAnError) {
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ::close(p[1]);
  EXPECT_NE(adopt_error(valid().dump(), fds_of(handoff::UniqueFd(p[0]))).find("app state: notify socket: getsockname"),
            std::string::npos);
}

TEST_F(AdoptTest, AValidStateWithNoInstanceIsAdopted) {
  EXPECT_EQ(adopt_error(valid().dump(), fds_of(notify_fd())), "adopted");
  EXPECT_EQ(supervisor_->status()["restarts"], 1);
}

TEST_F(AdoptTest, APidThatIsNoAppsIsAnError) {
  for (int pid : {0, 1, -1}) {
    auto j = valid();
    j["instances"] = {{{"pid", pid}, {"number", 1}, {"state", "serving"}, {"status", ""}, {"command", {"/bin/true"}},
                       {"deadline_left_ms", -1}, {"uptime_ms", 0}, {"pidfd", -1}, {"stdout", -1}, {"stderr", -1}}};
    EXPECT_EQ(adopt_error(j.dump(), fds_of(notify_fd())), "app state: instance pid " + std::to_string(pid) + " is not an app's");
  }
}

TEST_F(AdoptTest, APidfdOfAnotherProcessIsAnError) {
  // Our own pidfd, announced as another pid's.
  handoff::UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0)));
  ASSERT_TRUE(pidfd);
  auto j = valid();
  j["instances"] = {{{"pid", ::getpid() + 1}, {"number", 1}, {"state", "serving"}, {"status", ""}, {"command", {"/bin/true"}},
                     {"deadline_left_ms", -1}, {"uptime_ms", 0}, {"pidfd", 1}, {"stdout", -1}, {"stderr", -1}}};
  std::vector<handoff::UniqueFd> fds = fds_of(notify_fd());
  fds.push_back(std::move(pidfd));
  EXPECT_EQ(adopt_error(j.dump(), std::move(fds)),
            "app state: instance " + std::to_string(::getpid() + 1) + " comes with the pidfd of pid " + std::to_string(::getpid()));
}

}  // namespace
}  // namespace baton::daemon
