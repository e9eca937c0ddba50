// The examples (examples/), built against an installed baton by
// scripts/build-examples.sh (a ctest fixture), as an outside project would:
// each upgraded 20 times under load without one failed or corrupted
// connection; a failed upgrade and a new process killed in its probation
// leave the old one serving; SIGTERM stops them cleanly.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>

#include "support/client.h"
#include "support/fake_notify_socket.h"
#include "support/load.h"
#include "support/process.h"
#include "support/wrk.h"

namespace baton::test {
namespace {

const std::string kExamples = BATON_EXAMPLES_DIR;
constexpr int kUpgrades = 20;

// A port nothing listens on now. The examples take HOST:PORT as their one
// argument, so the port is chosen here; the kernel does not hand a port it
// just gave out to the next bind(0), so the window is small.
uint16_t free_port() {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  EXPECT_EQ(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len), 0);
  return ntohs(a.sin_port);
}

pid_t main_pid_in(const std::string& message) {
  std::smatch m;
  return std::regex_search(message, m, std::regex("MAINPID=([0-9]+)")) ? std::stoi(m[1]) : 0;
}

// One example server, its generations followed through the MAINPID= that
// the Upgrader sends to NOTIFY_SOCKET, as systemd would follow them.
class Example {
 public:
  Example(const std::string& binary, const TempDir& dir, std::vector<std::string> env = {})
      : endpoint_("127.0.0.1:" + std::to_string(free_port())),
        systemd_(dir.file("notify")),
        first_(start(binary, endpoint_, dir, std::move(env))) {
    auto ready = systemd_.wait_for_message("READY=1");
    EXPECT_TRUE(ready) << first_.log();
    pid_ = ready ? main_pid_in(*ready) : 0;
    EXPECT_EQ(pid_, first_.pid()) << systemd_.all();
  }
  static TestProcess start(const std::string& binary, const std::string& endpoint, const TempDir& dir,
                           std::vector<std::string> env) {
    env.push_back("NOTIFY_SOCKET=" + dir.file("notify"));
    return TestProcess::start({binary, endpoint}, with_env(std::move(env)));
  }
  const std::string& endpoint() const { return endpoint_; }
  pid_t pid() const { return pid_; }
  std::string log() const { return first_.log() + "\nsystemd saw: " + systemd_.all(); }

  // SIGUSR2 to the serving process: the new one must be READY with its
  // own MAINPID. Returns its pid (0 if none came).
  pid_t start_upgrade() {
    const size_t from = systemd_.count();
    ::kill(pid_, SIGUSR2);
    auto ready = systemd_.wait_for_message("READY=1", 10s, from);
    const pid_t next = ready ? main_pid_in(*ready) : 0;
    if (next > 0) first_.track_descendant(next);
    return next;
  }
  // One whole upgrade: the new process serves, the old one is gone.
  bool upgrade() {
    const pid_t old = pid_, next = start_upgrade();
    if (next <= 0 || next == old) return false;
    if (!wait_pid_gone(old, 15s)) return false;
    reap_zombies();
    pid_ = next;
    return true;
  }
  // Failed upgrades: the old process says so to systemd (MAINPID= itself again) or keeps quiet.
  FakeNotifySocket& systemd() { return systemd_; }

  // SIGTERM to the serving process; true if it exits with status 0.
  bool stop() {
    ::kill(pid_, SIGTERM);
    return wait_stopped();
  }
  bool wait_stopped() {
    if (pid_ == first_.pid()) {
      auto st = first_.wait_exit(15s);
      return st && st->success();
    }
    int status = 0;
    const bool reaped = eventually([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; }, 15s);
    return reaped && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }

 private:
  std::string endpoint_;
  FakeNotifySocket systemd_;
  TestProcess first_;
  pid_t pid_ = 0;
};

// GET / on a fresh connection: the body ("hello from generation G (pid P)\n"), or "" on any failure.
std::string http_get(const std::string& endpoint) {
  auto fd = connect_to(endpoint);
  if (!fd || !send_all(fd.get(), "GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")) return "";
  std::string response;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd.get(), buf, sizeof buf, 0)) > 0;) response.append(buf, n);
  if (!response.starts_with("HTTP/1.1 200")) return "";
  auto body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// GET / on a kept-alive connection: the body of the answer, or "" on any failure.
std::string keep_alive_get(int fd) {
  if (!send_all(fd, "GET / HTTP/1.1\r\nHost: test\r\n\r\n")) return "";
  std::string response;
  char buf[4096];
  for (;;) {
    const auto head_end = response.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      const auto at = response.find("Content-Length: ");
      if (at == std::string::npos || !response.starts_with("HTTP/1.1 200")) return "";
      const size_t length = std::stoul(response.substr(at + 16));
      if (response.size() >= head_end + 4 + length) return response.substr(head_end + 4, length);
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 10000) != 1) return "";
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return "";
    response.append(buf, n);
  }
}

std::string served_by(pid_t pid) { return "(pid " + std::to_string(pid) + ")"; }

size_t sockets_of(pid_t pid) {
  auto fds = open_fds(pid);
  return static_cast<size_t>(std::count_if(fds.begin(), fds.end(), [](const std::string& f) { return f.starts_with("socket:"); }));
}

std::string source_file(const std::string& relative) {
  std::ifstream in(std::filesystem::path(BATON_SOURCE_DIR) / relative);
  EXPECT_TRUE(in) << relative;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The copy-paste starting point: at most 100 lines, and shown whole, as it is, in the docs.
TEST(Examples, MinimalEchoIsAtMostOneHundredLinesAndDocsEmbeddingShowsItWhole) {
  const std::string code = source_file("examples/minimal-echo/main.cpp");
  ASSERT_FALSE(code.empty());
  EXPECT_LE(std::count(code.begin(), code.end(), '\n'), 100);
  EXPECT_NE(source_file("docs/embedding.md").find("```cpp\n" + code + "```"), std::string::npos)
      << "docs/embedding.md no longer shows examples/minimal-echo/main.cpp as it is: run scripts/update-embedding-doc.py";
}

void upgrade_minimal_echo_under_load(const std::string& binary, int upgrades) {
  TempDir dir;
  Example echo(binary, dir);
  auto load = LoadRun::start("tcp://" + echo.endpoint(), {"--churn-rate", "50"});
  for (int i = 0; i < upgrades; ++i) ASSERT_TRUE(echo.upgrade()) << "upgrade " << i + 1 << "\n" << echo.log();
  auto report = load.stop();
  std::cout << "after " << upgrades << " upgrades: " << report.summary << "\n";
  EXPECT_TRUE(report.status.success()) << report.summary;
  EXPECT_EQ(report.failures, 0) << report.summary;
  EXPECT_GT(report.bytes_verified, 0) << report.summary;
  EXPECT_GT(report.churn_succeeded, 0) << report.summary;
  auto fd = connect_to(echo.endpoint());
  EXPECT_TRUE(fd && echo_roundtrip(fd.get(), "still here")) << echo.log();
  fd.reset();
  EXPECT_TRUE(echo.stop()) << echo.log();
}

TEST(Examples, MinimalEchoUpgradesTwentyTimesUnderLoadWithoutAFailedConnection) {
  upgrade_minimal_echo_under_load(kExamples + "/minimal-echo/minimal-echo", kUpgrades);
}

TEST(Examples, MinimalEchoBuiltWithPkgConfigAloneUpgradesUnderLoadToo) {
  // The same code as above, built another way: a few upgrades show that build works.
  upgrade_minimal_echo_under_load(kExamples + "/minimal-echo-pkgconfig", 3);
}

// wrk's connections, and one kept alive by the test that each new
// generation must answer: the connection moved (wrk alone would reconnect
// silently after a Connection: close and hide a connection that did not).
TEST(Examples, HelloHttpUpgradesTwentyTimesUnderWrkWithoutAFailedRequest) {
  TempDir dir;
  // A 0.2 s probation: each of the 20 upgrades waits for it to pass.
  Example http(kExamples + "/hello-http/hello-http", dir, {"HELLO_HTTP_PROBATION_MS=200"});
  Wrk wrk(http.endpoint(), dir);
  auto kept = connect_to(http.endpoint());
  ASSERT_TRUE(kept);
  ASSERT_EQ(keep_alive_get(kept.get()), "hello from generation 1 " + served_by(http.pid()) + "\n");
  for (int i = 0; i < kUpgrades; ++i) {
    ASSERT_TRUE(http.upgrade()) << "upgrade " << i + 1 << "\n" << http.log();
    ASSERT_EQ(keep_alive_get(kept.get()),
              "hello from generation " + std::to_string(i + 2) + " " + served_by(http.pid()) + "\n")
        << "the kept-alive connection after upgrade " << i + 1 << "\n" << http.log();
  }
  const auto report = wrk.finish();
  std::cout << "after " << kUpgrades << " upgrades, wrk: " << report << "\n";
  Wrk::expect_clean(report);
  EXPECT_EQ(http_get(http.endpoint()), "hello from generation 21 " + served_by(http.pid()) + "\n") << http.log();
  EXPECT_TRUE(http.stop()) << http.log();
}

// The binary on disk is replaced by one that cannot take over: the upgrade
// fails before COMMIT and the old process never stopped serving; with the
// real binary back, the next upgrade works.
TEST(Examples, AnUpgradeToABrokenBinaryFailsAndTheOldProcessServesOn) {
  TempDir dir;
  const std::string binary = dir.file("hello-http");
  std::filesystem::copy_file(kExamples + "/hello-http/hello-http", binary);
  Example http(binary, dir);
  Wrk wrk(http.endpoint(), dir);
  const std::string broken = dir.file("broken");
  std::ofstream(broken) << "#!/bin/sh\necho 'this version cannot start' >&2\nexit 3\n";
  std::filesystem::permissions(broken, std::filesystem::perms::owner_all);
  std::filesystem::rename(binary, dir.file("good"));
  std::filesystem::rename(broken, binary);
  const size_t from = http.systemd().count();
  ::kill(http.pid(), SIGUSR2);
  auto failed = http.systemd().wait_for_message("STATUS=upgrade failed", 10s, from);
  ASSERT_TRUE(failed) << http.log();
  EXPECT_EQ(failed->find("MAINPID="), std::string::npos) << "it never stopped being the main process: " << *failed;
  EXPECT_TRUE(pid_alive(http.pid()));
  EXPECT_EQ(http_get(http.endpoint()), "hello from generation 1 " + served_by(http.pid()) + "\n") << http.log();
  std::filesystem::rename(dir.file("good"), binary);
  ASSERT_TRUE(http.upgrade()) << http.log();
  Wrk::expect_clean(wrk.finish());
  EXPECT_EQ(http_get(http.endpoint()), "hello from generation 2 " + served_by(http.pid()) + "\n") << http.log();
}

// The new process dies right after COMMIT (before it says SERVING, or in
// the probation that starts there, 5 s here so that the kill lands in it on
// a loaded machine too): the old one had stopped accepting and is told to
// listen again (`failed`, listen_again), and systemd is told it is the main
// process again.
TEST(Examples, ANewProcessKilledAfterCommitLeavesTheOldOneListeningAgain) {
  TempDir dir;
  Example http(kExamples + "/hello-http/hello-http", dir, {"HELLO_HTTP_PROBATION_MS=5000"});
  const size_t before = sockets_of(http.pid());
  Wrk wrk(http.endpoint(), dir);
  // wrk's 8 connections are this process's before the upgrade starts: one
  // still in the backlog at COMMIT would go to the process killed here.
  ASSERT_TRUE(eventually([&] { return sockets_of(http.pid()) >= before + 8; })) << http.log();
  const size_t from = http.systemd().count();
  ::kill(http.pid(), SIGUSR2);
  auto committed = http.systemd().wait_for_message("STATUS=handed off to pid", 10s, from);
  ASSERT_TRUE(committed) << http.log();
  const pid_t next = main_pid_in(*committed);
  ASSERT_GT(next, 0) << *committed;
  ::kill(next, SIGKILL);
  ASSERT_TRUE(http.systemd().wait_for_message("MAINPID=" + std::to_string(http.pid()) + "\nSTATUS=upgrade failed",
                                               10s, from))
      << http.log();
  EXPECT_EQ(http_get(http.endpoint()), "hello from generation 1 " + served_by(http.pid()) + "\n") << http.log();
  ASSERT_TRUE(http.upgrade()) << http.log();
  Wrk::expect_clean(wrk.finish());
  EXPECT_TRUE(http.stop()) << http.log();
}

// SIGTERM while an upgrade is in flight (the new binary never says
// anything), with one request half read: the new process is killed at the
// stop (long before the 10 s it would get to say READY), the half-read
// request is answered (with Connection: close) and the process exits with
// status 0.
TEST(Examples, ASigtermDuringAnUpgradeStopsTheServerAndTheNewProcess) {
  TempDir dir;
  const std::string binary = dir.file("hello-http");
  std::filesystem::copy_file(kExamples + "/hello-http/hello-http", binary);
  Example http(binary, dir);
  const std::string failing = dir.file("failing");
  std::ofstream(failing) << "#!/bin/sh\necho $$ > " << dir.file("failing.pid") << "\nexec sleep 60\n";
  std::filesystem::permissions(failing, std::filesystem::perms::owner_all);
  std::filesystem::rename(failing, binary);
  auto idle = connect_to(http.endpoint());  // kept alive, idle: closed at the stop
  auto busy = connect_to(http.endpoint());  // a request half sent: answered, then closed
  ASSERT_TRUE(idle && busy);
  ASSERT_FALSE(keep_alive_get(idle.get()).empty());
  ASSERT_TRUE(send_all(busy.get(), "GET / HTTP/1.1\r\nHost: test\r\n"));
  ::kill(http.pid(), SIGUSR2);
  pid_t started = 0;
  ASSERT_TRUE(eventually([&] { return (started = read_pid_file(dir.file("failing.pid"))) > 0; })) << http.log();
  ::kill(http.pid(), SIGTERM);
  EXPECT_TRUE(wait_eof(idle.get())) << "the idle connection was not closed at the stop";
  // Before the half-read request is done, so before the process could exit.
  EXPECT_TRUE(wait_pid_gone(started, 5s)) << "the new process outlived the stop";
  ASSERT_TRUE(send_all(busy.get(), "\r\n"));
  std::string answer;
  char buf[4096];
  for (pollfd p{busy.get(), POLLIN, 0}; ::poll(&p, 1, 10000) == 1;) {
    const ssize_t n = ::recv(busy.get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    answer.append(buf, n);
  }
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 200") && answer.find("Connection: close") != std::string::npos) << answer;
  EXPECT_TRUE(http.wait_stopped()) << http.log();
}

}  // namespace
}  // namespace baton::test
