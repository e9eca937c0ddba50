// Successor: the taking-over side of the hand-off, driven synchronously. The
// test plays the predecessor by hand on the other end of a SOCK_SEQPACKET
// pair: datagrams queue, so LISTENERS and LISTENERS_END are sent first and
// take_listeners() then runs to completion in this thread. Where the
// predecessor has to close the channel after the successor has spoken, a short
// helper thread plays it.
//
// Every refused exchange must leave no received fd open: the fd count after
// the failed call equals the count before it (fds in flight are not in the
// table, so "before" is taken once everything the test holds exists).

#include "baton/handoff/successor.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "baton/handoff/listener_socket.h"
#include "baton/handoff/protocol.h"
#include "support/client.h"
#include "support/process.h"
#include "unit_util.h"

namespace baton::handoff {
namespace {

using namespace std::chrono_literals;
using unit::open_fd_count;

// ---- the predecessor's end ----------------------------------------------------------

struct Handoff {
  Successor successor;
  HandoffChannel peer;  // the test's end, playing the predecessor
};

Handoff make_handoff(uint16_t version = kProtocolVersion) {
  auto p = HandoffChannel::create_pair();
  if (!p.ok()) throw std::runtime_error(p.error().message);
  // adopt() gives the peer a send timeout too: a test can never hang on a full queue.
  auto peer = HandoffChannel::adopt(std::move(p.value().second));
  if (!peer.ok()) throw std::runtime_error(peer.error().message);
  return Handoff{Successor(std::move(p.value().first), version), std::move(peer).value()};
}

// The HELLO the successor sent first.
void expect_hello(HandoffChannel& peer, uint16_t version = kProtocolVersion) {
  auto m = peer.receive(1s);
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_EQ(m->type, MessageType::Hello);
  EXPECT_TRUE(m->fds.empty());
  auto hello = decode_hello(m->payload);
  ASSERT_TRUE(hello.ok()) << hello.error().message;
  EXPECT_EQ(hello->pid, static_cast<uint32_t>(::getpid()));
  EXPECT_EQ(hello->version, version);
}

struct TestListener {
  UniqueFd fd;
  ListenAddress bound;
};

TestListener listen_on(const std::string& text) {
  auto addr = ListenAddress::parse(text);
  if (!addr.ok()) throw std::runtime_error(addr.error().message);
  auto fd = bind_listener(addr.value(), 16);
  if (!fd.ok()) throw std::runtime_error(fd.error().message);
  auto bound = local_address(fd->get());
  if (!bound.ok()) throw std::runtime_error(bound.error().message);
  return {std::move(fd).value(), std::move(bound).value()};
}

// A socket of any kind bound to 127.0.0.1:0 (or ::1), not listening.
TestListener bound_socket(int domain, int type) {
  UniqueFd fd(::socket(domain, type | SOCK_CLOEXEC, 0));
  if (!fd) throw std::runtime_error("socket");
  auto addr = ListenAddress::parse(domain == AF_INET6 ? "tcp://[::1]:0" : "tcp://127.0.0.1:0");
  sockaddr_storage ss;
  socklen_t len = addr->to_sockaddr(ss);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) throw std::runtime_error("bind");
  auto bound = local_address(fd.get());
  if (!bound.ok()) throw std::runtime_error(bound.error().message);
  return {std::move(fd), std::move(bound).value()};
}

ListenAddress with_port(ListenAddress a, uint16_t port) {
  a.port = port;
  return a;
}

void send_batch(HandoffChannel& peer, const std::vector<ListenerEntry>& entries, const std::vector<int>& fds) {
  auto st = peer.send(MessageType::Listeners, encode(entries), fds);
  ASSERT_TRUE(st.ok()) << st.error().message;
}

void send_end(HandoffChannel& peer, uint32_t total, const std::vector<int>& fds = {}) {
  auto st = peer.send(MessageType::ListenersEnd, encode(ListenersEnd{total}), fds);
  ASSERT_TRUE(st.ok()) << st.error().message;
}

// Runs take_listeners on what the test queued and expects it to fail with
// exactly `expected`, leaving no received fd open; the HELLO went out first.
void expect_take_fails(Handoff& h, const std::string& expected, std::chrono::milliseconds timeout = 2s) {
  const int before = open_fd_count();
  auto r = h.successor.take_listeners(timeout);
  ASSERT_FALSE(r.ok()) << "take_listeners accepted a malformed hand-off";
  EXPECT_EQ(r.error().message, expected);
  EXPECT_EQ(open_fd_count(), before) << "received fds leaked";
  expect_hello(h.peer);
}

bool accept_one(int listen_fd, std::chrono::milliseconds timeout) {
  pollfd p{listen_fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
  UniqueFd c(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
  return c.valid();
}

// ---- happy path -------------------------------------------------------------------------------

TEST(Successor, TakesATcpAndAUnixListener) {
  test::TempDir dir;
  auto tcp = listen_on("tcp://127.0.0.1:0");
  const std::string unix_text = "unix:" + dir.file("ctl.sock");
  auto unx = listen_on(unix_text);
  Handoff h = make_handoff();
  std::vector<ListenerOffer> offers{{"echo", "tcp://127.0.0.1:0", tcp.bound.to_string(), tcp.fd.get()},
                                    {"ctl", unix_text, unx.bound.to_string(), unx.fd.get()}};
  ASSERT_TRUE(send_listeners(h.peer, offers).ok());

  const int before = open_fd_count();
  {
    auto r = h.successor.take_listeners(2s);
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_EQ(r->size(), 2u);
    auto& echo = r.value()[0];
    auto& ctl = r.value()[1];
    EXPECT_EQ(echo.name, "echo");
    EXPECT_EQ(echo.configured, ListenAddress::parse("tcp://127.0.0.1:0").value());
    EXPECT_EQ(echo.bound, tcp.bound);
    EXPECT_NE(echo.bound.port, 0);
    EXPECT_EQ(ctl.name, "ctl");
    EXPECT_EQ(ctl.configured, ListenAddress::parse(unix_text).value());
    EXPECT_EQ(ctl.bound, unx.bound);
    // The very same sockets, as new fds of this process.
    EXPECT_NE(echo.fd.get(), tcp.fd.get());
    EXPECT_EQ(unit::inode_of(echo.fd.get()), unit::inode_of(tcp.fd.get()));
    EXPECT_EQ(unit::inode_of(ctl.fd.get()), unit::inode_of(unx.fd.get()));
    EXPECT_EQ(open_fd_count(), before + 2);

    // And they accept: a client of the TCP address is accepted on the received fd.
    UniqueFd client = test::connect_to(tcp.bound.endpoint());
    ASSERT_TRUE(client.valid());
    EXPECT_TRUE(accept_one(echo.fd.get(), 1s));
  }
  EXPECT_EQ(open_fd_count(), before);
  expect_hello(h.peer);
}

TEST(Successor, AnEmptyHandOffIsValid) {
  Handoff h = make_handoff();
  ASSERT_TRUE(send_listeners(h.peer, {}).ok());
  auto r = h.successor.take_listeners(1s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_TRUE(r->empty());
  expect_hello(h.peer);
}

// "l<i>" (built with append: g++ 12 warns falsely on "l" + std::to_string(i)).
std::string lname(size_t i) {
  std::string s("l");
  s.append(std::to_string(i));
  return s;
}

// Many unix listeners, in a temp dir, named l0..l(n-1).
std::vector<TestListener> many_listeners(const test::TempDir& dir, int n) {
  std::vector<TestListener> out;
  for (int i = 0; i < n; ++i) out.push_back(listen_on("unix:" + dir.file(lname(static_cast<size_t>(i)))));
  return out;
}

std::vector<ListenerOffer> offers_for(const std::vector<TestListener>& ls) {
  std::vector<ListenerOffer> offers;
  for (size_t i = 0; i < ls.size(); ++i)
    offers.push_back({lname(i), ls[i].bound.to_string(), ls[i].bound.to_string(), ls[i].fd.get()});
  return offers;
}

TEST(Successor, ThreeHundredListenersAreBatched) {
  ASSERT_GE(unit::raise_nofile(4096), 1024u);
  test::TempDir dir;
  auto ls = many_listeners(dir, 300);
  auto offers = offers_for(ls);

  // What goes on the wire: two LISTENERS batches (253 + 47), then LISTENERS_END 300.
  {
    auto p = HandoffChannel::create_pair();
    ASSERT_TRUE(p.ok());
    HandoffChannel sender(std::move(p.value().second));
    ASSERT_TRUE(send_listeners(sender, offers).ok());
    std::vector<size_t> batch_fds;
    for (;;) {
      auto m = p.value().first.receive(1s);
      ASSERT_TRUE(m.ok()) << m.error().message;
      if (m->type == MessageType::ListenersEnd) {
        EXPECT_EQ(decode_listeners_end(m->payload)->total, 300u);
        break;
      }
      ASSERT_EQ(m->type, MessageType::Listeners);
      auto entries = decode_listeners(m->payload);
      ASSERT_TRUE(entries.ok()) << entries.error().message;
      EXPECT_EQ(entries->size(), m->fds.size());
      batch_fds.push_back(m->fds.size());
    }
    ASSERT_GE(batch_fds.size(), 2u);
    EXPECT_EQ(batch_fds, (std::vector<size_t>{253, 47}));
  }

  // And the successor takes all of them, in order.
  Handoff h = make_handoff();
  ASSERT_TRUE(send_listeners(h.peer, offers).ok());
  const int before = open_fd_count();
  {
    auto r = h.successor.take_listeners(5s);
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_EQ(r->size(), 300u);
    for (size_t i = 0; i < 300; ++i) {
      EXPECT_EQ(r.value()[i].name, lname(i));
      EXPECT_EQ(r.value()[i].bound, ls[i].bound);
      EXPECT_EQ(unit::inode_of(r.value()[i].fd.get()), unit::inode_of(ls[i].fd.get()));
    }
    EXPECT_EQ(open_fd_count(), before + 300);
  }
  EXPECT_EQ(open_fd_count(), before);
  expect_hello(h.peer);
}

TEST(Successor, ExactlyOneFullBatchIsOneMessage) {
  ASSERT_GE(unit::raise_nofile(4096), 1024u);
  test::TempDir dir;
  auto ls = many_listeners(dir, static_cast<int>(kMaxFdsPerMessage));
  auto p = HandoffChannel::create_pair();
  ASSERT_TRUE(p.ok());
  HandoffChannel sender(std::move(p.value().second));
  ASSERT_TRUE(send_listeners(sender, offers_for(ls)).ok());
  auto first = p.value().first.receive(1s);
  ASSERT_TRUE(first.ok()) << first.error().message;
  EXPECT_EQ(first->type, MessageType::Listeners);
  EXPECT_EQ(first->fds.size(), kMaxFdsPerMessage);
  auto second = p.value().first.receive(1s);
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_EQ(second->type, MessageType::ListenersEnd);
}

// BUG (see report): send_listeners batches by fd count only. 200 listeners
// with long (valid) names and unix paths make a LISTENERS payload larger than
// kMaxPayload, so send() refuses it and the upgrade fails. Enable once batches
// are also cut by payload size.
TEST(Successor, LongEntriesAreBatchedByPayloadSizeToo) {
  ASSERT_GE(unit::raise_nofile(4096), 1024u);
  test::TempDir dir;
  std::vector<TestListener> ls;
  std::vector<ListenerOffer> offers;
  for (size_t i = 0; i < 200; ++i) {
    std::string file = lname(i);
    file.append(std::string(70, 'p'));
    ls.push_back(listen_on("unix:" + dir.file(file)));
    std::string name = lname(i);
    name.append(std::string(128 - name.size(), 'n'));
    offers.push_back({name, ls.back().bound.to_string(), ls.back().bound.to_string(), ls.back().fd.get()});
  }
  Handoff h = make_handoff();
  auto st = send_listeners(h.peer, offers);
  ASSERT_TRUE(st.ok()) << st.error().message;
  auto r = h.successor.take_listeners(5s);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->size(), 200u);
}

// ---- malformed hand-offs: each error names the fault ---------------------------------------------

TEST(SuccessorRefuses, ANonListeningSocket) {
  auto s = bound_socket(AF_INET, SOCK_STREAM);
  Handoff h = make_handoff();
  send_batch(h.peer, {{"x", "tcp://127.0.0.1:0", s.bound.to_string()}}, {s.fd.get()});
  send_end(h.peer, 1);
  expect_take_fails(h, "listener 'x' (" + s.bound.to_string() + "): socket is not listening (SO_ACCEPTCONN is 0)");
}

TEST(SuccessorRefuses, AUdpSocket) {
  auto s = bound_socket(AF_INET, SOCK_DGRAM);
  Handoff h = make_handoff();
  send_batch(h.peer, {{"x", "tcp://127.0.0.1:0", s.bound.to_string()}}, {s.fd.get()});
  send_end(h.peer, 1);
  expect_take_fails(h, "listener 'x' (" + s.bound.to_string() + "): socket type is SOCK_DGRAM, expected SOCK_STREAM");
}

TEST(SuccessorRefuses, AnIpv6SocketAnnouncedAsIpv4) {
  auto l = listen_on("tcp://[::1]:0");
  const std::string announced = "tcp://127.0.0.1:" + std::to_string(l.bound.port);
  Handoff h = make_handoff();
  send_batch(h.peer, {{"x", "tcp://127.0.0.1:0", announced}}, {l.fd.get()});
  send_end(h.peer, 1);
  expect_take_fails(h, "listener 'x' (" + announced + "): socket is AF_INET6, announced " + announced +
                           " needs AF_INET");
}

TEST(SuccessorRefuses, AUnixSocketAnnouncedAsTcp) {
  test::TempDir dir;
  auto l = listen_on("unix:" + dir.file("s"));
  Handoff h = make_handoff();
  send_batch(h.peer, {{"x", "tcp://127.0.0.1:0", "tcp://127.0.0.1:7"}}, {l.fd.get()});
  send_end(h.peer, 1);
  expect_take_fails(h, "listener 'x' (tcp://127.0.0.1:7): socket is AF_UNIX, announced tcp://127.0.0.1:7 needs AF_INET");
}

TEST(SuccessorRefuses, AnAddressMismatch) {
  auto l = listen_on("tcp://127.0.0.1:0");
  const uint16_t other = l.bound.port == 65535 ? 65534 : static_cast<uint16_t>(l.bound.port + 1);
  const std::string announced = with_port(l.bound, other).to_string();
  Handoff h = make_handoff();
  send_batch(h.peer, {{"x", "tcp://127.0.0.1:0", announced}}, {l.fd.get()});
  send_end(h.peer, 1);
  expect_take_fails(h, "listener 'x' (" + announced + "): socket is bound to " + l.bound.to_string() +
                           ", announced " + announced);
}

TEST(SuccessorRefuses, AUnixPathMismatch) {
  test::TempDir dir;
  auto l = listen_on("unix:" + dir.file("real"));
  const std::string announced = "unix:" + dir.file("other");
  Handoff h = make_handoff();
  send_batch(h.peer, {{"x", announced, announced}}, {l.fd.get()});
  send_end(h.peer, 1);
  expect_take_fails(h, "listener 'x' (" + announced + "): socket is bound to unix:" + dir.file("real") +
                           ", announced " + announced);
}

TEST(SuccessorRefuses, ARegularFile) {
  test::TempDir dir;
  UniqueFd file(::open(dir.file("f").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(file.valid());
  Handoff h = make_handoff();
  send_batch(h.peer, {{"x", "tcp://127.0.0.1:0", "tcp://127.0.0.1:7000"}}, {file.get()});
  send_end(h.peer, 1);
  expect_take_fails(h, "listener 'x' (tcp://127.0.0.1:7000): not a socket");
}

TEST(SuccessorRefuses, MoreEntriesThanFds) {
  auto a = listen_on("tcp://127.0.0.1:0");
  auto b = listen_on("tcp://127.0.0.1:0");
  Handoff h = make_handoff();
  send_batch(h.peer,
             {{"a", "tcp://127.0.0.1:0", a.bound.to_string()}, {"b", "tcp://127.0.0.1:0", b.bound.to_string()}},
             {a.fd.get()});
  send_end(h.peer, 2);
  expect_take_fails(h, "LISTENERS announces 2 listeners but carries 1 fds");
}

TEST(SuccessorRefuses, MoreFdsThanEntries) {
  auto a = listen_on("tcp://127.0.0.1:0");
  auto b = listen_on("tcp://127.0.0.1:0");
  Handoff h = make_handoff();
  send_batch(h.peer, {{"a", "tcp://127.0.0.1:0", a.bound.to_string()}}, {a.fd.get(), b.fd.get()});
  send_end(h.peer, 1);
  expect_take_fails(h, "LISTENERS announces 1 listeners but carries 2 fds");
}

TEST(SuccessorRefuses, AListenersEndTotalMismatch) {
  auto a = listen_on("tcp://127.0.0.1:0");
  Handoff h = make_handoff();
  send_batch(h.peer, {{"a", "tcp://127.0.0.1:0", a.bound.to_string()}}, {a.fd.get()});
  send_end(h.peer, 2);
  // The one valid listener that was received is closed again too.
  expect_take_fails(h, "LISTENERS_END counts 2 listeners, received 1");
}

TEST(SuccessorRefuses, AListenersEndCarryingFds) {
  auto a = listen_on("tcp://127.0.0.1:0");
  Handoff h = make_handoff();
  send_end(h.peer, 0, {a.fd.get()});
  expect_take_fails(h, "LISTENERS_END carries unexpected fds");
}

TEST(SuccessorRefuses, ADuplicateNameInOneBatch) {
  auto a = listen_on("tcp://127.0.0.1:0");
  auto b = listen_on("tcp://127.0.0.1:0");
  Handoff h = make_handoff();
  send_batch(h.peer,
             {{"dup", "tcp://127.0.0.1:0", a.bound.to_string()}, {"dup", "tcp://127.0.0.1:0", b.bound.to_string()}},
             {a.fd.get(), b.fd.get()});
  send_end(h.peer, 2);
  expect_take_fails(h, "listener 'dup' announced twice");
}

TEST(SuccessorRefuses, ADuplicateNameAcrossBatches) {
  auto a = listen_on("tcp://127.0.0.1:0");
  auto b = listen_on("tcp://127.0.0.1:0");
  Handoff h = make_handoff();
  send_batch(h.peer, {{"dup", "tcp://127.0.0.1:0", a.bound.to_string()}}, {a.fd.get()});
  send_batch(h.peer, {{"dup", "tcp://127.0.0.1:0", b.bound.to_string()}}, {b.fd.get()});
  send_end(h.peer, 2);
  expect_take_fails(h, "listener 'dup' announced twice");
}

TEST(SuccessorRefuses, AnInvalidName) {
  auto a = listen_on("tcp://127.0.0.1:0");
  Handoff h = make_handoff();
  send_batch(h.peer, {{"a b", "tcp://127.0.0.1:0", a.bound.to_string()}}, {a.fd.get()});
  send_end(h.peer, 1);
  expect_take_fails(h, "listener name 'a b' has a space, control or non-ASCII character");
}

TEST(SuccessorRefuses, AnUnparsableAddress) {
  auto a = listen_on("tcp://127.0.0.1:0");
  Handoff h = make_handoff();
  send_batch(h.peer, {{"x", "bogus", a.bound.to_string()}}, {a.fd.get()});
  send_end(h.peer, 1);
  expect_take_fails(h, "listener 'x' configured address: unknown scheme in 'bogus': expected tcp://HOST:PORT, "
                       "tcp://[HOST]:PORT or unix:PATH");

  Handoff h2 = make_handoff();
  send_batch(h2.peer, {{"x", "tcp://127.0.0.1:0", "tcp://127.0.0.1"}}, {a.fd.get()});
  send_end(h2.peer, 1);
  expect_take_fails(h2, "listener 'x' bound address: missing port in 'tcp://127.0.0.1'");
}

TEST(SuccessorRefuses, AnUnexpectedMessageType) {
  Handoff h = make_handoff();
  ASSERT_TRUE(h.peer.send(MessageType::Ready, encode(Ready{1})).ok());
  expect_take_fails(h, "expected LISTENERS, STATE or LISTENERS_END, got READY");
}

TEST(SuccessorRefuses, AnUnexpectedMessageCarryingFds) {
  auto a = listen_on("tcp://127.0.0.1:0");
  Handoff h = make_handoff();
  int fds[] = {a.fd.get()};
  ASSERT_TRUE(h.peer.send(MessageType::Commit, {}, fds).ok());
  expect_take_fails(h, "COMMIT carries unexpected fds");
}

TEST(SuccessorRefuses, AMalformedFrame) {
  auto a = listen_on("tcp://127.0.0.1:0");
  Handoff h = make_handoff();
  auto frame = encode_frame(MessageType::Listeners, encode(std::vector<ListenerEntry>{
                                                        {"a", "tcp://127.0.0.1:0", a.bound.to_string()}}));
  frame[5] = 2;  // version 2
  char control[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{frame.data(), frame.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  int fd = a.fd.get();
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  ASSERT_EQ(::sendmsg(h.peer.fd(), &msg, 0), static_cast<ssize_t>(frame.size()));
  expect_take_fails(h, "waiting for listeners: unsupported frame version 2, expected 1");
}

TEST(SuccessorRefuses, APeerClosingMidExchange) {
  auto a = listen_on("tcp://127.0.0.1:0");
  Handoff h = make_handoff();
  const int before = open_fd_count();
  // The predecessor answers HELLO with one LISTENERS batch and then goes away.
  std::thread predecessor([&] {
    auto hello = h.peer.receive(5s);
    EXPECT_TRUE(hello.ok() && hello->type == MessageType::Hello);
    send_batch(h.peer, {{"a", "tcp://127.0.0.1:0", a.bound.to_string()}}, {a.fd.get()});
    h.peer.close();
  });
  auto r = h.successor.take_listeners(5s);
  predecessor.join();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "waiting for listeners: peer closed the hand-off channel");
  EXPECT_EQ(open_fd_count(), before - 1) << "only the peer end the test closed may be gone";
}

TEST(SuccessorRefuses, NoMessageWithinTheTimeout) {
  Handoff h = make_handoff();
  const int before = open_fd_count();
  auto start = std::chrono::steady_clock::now();
  auto r = h.successor.take_listeners(80ms);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(std::regex_match(r.error().message, std::regex("waiting for listeners: no message within [0-9]+ ms")))
      << r.error().message;
  EXPECT_GE(took, 70ms);
  EXPECT_LT(took, 2s);
  EXPECT_EQ(open_fd_count(), before);
  expect_hello(h.peer);
}

TEST(SuccessorRefuses, ListenersWithoutListenersEndWithinTheTimeout) {
  auto a = listen_on("tcp://127.0.0.1:0");
  Handoff h = make_handoff();
  send_batch(h.peer, {{"a", "tcp://127.0.0.1:0", a.bound.to_string()}}, {a.fd.get()});
  const int before = open_fd_count();
  auto r = h.successor.take_listeners(80ms);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(std::regex_match(r.error().message, std::regex("waiting for listeners: no message within [0-9]+ ms")))
      << r.error().message;
  EXPECT_EQ(open_fd_count(), before) << "the listener received before the timeout leaked";
}

// ---- READY / COMMIT ------------------------------------------------------------------------------

void expect_ready(HandoffChannel& peer) {
  auto m = peer.receive(1s);
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_EQ(m->type, MessageType::Ready);
  auto ready = decode_ready(m->payload);
  ASSERT_TRUE(ready.ok()) << ready.error().message;
  EXPECT_EQ(ready->pid, static_cast<uint32_t>(::getpid()));
}

TEST(SuccessorConfirm, ReadyThenCommit) {
  Handoff h = make_handoff();
  ASSERT_TRUE(h.peer.send(MessageType::Commit, {}).ok());
  auto st = h.successor.confirm_ready(1s);
  ASSERT_TRUE(st.ok()) << st.error().message;
  expect_ready(h.peer);
  // After COMMIT the channel stays open for DRAINING reports: the caller
  // takes it, and closing it is what the predecessor then sees.
  auto channel = h.successor.take_channel();
  ASSERT_TRUE(channel.open());
  ASSERT_TRUE(h.peer.send(MessageType::Draining, encode(std::vector<GenerationReport>{{1, 2, 3}})).ok());
  auto report = channel.receive(1s);
  ASSERT_TRUE(report.ok()) << report.error().message;
  auto decoded = decode_draining(report->payload);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded.value(), (std::vector<GenerationReport>{{1, 2, 3}}));
  channel.close();
  auto closed = h.peer.receive(1s);
  ASSERT_FALSE(closed.ok());
  EXPECT_EQ(closed.error().message, "peer closed the hand-off channel");
}

TEST(SuccessorConfirm, FullExchange) {
  auto l = listen_on("tcp://127.0.0.1:0");
  Handoff h = make_handoff();
  ASSERT_TRUE(send_listeners(h.peer, {{"echo", "tcp://127.0.0.1:0", l.bound.to_string(), l.fd.get()}}).ok());
  ASSERT_TRUE(h.peer.send(MessageType::Commit, {}).ok());
  auto got = h.successor.take_listeners(1s);
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_EQ(got->size(), 1u);
  auto st = h.successor.confirm_ready(1s);
  ASSERT_TRUE(st.ok()) << st.error().message;
  expect_hello(h.peer);
  expect_ready(h.peer);
}

TEST(SuccessorConfirm, PeerClosesInsteadOfCommitting) {
  Handoff h = make_handoff();
  std::thread predecessor([&] {
    auto ready = h.peer.receive(5s);
    EXPECT_TRUE(ready.ok() && ready->type == MessageType::Ready);
    h.peer.close();
  });
  auto st = h.successor.confirm_ready(5s);
  predecessor.join();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "waiting for COMMIT: peer closed the hand-off channel");
}

TEST(SuccessorConfirm, NoCommitWithinTheTimeout) {
  Handoff h = make_handoff();
  auto st = h.successor.confirm_ready(40ms);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "waiting for COMMIT: no message within 40 ms");
  expect_ready(h.peer);
}

TEST(SuccessorConfirm, SomethingElseInsteadOfCommit) {
  Handoff h = make_handoff();
  send_end(h.peer, 0);
  auto st = h.successor.confirm_ready(1s);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "expected COMMIT, got LISTENERS_END");
}

TEST(SuccessorConfirm, CommitWithAPayload) {
  Handoff h = make_handoff();
  ASSERT_TRUE(h.peer.send(MessageType::Commit, std::vector<uint8_t>{1}).ok());
  auto st = h.successor.confirm_ready(1s);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "COMMIT payload must be empty");
}

TEST(SuccessorConfirm, CommitCarryingFds) {
  auto [rd, wr] = unit::make_pipe();
  Handoff h = make_handoff();
  int fds[] = {wr.get()};
  ASSERT_TRUE(h.peer.send(MessageType::Commit, {}, fds).ok());
  const int before = open_fd_count();
  auto st = h.successor.confirm_ready(1s);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "COMMIT carries unexpected fds");
  EXPECT_EQ(open_fd_count(), before);
  wr.reset();
  EXPECT_TRUE(unit::pipe_writers_gone(rd.get()));
}

// ---- from_environment --------------------------------------------------------------------------

constexpr const char* kVar = "BATON_UNIT_TEST_HANDOFF_FD";

TEST(SuccessorFromEnvironment, UnsetMeansAFreshStart) {
  unit::ScopedEnv env(kVar, std::nullopt);
  auto r = Successor::from_environment(kVar);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r.value().has_value());
}

TEST(SuccessorFromEnvironment, NotANumber) {
  for (const char* text : {"abc", "", "12abc", "-3", " 5"}) {
    SCOPED_TRACE(text);
    unit::ScopedEnv env(kVar, std::string(text));
    auto r = Successor::from_environment(kVar);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, std::string(kVar) + "='" + text + "' is not a file descriptor number");
    EXPECT_EQ(std::getenv(kVar), nullptr) << "the variable must be removed even when it is wrong";
  }
}

TEST(SuccessorFromEnvironment, AnFdThatIsNotASeqpacketSocket) {
  auto [a, b] = unit::raw_socketpair(SOCK_STREAM);
  const int fd = a.release();
  unit::ScopedEnv env(kVar, std::to_string(fd));
  auto r = Successor::from_environment(kVar);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, std::string(kVar) + "=" + std::to_string(fd) + " does not name a SOCK_SEQPACKET socket");
  // Not ours to close: the wrong number may name someone else's descriptor.
  EXPECT_TRUE(unit::fd_is_open(fd));
  ::close(fd);
}

TEST(SuccessorFromEnvironment, ASeqpacketSocketBecomesTheChannel) {
  auto [a, b] = unit::raw_socketpair(SOCK_SEQPACKET);
  const int fd = a.release();
  unit::ScopedEnv env(kVar, std::to_string(fd));
  unit::ScopedEnv version(kVersionVariable, std::nullopt);
  auto r = Successor::from_environment(kVar);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(r.value().has_value());
  EXPECT_EQ(std::getenv(kVar), nullptr) << "our own children must not see the variable";

  // It talks over exactly that fd: a hand-off of zero listeners goes through,
  // in version 1, as a predecessor that advertises no version speaks only that.
  HandoffChannel peer(std::move(b));
  send_end(peer, 0);
  auto got = r.value()->take_listeners(1s);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_TRUE(got->empty());
  expect_hello(peer, 1);
}

// The version spoken is the lower of what the predecessor advertises and ours.
TEST(SuccessorFromEnvironment, SpeaksTheLowerOfTheTwoVersions) {
  const std::string parent = ":" + std::to_string(::getppid());
  const std::vector<std::pair<std::string, uint16_t>> cases{
      {"1" + parent, 1}, {"2" + parent, 2}, {"99" + parent, kProtocolVersion}};
  for (const auto& [advertised, expected] : cases) {
    SCOPED_TRACE(advertised);
    auto [a, b] = unit::raw_socketpair(SOCK_SEQPACKET);
    unit::ScopedEnv env(kVar, std::to_string(a.release()));
    unit::ScopedEnv version(kVersionVariable, advertised);
    auto r = Successor::from_environment(kVar);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r.value()->version(), expected);
    EXPECT_EQ(std::getenv(kVersionVariable), nullptr) << "our own children must not see the variable";
  }
}

// A version 1 generation passes its whole environment on: what its own
// predecessor advertised to it reaches its successor, which must not take it
// for an offer from its parent (it would speak version 2 to a version 1 peer).
// A bare version (a build before VERSION:PID) names no parent either.
TEST(SuccessorFromEnvironment, AnAdvertisementFromAnotherPidOrNoneIsIgnored) {
  for (const std::string& text : {"2:" + std::to_string(::getppid() + 1), std::string("2")}) {
    SCOPED_TRACE(text);
    auto [a, b] = unit::raw_socketpair(SOCK_SEQPACKET);
    unit::ScopedEnv env(kVar, std::to_string(a.release()));
    unit::ScopedEnv version(kVersionVariable, text);
    auto r = Successor::from_environment(kVar);
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r.value()->version(), 1);
    EXPECT_EQ(std::getenv(kVersionVariable), nullptr);
  }
}

TEST(SuccessorFromEnvironment, AMalformedAdvertisementIsRefused) {
  for (const char* text : {"0:1", "abc", "", "-1", "0", "2:", ":5", "2:x", "2:0", "0:5"}) {
    SCOPED_TRACE(text);
    auto [a, b] = unit::raw_socketpair(SOCK_SEQPACKET);
    unit::ScopedEnv env(kVar, std::to_string(a.get()));  // refused before it is adopted: `a` still owns it
    unit::ScopedEnv version(kVersionVariable, std::string(text));
    auto r = Successor::from_environment(kVar);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message, std::string(kVersionVariable) + "='" + text + "' is not VERSION:PID");
  }
}

// ---- STATE (protocol 3): the caller's own state and fds ------------------------------

TEST(SuccessorState, ComesWithItsFdsInOrderAndOnlyOnce) {
  auto tcp = listen_on("tcp://127.0.0.1:0");
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd r(pipe_fds[0]), w(pipe_fds[1]);
  Handoff h = make_handoff();
  std::vector<ListenerOffer> offers{{"echo", "tcp://127.0.0.1:0", tcp.bound.to_string(), tcp.fd.get()}};
  auto messages = listener_messages(offers, {{"app", "{\"v\":1}", {r.get(), w.get()}}, {"other", "", {}}});
  ASSERT_TRUE(messages.ok()) << messages.error().message;
  for (const auto& m : messages.value()) ASSERT_TRUE(h.peer.send(m.type, m.payload, m.fds).ok());
  auto got = h.successor.take_listeners(2s);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->size(), 1u);
  auto state = h.successor.take_state();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].key, "app");
  EXPECT_EQ(state[0].data, "{\"v\":1}");
  ASSERT_EQ(state[0].fds.size(), 2u);
  // The same pipe, in the order sent: what goes into the write end comes out of the read end.
  ASSERT_EQ(::write(state[0].fds[1].get(), "x", 1), 1);
  char c = 0;
  EXPECT_EQ(::read(r.get(), &c, 1), 1);
  EXPECT_EQ(c, 'x');
  EXPECT_EQ(state[1].key, "other");
  EXPECT_TRUE(state[1].fds.empty());
  EXPECT_TRUE(h.successor.take_state().empty()) << "taken once";
}

TEST(SuccessorState, AKeySentTwiceIsRefused) {
  Handoff h = make_handoff();
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(h.peer.send(MessageType::State, encode_state("app", "x")).ok());
  send_end(h.peer, 0);
  auto got = h.successor.take_listeners(2s);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().message, "STATE 'app' sent twice");
}

TEST(SuccessorState, IsNotAMessageOfProtocolTwo) {
  Handoff h = make_handoff(2);
  ASSERT_TRUE(h.peer.send(MessageType::State, encode_state("app", "x")).ok());
  auto got = h.successor.take_listeners(2s);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().message, "expected LISTENERS, STATE or LISTENERS_END, got STATE");
}

TEST(SuccessorState, MalformedBodiesAreErrors) {
  EXPECT_EQ(decode_state(encode_state("", "x")).error().message, "STATE: empty key");
  auto bytes = encode_state("app", "abcdef");
  bytes.pop_back();
  EXPECT_EQ(decode_state(bytes).error().message, "payload truncated in field 'data'");
  bytes = encode_state("app", "x");
  bytes.push_back(0);
  EXPECT_EQ(decode_state(bytes).error().message, "STATE payload has 1 unexpected trailing bytes");
  auto ok = decode_state(encode_state("app", std::string("a\0b", 3)));
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->second, std::string("a\0b", 3));
  // Too many fds for one message is the sender's error, before anything is sent.
  std::vector<int> fds(kMaxFdsPerMessage + 1, 0);
  EXPECT_FALSE(listener_messages({}, {{"app", "", fds}}).ok());
}

// ---- STATE_UPDATE (protocol 4): the caller's live state ------------------------------

TEST(SuccessorStateUpdate, ComeBetweenReadyAndCommitInOrderAndOnlyOnce) {
  Handoff h = make_handoff();
  ASSERT_TRUE(h.peer.send(MessageType::StateUpdate, encode_state("metrics", "{\"a\":1}")).ok());
  ASSERT_TRUE(h.peer.send(MessageType::StateUpdate, encode_state("metrics", "{\"a\":2}")).ok());
  ASSERT_TRUE(h.peer.send(MessageType::StateUpdate, encode_state("history", "[]")).ok());
  ASSERT_TRUE(h.peer.send(MessageType::Commit, {}).ok());
  auto st = h.successor.confirm_ready(2s);
  ASSERT_TRUE(st.ok()) << st.error().message;
  expect_ready(h.peer);
  EXPECT_EQ(h.successor.take_state_updates(),
            (std::vector<StateUpdate>{{"metrics", "{\"a\":1}"}, {"metrics", "{\"a\":2}"}, {"history", "[]"}}));
  EXPECT_TRUE(h.successor.take_state_updates().empty()) << "taken once";
}

TEST(SuccessorStateUpdate, CarryingFdsIsRefusedAndTheFdsClosed) {
  auto [rd, wr] = unit::make_pipe();
  Handoff h = make_handoff();
  int fds[] = {wr.get()};
  ASSERT_TRUE(h.peer.send(MessageType::StateUpdate, encode_state("metrics", "{}"), fds).ok());
  const int before = open_fd_count();
  auto st = h.successor.confirm_ready(1s);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "STATE_UPDATE carries unexpected fds");
  EXPECT_EQ(open_fd_count(), before);
  wr.reset();
  EXPECT_TRUE(unit::pipe_writers_gone(rd.get()));
}

TEST(SuccessorStateUpdate, AMalformedOneIsRefused) {
  Handoff h = make_handoff();
  auto bytes = encode_state("metrics", "{}");
  bytes.pop_back();
  ASSERT_TRUE(h.peer.send(MessageType::StateUpdate, bytes).ok());
  auto st = h.successor.confirm_ready(1s);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "bad STATE_UPDATE: payload truncated in field 'data'");
}

TEST(SuccessorStateUpdate, IsNotAMessageOfProtocolThree) {
  Handoff h = make_handoff(3);
  ASSERT_TRUE(h.peer.send(MessageType::StateUpdate, encode_state("metrics", "{}")).ok());
  auto st = h.successor.confirm_ready(1s);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "expected COMMIT, got STATE_UPDATE");
}

}  // namespace
}  // namespace baton::handoff
