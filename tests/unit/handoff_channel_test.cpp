// HandoffChannel over a real SOCK_SEQPACKET socketpair: messages with fds, the
// receive errors, and raw malformed datagrams injected on the peer end. After
// every malformed input the process holds exactly the fds it held before: the
// channel closes whatever arrived with a message it refuses.

#include "baton/handoff/channel.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "baton/handoff/channel_link.h"
#include "baton/handoff/protocol.h"
#include "unit_util.h"

namespace baton::handoff {
namespace {

using namespace std::chrono_literals;
using unit::make_pipe;
using unit::open_fd_count;
using unit::pipe_writers_gone;
using Bytes = std::vector<uint8_t>;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Both ends of a fresh channel: `ours` is the library's end, `peer` the other
// one wrapped as a channel too (it sends and receives raw when a test wants).
struct Pair {
  HandoffChannel ours{UniqueFd()};
  HandoffChannel peer{UniqueFd()};
};

Pair make_pair() {
  auto p = HandoffChannel::create_pair();
  if (!p.ok()) throw std::runtime_error(p.error().message);
  Pair out;
  out.ours = std::move(p.value().first);
  out.peer = HandoffChannel(std::move(p.value().second));
  return out;
}

// Sends `bytes` as one datagram from `fd`, with `fds` as SCM_RIGHTS.
ssize_t raw_send(int fd, const Bytes& bytes, const std::vector<int>& fds = {}) { return send_datagram(fd, bytes, fds); }

using unit::header;

// ---- the good path ------------------------------------------------------------------

TEST(Channel, CreatePairGivesCloexecSeqpacketEnds) {
  auto p = HandoffChannel::create_pair();
  ASSERT_TRUE(p.ok()) << p.error().message;
  for (int fd : {p->first.fd(), p->second.get()}) {
    EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC);
    int type = 0;
    socklen_t len = sizeof type;
    ASSERT_EQ(::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len), 0);
    EXPECT_EQ(type, SOCK_SEQPACKET);
  }
  EXPECT_TRUE(p->first.open());
}

TEST(Channel, MessageAndFdRoundTrip) {
  Pair c = make_pair();
  auto [rd, wr] = make_pipe();
  Bytes payload = encode(Hello{42, kProtocolVersion});
  int fds[] = {wr.get()};
  ASSERT_TRUE(c.ours.send(MessageType::Hello, payload, fds).ok());

  auto m = c.peer.receive(1s);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->type, MessageType::Hello);
  EXPECT_EQ(m->payload, payload);
  ASSERT_EQ(m->fds.size(), 1u);
  int got = m->fds[0].get();
  EXPECT_NE(got, wr.get());
  EXPECT_TRUE(::fcntl(got, F_GETFD) & FD_CLOEXEC) << "received fds must be close-on-exec";

  // The received fd is the same pipe: bytes written to it come out of our read end.
  ASSERT_EQ(::write(got, "ping", 4), 4);
  char buf[8] = {};
  ASSERT_EQ(::read(rd.get(), buf, sizeof buf), 4);
  EXPECT_EQ(std::string(buf, 4), "ping");

  // The sender keeps its fd: it is still open and usable.
  ASSERT_EQ(::write(wr.get(), "x", 1), 1);
  ASSERT_EQ(::read(rd.get(), buf, 1), 1);
}

TEST(Channel, SeveralFdsKeepTheirOrder) {
  Pair c = make_pair();
  auto [r0, w0] = make_pipe();
  auto [r1, w1] = make_pipe();
  auto [r2, w2] = make_pipe();
  int fds[] = {w0.get(), w1.get(), w2.get()};
  ASSERT_TRUE(c.peer.send(MessageType::Listeners, Bytes{1, 2, 3}, fds).ok());
  auto m = c.ours.receive(1s);
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_EQ(m->fds.size(), 3u);
  const int readers[] = {r0.get(), r1.get(), r2.get()};
  for (int i = 0; i < 3; ++i) {
    char out = static_cast<char>('a' + i);
    ASSERT_EQ(::write(m->fds[i].get(), &out, 1), 1);
    char in = 0;
    ASSERT_EQ(::read(readers[i], &in, 1), 1);
    EXPECT_EQ(in, out) << "fd " << i << " arrived out of order";
  }
}

TEST(Channel, ExactlyTheMaximumNumberOfFdsTravels) {
  unit::raise_nofile(4 * kMaxFdsPerMessage);
  Pair c = make_pair();
  auto [rd, wr] = make_pipe();
  std::vector<int> fds(kMaxFdsPerMessage, wr.get());
  const int before = open_fd_count();
  ASSERT_TRUE(c.ours.send(MessageType::Listeners, Bytes{}, fds).ok());
  {
    auto m = c.peer.receive(1s);
    ASSERT_TRUE(m.ok()) << m.error().message;
    EXPECT_EQ(m->fds.size(), kMaxFdsPerMessage);
    EXPECT_EQ(open_fd_count(), before + static_cast<int>(kMaxFdsPerMessage));
  }
  EXPECT_EQ(open_fd_count(), before);
}

TEST(Channel, TryReceiveOnAnEmptyChannelIsNothing) {
  Pair c = make_pair();
  auto r = c.ours.try_receive();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r.value().has_value());
}

TEST(Channel, MessagesArriveOneAtATimeInOrder) {
  Pair c = make_pair();
  ASSERT_TRUE(c.peer.send(MessageType::ListenersEnd, encode(ListenersEnd{1})).ok());
  ASSERT_TRUE(c.peer.send(MessageType::Commit, Bytes{}).ok());
  auto a = c.ours.receive(1s);
  auto b = c.ours.receive(1s);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->type, MessageType::ListenersEnd);
  EXPECT_EQ(b->type, MessageType::Commit);
  EXPECT_TRUE(b->payload.empty());
}

// ---- receive errors -------------------------------------------------------------------

TEST(Channel, ReceiveTimesOut) {
  Pair c = make_pair();
  auto start = std::chrono::steady_clock::now();
  auto m = c.ours.receive(60ms);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().message, "no message within 60 ms");
  EXPECT_GE(took, 55ms);
  EXPECT_LT(took, 2s);
}

TEST(Channel, PeerClosed) {
  Pair c = make_pair();
  c.peer.close();
  auto m = c.ours.receive(1s);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().message, "peer closed the hand-off channel");
  auto t = c.ours.try_receive();
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().message, "peer closed the hand-off channel");
}

TEST(Channel, QueuedMessagesAreStillDeliveredAfterThePeerCloses) {
  Pair c = make_pair();
  ASSERT_TRUE(c.peer.send(MessageType::Commit, Bytes{}).ok());
  c.peer.close();
  auto m = c.ours.receive(1s);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->type, MessageType::Commit);
  auto closed = c.ours.receive(1s);
  ASSERT_FALSE(closed.ok());
  EXPECT_EQ(closed.error().message, "peer closed the hand-off channel");
}

// The peer closes with a message of ours unread: the kernel reports
// ECONNRESET once. What the peer sent before closing (its last word: a
// SUCCEEDED, an ACK) must still be read, then the EOF.
TEST(Channel, APeerThatClosesWithOurMessageUnreadIsStillHeardToTheEnd) {
  Pair c = make_pair();
  ASSERT_TRUE(c.ours.send(MessageType::Draining, Bytes{0, 0}).ok());  // never read by the peer
  ASSERT_TRUE(c.peer.send(MessageType::Succeeded, Bytes{}).ok());
  c.peer.close();
  auto m = c.ours.try_receive();
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_TRUE(m.value().has_value());
  EXPECT_EQ(m.value()->type, MessageType::Succeeded);
  auto closed = c.ours.try_receive();
  ASSERT_FALSE(closed.ok());
  EXPECT_EQ(closed.error().message, "peer closed the hand-off channel");
}

// Runs a ChannelLink on `ours` in a loop of its own: `before` does what the
// test needs with the link open, then the loop runs until the link closes.
// Returns what the link reported, in order ("SUCCEEDED", "closed: why").
template <class Before>
std::vector<std::string> link_events(HandoffChannel ours, Before before) {
  uv_loop_t loop;
  EXPECT_EQ(uv_loop_init(&loop), 0);
  std::vector<std::string> events;
  {
    ChannelLink link(
        &loop, [&](Message& m) { events.push_back(to_string(m.type)); },
        [&](const std::string& why) { events.push_back("closed: " + why); });
    EXPECT_TRUE(link.open(std::move(ours)).ok());
    before(link);
    for (int i = 0; i < 100 && link.is_open(); ++i) uv_run(&loop, UV_RUN_ONCE);
    EXPECT_FALSE(link.is_open());
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop), 0);
  return events;
}

const std::vector<std::string> kLastWordThenClose{"SUCCEEDED", std::string("closed: ") + kPeerClosed};

// The same through ChannelLink in a loop, where the reset shows as POLLERR
// (libuv stops the poll handle and says EBADF): the message still arrives
// before the link says it is closed.
TEST(ChannelLinkReset, ThePeersLastMessageArrivesBeforeTheClose) {
  Pair c = make_pair();
  ASSERT_TRUE(c.ours.send(MessageType::Draining, Bytes{0, 0}).ok());  // never read by the peer
  ASSERT_TRUE(c.peer.send(MessageType::Succeeded, Bytes{}).ok());
  c.peer.close();
  EXPECT_EQ(link_events(std::move(c.ours), [](ChannelLink&) {}), kLastWordThenClose);
}

// A send that fails on the reset (ECONNRESET, then EPIPE) must not close the
// link before the peer's last message is read: that message (SUCCEEDED) is
// what tells the old generation not to resume.
TEST(ChannelLinkReset, AFailedSendStillLetsThePeersLastMessageIn) {
  Pair c = make_pair();
  HandoffChannel& peer = c.peer;
  auto events = link_events(std::move(c.ours), [&](ChannelLink& link) {
    ASSERT_TRUE(link.send(MessageType::Draining, Bytes{0, 0}).ok());  // the peer never reads it
    ASSERT_TRUE(peer.send(MessageType::Succeeded, Bytes{}).ok());
    peer.close();
    // Before the loop has read anything: the send fails, and says why.
    EXPECT_FALSE(link.send(MessageType::Draining, Bytes{0, 0}).ok());
    EXPECT_FALSE(link.can_send());
    EXPECT_FALSE(link.send(MessageType::Draining, Bytes{0, 0}).ok()) << "nothing is sent after a failed send";
  });
  EXPECT_EQ(events, kLastWordThenClose);
}

TEST(Channel, ExpectMessageNamesWhatCameInstead) {
  Pair c = make_pair();
  ASSERT_TRUE(c.peer.send(MessageType::Ready, encode(Ready{1})).ok());
  auto m = expect_message(c.ours, MessageType::Commit, 1s);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().message, "expected COMMIT, got READY");

  auto t = expect_message(c.ours, MessageType::Commit, 20ms);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.error().message, "waiting for COMMIT: no message within 20 ms");

  ASSERT_TRUE(c.peer.send(MessageType::Commit, Bytes{}).ok());
  auto ok = expect_message(c.ours, MessageType::Commit, 1s);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  EXPECT_EQ(ok->type, MessageType::Commit);
}

// ---- send limits ---------------------------------------------------------------------------

TEST(Channel, SendRefusesMoreFdsThanOneMessageCarries) {
  Pair c = make_pair();
  auto [rd, wr] = make_pipe();
  std::vector<int> fds(kMaxFdsPerMessage + 1, wr.get());
  auto st = c.ours.send(MessageType::Listeners, Bytes{}, fds);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "send LISTENERS: 254 fds, more than the 253 one message can carry");
  // Nothing was sent.
  auto r = c.peer.try_receive();
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_FALSE(r.value().has_value());

  std::vector<int> many(300, wr.get());
  auto st2 = c.ours.send(MessageType::Listeners, Bytes{}, many);
  ASSERT_FALSE(st2.ok());
  EXPECT_EQ(st2.error().message, "send LISTENERS: 300 fds, more than the 253 one message can carry");
}

TEST(Channel, SendRefusesAnOversizedPayload) {
  Pair c = make_pair();
  Bytes big(kMaxPayload + 1, 0);
  auto st = c.ours.send(MessageType::Hello, big);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message, "send HELLO: payload of 61441 bytes exceeds 61440");
  Bytes max(kMaxPayload, 7);
  ASSERT_TRUE(c.ours.send(MessageType::Hello, max).ok());
  auto m = c.peer.receive(1s);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->payload, max);
}

TEST(Channel, SendToAClosedPeerFails) {
  Pair c = make_pair();
  c.peer.close();
  auto st = c.ours.send(MessageType::Hello, encode(Hello{}));
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(contains(st.error().message, "sendmsg HELLO")) << st.error().message;
}

// ---- malformed input: every received fd is closed ------------------------------------------

// Sends a malformed datagram carrying the write ends of a pipe, expects
// try_receive to fail with `expected_error` in its message, and checks that no
// fd was left behind: the fd count is what it was, and once our own write end
// is closed the pipe sees EOF (no copy of it survives anywhere in the process).
void expect_refused_without_leak(const Bytes& datagram, int fd_copies, const std::string& expected_error,
                                 size_t max_fds = kMaxFdsPerMessage) {
  Pair c = make_pair();
  auto [rd, wr] = make_pipe();
  const int before = open_fd_count();
  std::vector<int> fds(static_cast<size_t>(fd_copies), wr.get());
  ASSERT_EQ(raw_send(c.peer.fd(), datagram, fds), static_cast<ssize_t>(datagram.size())) << std::strerror(errno);

  auto r = c.ours.try_receive(max_fds);
  ASSERT_FALSE(r.ok()) << "a malformed datagram was accepted";
  EXPECT_TRUE(contains(r.error().message, expected_error)) << r.error().message;
  EXPECT_EQ(open_fd_count(), before) << "received fds leaked";
  wr.reset();
  EXPECT_TRUE(pipe_writers_gone(rd.get())) << "a received copy of the pipe's write end is still open";

  // The bad datagram is consumed: the channel goes on with the next message.
  ASSERT_TRUE(c.peer.send(MessageType::Commit, Bytes{}).ok());
  auto next = c.ours.receive(1s);
  ASSERT_TRUE(next.ok()) << next.error().message;
  EXPECT_EQ(next->type, MessageType::Commit);
}

TEST(ChannelMalformed, BadMagicWithAnFd) {
  expect_refused_without_leak(header(0xdeadbeef, kFrameVersion, 2, 0), 1,
                              "bad magic 0xdeadbeef, expected 0x4241544e");
}

TEST(ChannelMalformed, BadMagicWithSeveralFds) {
  expect_refused_without_leak(header(0x00000000, kFrameVersion, 2, 0), 5, "bad magic 0x00000000");
}

TEST(ChannelMalformed, WrongVersion) {
  expect_refused_without_leak(header(kMagic, 7, 2, 0), 1, "unsupported frame version 7, expected 1");
}

TEST(ChannelMalformed, UnknownTypeZero) {
  expect_refused_without_leak(header(kMagic, kFrameVersion, 0, 0), 1, "unknown message type 0");
}

TEST(ChannelMalformed, UnknownType99) {
  expect_refused_without_leak(header(kMagic, kFrameVersion, 99, 0), 2, "unknown message type 99");
}

TEST(ChannelMalformed, LengthLongerThanDatagram) {
  Bytes d = header(kMagic, kFrameVersion, 2, 100);
  d.resize(d.size() + 10, 0);
  expect_refused_without_leak(d, 1, "length field says 100 payload bytes, datagram carries 10");
}

TEST(ChannelMalformed, LengthShorterThanDatagram) {
  Bytes d = header(kMagic, kFrameVersion, 2, 1);
  d.resize(d.size() + 10, 0);
  expect_refused_without_leak(d, 1, "length field says 1 payload bytes, datagram carries 10");
}

TEST(ChannelMalformed, TruncatedHeader) {
  expect_refused_without_leak(Bytes{'B', 'A', 'T', 'N', 0}, 1, "message truncated: 5 bytes, header needs 12");
}

TEST(ChannelMalformed, OversizedDatagramIsTruncated) {
  // Larger than the receive buffer (kHeaderSize + kMaxPayload + 1): the kernel cuts it.
  Bytes d = header(kMagic, kFrameVersion, 2, static_cast<uint32_t>(kMaxPayload + 100));
  d.resize(kHeaderSize + kMaxPayload + 100, 0);
  expect_refused_without_leak(d, 1, "MSG_TRUNC");
}

TEST(ChannelMalformed, ControlDataTruncated) {
  // More fds sent than the control buffer has room for: MSG_CTRUNC. Those that
  // arrived are closed, the kernel drops the rest. A buffer sized for one fd
  // (CMSG_SPACE(4) = 24 on x86-64) is padded to hold two (CMSG_LEN(8) = 24),
  // so send the first count that really does not fit: 3 there.
  size_t n = 2;
  while (CMSG_LEN(n * sizeof(int)) <= CMSG_SPACE(sizeof(int))) ++n;
  expect_refused_without_leak(encode_frame(MessageType::Listeners, Bytes{}), static_cast<int>(n), "MSG_CTRUNC", 1);
}

TEST(ChannelMalformed, ControlDataTruncatedWithTwoFdsAndRoomForNone) {
  expect_refused_without_leak(encode_frame(MessageType::Listeners, Bytes{}), 2, "MSG_CTRUNC", 0);
}

TEST(ChannelMalformed, ForeignControlMessage) {
  // With SO_PASSCRED on our end every datagram brings SCM_CREDENTIALS too.
  Pair c = make_pair();
  int one = 1;
  ASSERT_EQ(::setsockopt(c.ours.fd(), SOL_SOCKET, SO_PASSCRED, &one, sizeof one), 0);
  auto [rd, wr] = make_pipe();
  const int before = open_fd_count();
  int fds[] = {wr.get()};
  ASSERT_TRUE(c.peer.send(MessageType::Commit, Bytes{}, fds).ok());
  auto r = c.ours.try_receive();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "recvmsg: unexpected control message (not SCM_RIGHTS)");
  EXPECT_EQ(open_fd_count(), before);
  wr.reset();
  EXPECT_TRUE(pipe_writers_gone(rd.get()));
}

TEST(ChannelMalformed, ReceiveReportsTheSameErrorsAsTryReceive) {
  Pair c = make_pair();
  auto [rd, wr] = make_pipe();
  const int before = open_fd_count();
  ASSERT_GT(raw_send(c.peer.fd(), header(1, 1, 1, 0), {wr.get()}), 0);
  auto r = c.ours.receive(1s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "bad magic 0x00000001, expected 0x4241544e");
  EXPECT_EQ(open_fd_count(), before);
}

// BUG (see report): the receive buffer is kHeaderSize + kMaxPayload + 1 bytes
// "so an oversized one shows as MSG_TRUNC", but a datagram of exactly that size
// fits, is not truncated, and decode_frame (which never checks length against
// kMaxPayload) accepts a payload one byte over the limit. Enable once fixed.
TEST(ChannelMalformed, PayloadOneByteOverTheLimitIsRefused) {
  Pair c = make_pair();
  Bytes d = header(kMagic, kFrameVersion, 2, static_cast<uint32_t>(kMaxPayload + 1));
  d.resize(kHeaderSize + kMaxPayload + 1, 0);
  ASSERT_EQ(raw_send(c.peer.fd(), d), static_cast<ssize_t>(d.size()));
  auto r = c.ours.try_receive();
  EXPECT_FALSE(r.ok()) << "a payload of kMaxPayload + 1 bytes was accepted";
}

// ---- adopt --------------------------------------------------------------------------------

TEST(ChannelAdopt, RefusesAStreamSocketpair) {
  auto [a, b] = unit::raw_socketpair(SOCK_STREAM);
  const int fd = a.get();
  const int before = open_fd_count();
  auto r = HandoffChannel::adopt(std::move(a));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "hand-off fd " + std::to_string(fd) + " is not an AF_UNIX SOCK_SEQPACKET socket");
  EXPECT_EQ(open_fd_count(), before - 1) << "the refused fd was handed over and must be closed";
}

TEST(ChannelAdopt, RefusesADatagramSocketpairAPipeAndATcpSocket) {
  auto [a, b] = unit::raw_socketpair(SOCK_DGRAM);
  EXPECT_FALSE(HandoffChannel::adopt(std::move(a)).ok());
  auto [rd, wr] = make_pipe();
  EXPECT_FALSE(HandoffChannel::adopt(std::move(rd)).ok());
  UniqueFd tcp(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(tcp.valid());
  EXPECT_FALSE(HandoffChannel::adopt(std::move(tcp)).ok());
}

TEST(ChannelAdopt, AcceptsASeqpacketSocketAndSetsASendTimeout) {
  auto [a, b] = unit::raw_socketpair(SOCK_SEQPACKET);
  auto r = HandoffChannel::adopt(std::move(a));
  ASSERT_TRUE(r.ok()) << r.error().message;
  timeval tv{};
  socklen_t len = sizeof tv;
  ASSERT_EQ(::getsockopt(r->fd(), SOL_SOCKET, SO_SNDTIMEO, &tv, &len), 0);
  EXPECT_GT(tv.tv_sec * 1000000 + tv.tv_usec, 0) << "a sender must never block for ever";

  HandoffChannel other(std::move(b));
  ASSERT_TRUE(r->send(MessageType::Ready, encode(Ready{9})).ok());
  auto m = other.receive(1s);
  ASSERT_TRUE(m.ok()) << m.error().message;
  EXPECT_EQ(m->type, MessageType::Ready);
}

}  // namespace
}  // namespace baton::handoff
