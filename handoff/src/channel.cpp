#include "baton/handoff/channel.h"

#include <fcntl.h>

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

namespace baton::handoff {
namespace {

using Clock = std::chrono::steady_clock;

// A peer that stops reading must not wedge the sender's event loop for ever.
constexpr timeval kSendTimeout{2, 0};

Status set_send_timeout(int fd) {
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &kSendTimeout, sizeof kSendTimeout) != 0)
    return errno_error("setsockopt(SO_SNDTIMEO)");
  return {};
}

int sockopt_int(int fd, int opt) {
  int v = -1;
  socklen_t len = sizeof v;
  if (::getsockopt(fd, SOL_SOCKET, opt, &v, &len) != 0) return -1;
  return v;
}

}  // namespace

Result<std::pair<HandoffChannel, UniqueFd>> HandoffChannel::create_pair() {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return errno_error("socketpair(AF_UNIX, SOCK_SEQPACKET)");
  UniqueFd ours(sv[0]), theirs(sv[1]);
  if (auto st = set_send_timeout(ours.get()); !st) return st.error();
  return std::pair{HandoffChannel(std::move(ours)), std::move(theirs)};
}

Result<HandoffChannel> HandoffChannel::adopt(UniqueFd fd) {
  if (sockopt_int(fd.get(), SO_DOMAIN) != AF_UNIX || sockopt_int(fd.get(), SO_TYPE) != SOCK_SEQPACKET)
    return Error{"hand-off fd " + std::to_string(fd.get()) + " is not an AF_UNIX SOCK_SEQPACKET socket"};
  if (auto st = set_send_timeout(fd.get()); !st) return st.error();
  // It arrived without close-on-exec (it had to survive our exec): no child
  // of ours may hold the channel that carries client connections.
  if (int flags = ::fcntl(fd.get(), F_GETFD); flags < 0 || ::fcntl(fd.get(), F_SETFD, flags | FD_CLOEXEC) != 0)
    return errno_error("hand-off fd " + std::to_string(fd.get()) + ": fcntl(FD_CLOEXEC)");
  return HandoffChannel(std::move(fd));
}

namespace {

// What both sends check before anything reaches the wire.
Status check_limits(MessageType type, std::span<const uint8_t> payload, std::span<const int> fds) {
  if (fds.size() > kMaxFdsPerMessage)
    return Error{"send " + std::string(to_string(type)) + ": " + std::to_string(fds.size()) +
                 " fds, more than the " + std::to_string(kMaxFdsPerMessage) + " one message can carry"};
  if (payload.size() > kMaxPayload)
    return Error{"send " + std::string(to_string(type)) + ": payload of " + std::to_string(payload.size()) +
                 " bytes exceeds " + std::to_string(kMaxPayload)};
  return {};
}

}  // namespace

Status HandoffChannel::send(MessageType type, std::span<const uint8_t> payload, std::span<const int> fds) {
  auto sent = try_send_flags(type, payload, fds, 0);
  if (!sent) return sent.error();
  if (!sent.value()) return Error{std::string("sendmsg ") + to_string(type) + ": timed out (the peer is not reading)"};
  return {};
}

Result<bool> HandoffChannel::try_send(MessageType type, std::span<const uint8_t> payload, std::span<const int> fds) {
  return try_send_flags(type, payload, fds, MSG_DONTWAIT);
}

Result<bool> HandoffChannel::try_send_flags(MessageType type, std::span<const uint8_t> payload,
                                            std::span<const int> fds, int flags) {
  if (auto st = check_limits(type, payload, fds); !st) return st.error();
  auto frame = encode_frame(type, payload);
  for (;;) {
    ssize_t n = send_datagram(fd_.get(), frame, fds, flags);
    if (n == static_cast<ssize_t>(frame.size())) return true;
    if (n < 0 && errno == EINTR) continue;
    // A SEQPACKET datagram goes whole or not at all: EAGAIN sent nothing.
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return false;
    if (n < 0) return errno_error(std::string("sendmsg ") + to_string(type));
    return Error{std::string("sendmsg ") + to_string(type) + ": short write"};
  }
}

ssize_t send_datagram(int fd, std::span<const uint8_t> bytes, std::span<const int> fds, int flags) {
  iovec iov{const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  return ::sendmsg(fd, &msg, MSG_NOSIGNAL | flags);
}

Result<std::optional<Message>> HandoffChannel::try_receive(size_t max_fds) {
  // One byte more than the largest valid datagram, so an oversized one shows as MSG_TRUNC.
  std::vector<uint8_t> buf(kHeaderSize + kMaxPayload + 1);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * std::min(max_fds, kMaxFdsPerMessage));

  ssize_t n;
  do {
    n = ::recvmsg(fd_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    // ECONNRESET: the peer closed with messages of ours unread. The kernel
    // reports it once (and clears it); what the peer sent before it closed is
    // still queued here and comes next, then EOF. Those last messages
    // (SUCCEEDED, an ACK) are the ones that matter most.
  } while (n < 0 && (errno == EINTR || errno == ECONNRESET));
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return std::optional<Message>{};
  if (n < 0) return errno_error("recvmsg");

  // Own every fd that arrived before looking at anything else, so that each
  // error path below closes them.
  std::vector<UniqueFd> fds;
  bool foreign_control = false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const unsigned char* data = CMSG_DATA(c);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, data + i * sizeof(int), sizeof fd);
        fds.emplace_back(fd);
      }
    } else {
      foreign_control = true;
    }
  }
  if (msg.msg_flags & MSG_CTRUNC) return Error{"recvmsg: control data truncated (MSG_CTRUNC)"};
  if (msg.msg_flags & MSG_TRUNC) return Error{"recvmsg: message truncated (MSG_TRUNC), larger than any valid message"};
  if (foreign_control) return Error{"recvmsg: unexpected control message (not SCM_RIGHTS)"};
  if (n == 0) {
    // Zero bytes is EOF, or an empty datagram from a live peer.
    pollfd p{fd_.get(), POLLRDHUP, 0};
    if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP))) return Error{kPeerClosed};
    return Error{"message truncated: 0 bytes, header needs " + std::to_string(kHeaderSize)};
  }

  auto frame = decode_frame(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
  if (!frame) return frame.error();
  return std::optional<Message>(Message{frame->type, std::move(frame->payload), std::move(fds)});
}

Result<Message> HandoffChannel::receive(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto got = try_receive();
    if (!got) return got.error();
    if (got.value()) return std::move(*got.value());
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return Error{"no message within " + std::to_string(timeout.count()) + " ms"};
    pollfd p{fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) < 0 && errno != EINTR) return errno_error("poll");
  }
}

Result<Message> expect_message(HandoffChannel& channel, MessageType expected, std::chrono::milliseconds timeout) {
  auto m = channel.receive(timeout);
  if (!m) return Error{std::string("waiting for ") + to_string(expected) + ": " + m.error().message};
  if (m->type != expected)
    return Error{std::string("expected ") + to_string(expected) + ", got " + to_string(m->type)};
  return m;
}

}  // namespace baton::handoff
