// Graceful stop: SIGTERM closes the listeners, keeps echoing what is open,
// half-closes at --drain-timeout, and a second SIGTERM closes everything now.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <fstream>

#include "support/batond.h"
#include "support/client.h"

namespace baton::test {
namespace {

TEST(Stop, OpenConnectionIsStillEchoedNewOnesRefusedExitsZeroWhenClientCloses) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  const auto addr = d.address();
  auto conn = connect_to(addr);
  ASSERT_TRUE(echo_roundtrip(conn.get(), "before\n"));

  d.process().signal(SIGTERM);
  ASSERT_TRUE(d.wait_for_line(d.first_pid(), "drain: started")) << d.log();
  EXPECT_TRUE(echo_roundtrip(conn.get(), "during the drain\n"));
  auto refused = connect_to(addr);
  EXPECT_FALSE(refused) << "a new connection was accepted while draining";
  EXPECT_EQ(errno, ECONNREFUSED);
  EXPECT_TRUE(d.process().running());

  ::shutdown(conn.get(), SHUT_WR);
  EXPECT_TRUE(wait_eof(conn.get()));  // our FIN is answered with the daemon's
  auto status = d.process().wait_exit();
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->success()) << status->describe();
  EXPECT_TRUE(d.wait_for_line(d.first_pid(), "1 closed by their clients, 0 half-closed at the deadline, 0 closed forcibly"))
      << d.log();
}

TEST(Stop, DrainTimeoutHalfClosesWhatIsLeftAfterEchoingEverything) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--drain-timeout", "1"});
  auto conn = connect_to(d.address());
  ASSERT_TRUE(echo_roundtrip(conn.get(), "hello\n"));
  d.process().signal(SIGTERM);
  ASSERT_TRUE(d.wait_for_line(d.first_pid(), "drain: started"));
  ASSERT_TRUE(send_all(conn.get(), "last words\n"));
  // Everything read is echoed, then FIN: the bytes arrive, then EOF.
  auto back = recv_exact(conn.get(), 11, 10s);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, "last words\n");
  EXPECT_TRUE(wait_eof(conn.get(), 10s));
  conn.reset();
  auto status = d.process().wait_exit();
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->success()) << status->describe();
  EXPECT_TRUE(d.wait_for_line(d.first_pid(), "1 half-closed at the deadline")) << d.log();
}

TEST(Stop, SecondSigtermClosesEverythingAtOnce) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--drain-timeout", "600"});
  auto conn = connect_to(d.address());
  ASSERT_TRUE(echo_roundtrip(conn.get(), "x"));
  d.process().signal(SIGTERM);
  ASSERT_TRUE(d.wait_for_line(d.first_pid(), "drain: started"));
  // Within a second of the first, it is the same stop arriving twice
  // (systemd signals every process of the unit, and a newer generation
  // passes its own on): nothing is forced, the client is still served.
  d.process().signal(SIGTERM);
  ASSERT_TRUE(d.wait_for_line(d.first_pid(), "a second stop signal forces only 1000 ms after the first")) << d.log();
  EXPECT_TRUE(echo_roundtrip(conn.get(), "still drained gently"));
  // A later one forces: sent until the process is gone (each wait is on its exit).
  auto status = d.process().wait_exit(0ms);
  for (int i = 0; i < 100 && !status; ++i) {
    d.process().signal(SIGTERM);
    status = d.process().wait_exit(200ms);
  }
  ASSERT_TRUE(status) << "still running 20 s after the second SIGTERM (drain timeout is 600 s)";
  EXPECT_TRUE(status->success()) << status->describe();
  EXPECT_TRUE(d.wait_for_line(d.first_pid(), "1 closed forcibly")) << d.log();
  char c;
  EXPECT_LE(::recv(conn.get(), &c, 1, 0), 0) << "connection still open";
}

TEST(Stop, SigintIsAGracefulStopToo) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  d.process().signal(SIGINT);
  auto status = d.process().wait_exit();
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->success());
  EXPECT_TRUE(d.wait_for_line(d.first_pid(), "SIGINT: graceful stop"));
}

TEST(Stop, PidFileWrittenWhileServingAndRemovedOnExitUnixSocketFileToo) {
  TempDir dir;
  const auto pid_file = dir.file("batond.pid");
  const auto sock = dir.file("echo.sock");
  auto d = BatondProcess::start(
      {"--listen", "echo=tcp://127.0.0.1:0", "--listen", "u=unix:" + sock, "--pid-file", pid_file});
  EXPECT_EQ(read_pid_file(pid_file), d.first_pid());
  d.process().signal(SIGTERM);
  ASSERT_TRUE(d.process().wait_exit());
  struct stat st;
  EXPECT_NE(::stat(pid_file.c_str(), &st), 0) << "pid file left behind";
  EXPECT_NE(::stat(sock.c_str(), &st), 0) << "unix socket file left behind";
}

}  // namespace
}  // namespace baton::test
