// Start-up errors: what an operator sees for a bad address, a port in use,
// and a Unix socket path that is stale or taken.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <sys/stat.h>

#include <fstream>

#include "baton/handoff/listen_address.h"
#include "baton/handoff/listener_socket.h"
#include "support/batond.h"
#include "support/client.h"

namespace baton::test {
namespace {

CommandResult run_batond(std::vector<std::string> args) {
  TempDir dir;
  add_private_control(args, dir);
  args.insert(args.begin(), batond_path());
  return run_command(args, 20s);
}

TEST(Startup, BadListenAddressExitsTwoNamingTheBadPart) {
  auto r = run_batond({"--listen", "echo=tcp://127.0.0.1:99999"});
  EXPECT_EQ(r.status.code, 2);
  EXPECT_NE(r.err.find("port '99999' out of range"), std::string::npos) << r.err;

  r = run_batond({"--listen", "http://127.0.0.1:80"});
  EXPECT_EQ(r.status.code, 2);
  EXPECT_NE(r.err.find("unknown scheme"), std::string::npos) << r.err;

  r = run_batond({"--listen", "tcp://localhost:7000"});
  EXPECT_EQ(r.status.code, 2);
  EXPECT_NE(r.err.find("host 'localhost' is not a numeric IPv4 address"), std::string::npos) << r.err;
}

TEST(Startup, UnknownFlagIsAUsageError) {
  auto r = run_batond({"--no-such-flag"});
  EXPECT_EQ(r.status.code, 2);
}

TEST(Startup, AddressInUseExitsNonZeroNamingAddressAndErrno) {
  auto taken = handoff::bind_listener(*handoff::ListenAddress::parse("tcp://127.0.0.1:0"), 8);
  ASSERT_TRUE(taken);
  auto addr = handoff::local_address(taken->get());
  auto r = run_batond({"--listen", "echo=" + addr->to_string()});
  EXPECT_EQ(r.status.code, 1) << r.status.describe();
  EXPECT_NE(r.err.find("bind " + addr->endpoint() + ": Address already in use"), std::string::npos) << r.err;
}

TEST(Startup, StaleUnixSocketFileIsReplaced) {
  TempDir dir;
  const auto path = dir.file("stale.sock");
  {
    // A socket file whose listener is gone: bound, then closed.
    auto fd = handoff::bind_listener(*handoff::ListenAddress::parse("unix:" + path), 8);
    ASSERT_TRUE(fd);
  }
  auto d = BatondProcess::start({"--listen", "echo=unix:" + path});
  auto conn = connect_to(path);
  ASSERT_TRUE(conn) << d.log();
  EXPECT_TRUE(echo_roundtrip(conn.get(), "fresh\n"));
}

TEST(Startup, UnixSocketWithALiveListenerIsNotTaken) {
  TempDir dir;
  const auto path = dir.file("live.sock");
  auto live = handoff::bind_listener(*handoff::ListenAddress::parse("unix:" + path), 8);
  ASSERT_TRUE(live);
  auto r = run_batond({"--listen", "echo=unix:" + path});
  EXPECT_EQ(r.status.code, 1);
  EXPECT_NE(r.err.find("another process is listening on it"), std::string::npos) << r.err;
}

TEST(Startup, UnixPathThatIsARegularFileIsNotReplaced) {
  TempDir dir;
  const auto path = dir.file("file");
  std::ofstream(path) << "precious";
  auto r = run_batond({"--listen", "echo=unix:" + path});
  EXPECT_EQ(r.status.code, 1);
  EXPECT_NE(r.err.find("exists and is not a socket"), std::string::npos) << r.err;
  std::ifstream in(path);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
}

TEST(Startup, EveryLineCarriesPidAndGeneration) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  auto line = d.wait_for_line(d.first_pid(), "listening name=echo");
  ASSERT_TRUE(line);
  EXPECT_NE(line->find(pid_tag(d.first_pid()) + "gen=1 "), std::string::npos) << *line;
}

}  // namespace
}  // namespace baton::test

namespace baton::test {
namespace {

TEST(Startup, ControlSocketDirectoryOthersCanWriteIsRefused) {
  TempDir dir;
  const auto shared = dir.file("shared");
  ASSERT_EQ(::mkdir(shared.c_str(), 0777), 0);
  ASSERT_EQ(::chmod(shared.c_str(), 0777), 0);  // past the umask
  auto r = run_command({batond_path(), "--listen", "echo=tcp://127.0.0.1:0", "--control", shared + "/c.sock"});
  EXPECT_EQ(r.status.code, 1);
  EXPECT_NE(r.err.find(shared + " is not private"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace baton::test
