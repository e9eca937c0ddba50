// The echo service against the real batond: exact bytes on TCP and Unix
// sockets, many clients at once, bounded memory against a client that never
// reads, and the connection limit.

#include <gtest/gtest.h>
#include <sys/socket.h>

#include <thread>

#include "support/batond.h"
#include "support/client.h"

namespace baton::test {
namespace {

TEST(Echo, OneMebibyteOfRandomBytesOverTcpComesBackExactly) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  auto fd = connect_to(d.address());
  ASSERT_TRUE(fd) << d.log();
  EXPECT_TRUE(echo_roundtrip(fd.get(), random_bytes(1 << 20, 7)));
}

TEST(Echo, OneMebibyteOverUnixSocketComesBackExactly) {
  TempDir dir;
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--listen", "local=unix:" + dir.file("echo.sock")});
  EXPECT_EQ(d.address("local"), dir.file("echo.sock"));
  auto fd = connect_to(dir.file("echo.sock"));
  ASSERT_TRUE(fd) << d.log();
  EXPECT_TRUE(echo_roundtrip(fd.get(), random_bytes(1 << 20, 8)));
}

TEST(Echo, IPv6LoopbackListenerEchoes) {
  auto probe = UniqueFd(::socket(AF_INET6, SOCK_STREAM, 0));
  if (!probe) GTEST_SKIP() << "no IPv6 on this machine";
  auto d = BatondProcess::launch({"--listen", "echo=tcp://[::1]:0"});
  if (!d.wait_for_line(d.first_pid(), "serving: generation", 10s)) GTEST_SKIP() << "cannot bind [::1]: " << d.log();
  auto addr = d.address();
  ASSERT_TRUE(addr.starts_with("[::1]:")) << addr;
  auto fd = connect_to(addr);
  ASSERT_TRUE(fd);
  EXPECT_TRUE(echo_roundtrip(fd.get(), "over ipv6\n"));
}

TEST(Echo, TwoHundredConcurrentConnectionsEachGetTheirOwnBytes) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  const auto addr = d.address();
  std::vector<UniqueFd> fds;
  for (int i = 0; i < 200; ++i) {
    fds.push_back(connect_to(addr));
    ASSERT_TRUE(fds.back()) << "connection " << i;
  }
  // Everything is sent before anything is read: all 200 are open at once.
  for (size_t i = 0; i < fds.size(); ++i) ASSERT_TRUE(send_all(fds[i].get(), random_bytes(4096, 100 + i)));
  for (size_t i = 0; i < fds.size(); ++i) {
    auto back = recv_exact(fds[i].get(), 4096);
    ASSERT_TRUE(back) << "connection " << i;
    EXPECT_EQ(*back, random_bytes(4096, 100 + i)) << "connection " << i;
  }
}

// The bound: the daemon's RSS may grow by at most 16 MiB while a client
// pushes 64 MiB at it without reading. Backpressure stops reading at 256 KiB
// pending; the rest waits in the kernel's buffers or in the client.
TEST(Echo, ClientThatNeverReadsCannotGrowMemoryAndOthersAreServed) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  const auto addr = d.address();
  const long rss_before = rss_kib(d.serving_pid());
  auto hog = connect_to(addr);
  ASSERT_TRUE(hog);
  const std::string chunk = random_bytes(64 * 1024, 3);
  size_t written = 0;
  auto last_progress = std::chrono::steady_clock::now();
  while (written < (64u << 20) && std::chrono::steady_clock::now() - last_progress < 2s) {
    ssize_t n = ::send(hog.get(), chunk.data(), chunk.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      written += static_cast<size_t>(n);
      last_progress = std::chrono::steady_clock::now();
    } else {
      std::this_thread::sleep_for(5ms);
    }
  }
  EXPECT_LT(written, 64u << 20) << "the daemon never pushed back";
  const long rss_after = rss_kib(d.serving_pid());
  EXPECT_LT(rss_after - rss_before, 16 * 1024) << "RSS " << rss_before << " -> " << rss_after << " KiB after "
                                              << written << " bytes unread";
  auto other = connect_to(addr);
  ASSERT_TRUE(other);
  EXPECT_TRUE(echo_roundtrip(other.get(), "still served\n"));
}

TEST(Echo, ConnectionsPastTheLimitAreClosedAtOnceAndTheRestServed) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--max-connections", "2"});
  const auto addr = d.address();
  auto a = connect_to(addr), b = connect_to(addr);
  ASSERT_TRUE(echo_roundtrip(a.get(), "a"));
  ASSERT_TRUE(echo_roundtrip(b.get(), "b"));
  auto c = connect_to(addr);
  ASSERT_TRUE(c);  // the kernel completes the handshake; the daemon closes it at accept
  EXPECT_TRUE(wait_eof(c.get(), 5s));
  EXPECT_TRUE(d.wait_for_line(d.serving_pid(), "max-connections 2 reached"));
  EXPECT_TRUE(echo_roundtrip(a.get(), "a again"));
  a.reset();
  // A freed slot is usable again.
  EXPECT_TRUE(eventually([&] {
    auto e = connect_to(addr);
    return e && echo_roundtrip(e.get(), "e", 2s);
  }));
}

}  // namespace
}  // namespace baton::test
