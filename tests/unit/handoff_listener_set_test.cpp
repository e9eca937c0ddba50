// open_listeners (adopt what was handed over, bind the rest, drop the unwanted)
// and the listener_socket primitives under it: bind_listener, local_address,
// validate_listener.

#include "baton/handoff/listener_set.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "baton/handoff/listener_socket.h"
#include "support/client.h"
#include "support/process.h"
#include "unit_util.h"

namespace baton::handoff {
namespace {

using unit::inode_of;
using unit::open_fd_count;

ListenAddress addr(const std::string& text) {
  auto a = ListenAddress::parse(text);
  if (!a.ok()) throw std::runtime_error(a.error().message);
  return a.value();
}

int sockopt(int fd, int opt) {
  int v = -1;
  socklen_t len = sizeof v;
  if (::getsockopt(fd, SOL_SOCKET, opt, &v, &len) != 0) return -1;
  return v;
}

// A listener as a predecessor would hand it over.
InheritedListener inherit(const std::string& name, const std::string& configured) {
  auto a = addr(configured);
  auto fd = bind_listener(a, 16);
  if (!fd.ok()) throw std::runtime_error(fd.error().message);
  auto bound = local_address(fd->get());
  if (!bound.ok()) throw std::runtime_error(bound.error().message);
  return {name, a, bound.value(), std::move(fd).value()};
}

bool connect_refused(const ListenAddress& a) {
  UniqueFd c = test::connect_to(a.endpoint());
  return !c.valid() && (errno == ECONNREFUSED || errno == ENOENT);
}

bool connect_accepted(const ListenAddress& a) { return test::connect_to(a.endpoint()).valid(); }

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// ---- open_listeners ----------------------------------------------------------------------

TEST(OpenListeners, AdoptsAnInheritedListenerWithTheSameNameAndAddress) {
  auto in = inherit("echo", "tcp://127.0.0.1:0");
  const ino_t ino = inode_of(in.fd.get());
  const ListenAddress bound = in.bound;
  // A predecessor may hand over a blocking fd; the adopted one is made non-blocking.
  ::fcntl(in.fd.get(), F_SETFL, ::fcntl(in.fd.get(), F_GETFL) & ~O_NONBLOCK);
  std::vector<InheritedListener> inherited;
  inherited.push_back(std::move(in));

  auto r = open_listeners({{"echo", addr("tcp://127.0.0.1:0")}}, std::move(inherited), 16);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->listeners.size(), 1u);
  auto& l = r->listeners[0];
  EXPECT_TRUE(l.inherited);
  EXPECT_EQ(l.name, "echo");
  EXPECT_EQ(l.configured, addr("tcp://127.0.0.1:0"));
  EXPECT_EQ(l.bound, bound);
  EXPECT_EQ(inode_of(l.fd.get()), ino) << "not the inherited socket";
  EXPECT_TRUE(::fcntl(l.fd.get(), F_GETFL) & O_NONBLOCK);
  EXPECT_TRUE(r->dropped.empty());
  EXPECT_TRUE(connect_accepted(l.bound));
}

TEST(OpenListeners, BindsANewListenerWhenNothingMatches) {
  test::TempDir dir;
  const std::string path = dir.file("new.sock");
  auto r = open_listeners({{"tcp", addr("tcp://127.0.0.1:0")}, {"ctl", addr("unix:" + path)}}, {}, 16);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->listeners.size(), 2u);
  auto& tcp = r->listeners[0];
  EXPECT_EQ(tcp.name, "tcp");
  EXPECT_FALSE(tcp.inherited);
  EXPECT_EQ(tcp.configured.port, 0);
  EXPECT_NE(tcp.bound.port, 0) << "the bound address is the real one";
  EXPECT_EQ(tcp.bound.host, "127.0.0.1");
  EXPECT_EQ(sockopt(tcp.fd.get(), SO_ACCEPTCONN), 1);
  EXPECT_TRUE(connect_accepted(tcp.bound));
  auto& ctl = r->listeners[1];
  EXPECT_EQ(ctl.name, "ctl");
  EXPECT_FALSE(ctl.inherited);
  EXPECT_EQ(ctl.bound, addr("unix:" + path));
  EXPECT_TRUE(connect_accepted(ctl.bound));
  EXPECT_TRUE(r->dropped.empty());
}

TEST(OpenListeners, SameNameButAnotherAddressIsBoundAfreshAndTheOldOneDropped) {
  test::TempDir dir;
  auto in = inherit("echo", "tcp://127.0.0.1:0");
  const ino_t old_ino = inode_of(in.fd.get());
  const int old_fd = in.fd.get();
  const ListenAddress old_bound = in.bound;
  std::vector<InheritedListener> inherited;
  inherited.push_back(std::move(in));

  auto r = open_listeners({{"echo", addr("unix:" + dir.file("e.sock"))}}, std::move(inherited), 16);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->listeners.size(), 1u);
  EXPECT_FALSE(r->listeners[0].inherited);
  EXPECT_NE(inode_of(r->listeners[0].fd.get()), old_ino);
  ASSERT_EQ(r->dropped.size(), 1u);
  EXPECT_EQ(r->dropped[0], "echo (" + old_bound.to_string() + ")");
  EXPECT_FALSE(unit::fd_is_open(old_fd)) << "a dropped listener must be closed";
  EXPECT_TRUE(connect_refused(old_bound));
}

TEST(OpenListeners, ReportsAndClosesInheritedListenersNoLongerConfigured) {
  auto keep = inherit("keep", "tcp://127.0.0.1:0");
  auto gone1 = inherit("gone1", "tcp://127.0.0.1:0");
  auto gone2 = inherit("gone2", "tcp://127.0.0.1:0");
  const ino_t keep_ino = inode_of(keep.fd.get());
  const ListenAddress b1 = gone1.bound, b2 = gone2.bound;
  std::vector<InheritedListener> inherited;
  inherited.push_back(std::move(gone1));
  inherited.push_back(std::move(keep));
  inherited.push_back(std::move(gone2));
  const int before = open_fd_count();

  auto r = open_listeners({{"keep", addr("tcp://127.0.0.1:0")}, {"fresh", addr("tcp://127.0.0.1:0")}},
                          std::move(inherited), 16);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->listeners.size(), 2u);
  EXPECT_EQ(r->listeners[0].name, "keep");
  EXPECT_TRUE(r->listeners[0].inherited);
  EXPECT_EQ(inode_of(r->listeners[0].fd.get()), keep_ino);
  EXPECT_EQ(r->listeners[1].name, "fresh");
  EXPECT_FALSE(r->listeners[1].inherited);
  EXPECT_EQ(r->dropped,
            (std::vector<std::string>{"gone1 (" + b1.to_string() + ")", "gone2 (" + b2.to_string() + ")"}));
  // Three inherited in, one new bound, two dropped closed.
  EXPECT_EQ(open_fd_count(), before - 1);
  EXPECT_TRUE(connect_refused(b1));
  EXPECT_TRUE(connect_refused(b2));
}

TEST(OpenListeners, FailsNamingTheListenerWhenTheAddressIsInUse) {
  // Someone (us) already listens on the port.
  auto squatter = bind_listener(addr("tcp://127.0.0.1:0"), 16);
  ASSERT_TRUE(squatter.ok()) << squatter.error().message;
  auto taken = local_address(squatter->get());
  ASSERT_TRUE(taken.ok());
  const int before = open_fd_count();

  std::vector<InheritedListener> inherited;
  inherited.push_back(inherit("other", "tcp://127.0.0.1:0"));
  auto r = open_listeners({{"first", addr("tcp://127.0.0.1:0")}, {"busy", taken.value()}}, std::move(inherited), 16);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "listener 'busy': bind " + taken->endpoint() + ": Address already in use");
  // Then nothing stays open: not "first", which was bound, nor the inherited one.
  EXPECT_EQ(open_fd_count(), before);
  EXPECT_TRUE(connect_accepted(taken.value())) << "the squatter is untouched";
}

// ---- bind_listener -----------------------------------------------------------------------------

TEST(BindListener, TcpListenerIsNonBlockingCloexecAndListening) {
  auto fd = bind_listener(addr("tcp://127.0.0.1:0"), 16);
  ASSERT_TRUE(fd.ok()) << fd.error().message;
  EXPECT_TRUE(::fcntl(fd->get(), F_GETFL) & O_NONBLOCK);
  EXPECT_TRUE(::fcntl(fd->get(), F_GETFD) & FD_CLOEXEC);
  EXPECT_EQ(sockopt(fd->get(), SO_ACCEPTCONN), 1);
  EXPECT_EQ(sockopt(fd->get(), SO_TYPE), SOCK_STREAM);
  auto bound = local_address(fd->get());
  ASSERT_TRUE(bound.ok());
  EXPECT_TRUE(connect_accepted(bound.value()));
}

TEST(BindListener, Ipv6ListenerIsV6Only) {
  auto fd = bind_listener(addr("tcp://[::1]:0"), 16);
  ASSERT_TRUE(fd.ok()) << fd.error().message;
  int v6only = 0;
  socklen_t len = sizeof v6only;
  ASSERT_EQ(::getsockopt(fd->get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len), 0);
  EXPECT_EQ(v6only, 1);
  auto bound = local_address(fd->get());
  ASSERT_TRUE(bound.ok());
  EXPECT_EQ(bound->family, ListenAddress::Family::Tcp6);
  EXPECT_EQ(bound->host, "::1");
}

TEST(BindListener, UnixStaleSocketFileIsReplaced) {
  test::TempDir dir;
  const std::string path = dir.file("stale.sock");
  {
    // A listener that died without removing its socket file.
    UniqueFd dead(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_storage ss;
    socklen_t len = addr("unix:" + path).to_sockaddr(ss);
    ASSERT_EQ(::bind(dead.get(), reinterpret_cast<sockaddr*>(&ss), len), 0) << std::strerror(errno);
    ASSERT_EQ(::listen(dead.get(), 1), 0);
  }
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  ASSERT_TRUE(S_ISSOCK(st.st_mode));
  ASSERT_TRUE(connect_refused(addr("unix:" + path))) << "the file should be stale";

  auto fd = bind_listener(addr("unix:" + path), 16);
  ASSERT_TRUE(fd.ok()) << fd.error().message;
  ASSERT_EQ(::lstat(path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  // The path now leads to the new listener: a client there is accepted on its fd.
  UniqueFd c = test::connect_to(path);
  ASSERT_TRUE(c.valid()) << std::strerror(errno);
  UniqueFd accepted(::accept4(fd->get(), nullptr, nullptr, SOCK_CLOEXEC));
  EXPECT_TRUE(accepted.valid()) << std::strerror(errno);
}

TEST(BindListener, UnixLiveListenerIsNotStolen) {
  test::TempDir dir;
  const std::string path = dir.file("live.sock");
  auto live = bind_listener(addr("unix:" + path), 16);
  ASSERT_TRUE(live.ok()) << live.error().message;
  const int before = open_fd_count();

  auto second = bind_listener(addr("unix:" + path), 16);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().message, "unix:" + path + ": another process is listening on it");
  EXPECT_EQ(open_fd_count(), before) << "the probe socket leaked";
  // The live listener still owns the path.
  UniqueFd c = test::connect_to(path);
  ASSERT_TRUE(c.valid());
  UniqueFd accepted(::accept4(live->get(), nullptr, nullptr, SOCK_CLOEXEC));
  EXPECT_TRUE(accepted.valid()) << std::strerror(errno);
}

TEST(BindListener, UnixPathThatIsARegularFileIsRefused) {
  test::TempDir dir;
  const std::string path = dir.file("not-a-socket");
  { std::ofstream(path) << "precious"; }
  auto r = bind_listener(addr("unix:" + path), 16);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "unix:" + path + " exists and is not a socket; not replacing it");
  EXPECT_EQ(read_file(path), "precious");
}

TEST(BindListener, TcpAddressInUse) {
  auto first = bind_listener(addr("tcp://127.0.0.1:0"), 16);
  ASSERT_TRUE(first.ok());
  auto taken = local_address(first->get());
  ASSERT_TRUE(taken.ok());
  auto second = bind_listener(taken.value(), 16);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().message, "bind " + taken->endpoint() + ": Address already in use");
}

// ---- validate_listener ----------------------------------------------------------------------------

TEST(ValidateListener, AcceptsAListenerAgainstItsOwnAddress) {
  test::TempDir dir;
  for (const std::string& text : {std::string("tcp://127.0.0.1:0"), std::string("tcp://[::1]:0"),
                                  "unix:" + dir.file("v.sock")}) {
    SCOPED_TRACE(text);
    auto fd = bind_listener(addr(text), 16);
    ASSERT_TRUE(fd.ok()) << fd.error().message;
    auto bound = local_address(fd->get());
    ASSERT_TRUE(bound.ok()) << bound.error().message;
    auto st = validate_listener(fd->get(), bound.value());
    EXPECT_TRUE(st.ok()) << st.error().message;
  }
}

TEST(ValidateListener, RefusesWhatIsNotExactlyTheAnnouncedListener) {
  auto fd = bind_listener(addr("tcp://127.0.0.1:0"), 16);
  ASSERT_TRUE(fd.ok());
  auto bound = local_address(fd->get()).value();

  // Port 0 is not the port it is bound to.
  auto zero = validate_listener(fd->get(), addr("tcp://127.0.0.1:0"));
  ASSERT_FALSE(zero.ok());
  EXPECT_EQ(zero.error().message, "socket is bound to " + bound.to_string() + ", announced tcp://127.0.0.1:0");

  // Another host.
  ListenAddress other = bound;
  other.host = "127.0.0.2";
  auto host = validate_listener(fd->get(), other);
  ASSERT_FALSE(host.ok());
  EXPECT_EQ(host.error().message, "socket is bound to " + bound.to_string() + ", announced " + other.to_string());

  // A closed fd.
  const int closed = fd->get();
  fd->reset();
  auto gone = validate_listener(closed, bound);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().message, "fstat: Bad file descriptor");
}

TEST(LocalAddress, OfAUnixListenerIsItsPath) {
  test::TempDir dir;
  auto fd = bind_listener(addr("unix:" + dir.file("p.sock")), 16);
  ASSERT_TRUE(fd.ok());
  auto a = local_address(fd->get());
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(a.value(), addr("unix:" + dir.file("p.sock")));
}

}  // namespace
}  // namespace baton::handoff
