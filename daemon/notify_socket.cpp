#include "notify_socket.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cstring>
#include <random>

namespace baton::daemon {
namespace {

handoff::Status enable_credentials(int fd) {
  int one = 1;
  if (::setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0)
    return handoff::errno_error("setsockopt SO_PASSCRED");
  return {};
}

// The socket's name as NOTIFY_SOCKET spells it: '@' for the abstract namespace.
handoff::Result<std::string> address_of(int fd) {
  sockaddr_un addr{};
  socklen_t len = sizeof addr;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return handoff::errno_error("getsockname");
  if (addr.sun_family != AF_UNIX || len <= offsetof(sockaddr_un, sun_path) + 1 || addr.sun_path[0] != '\0')
    return handoff::Error{"the notify socket is not a bound abstract Unix socket"};
  std::string name = "@";
  name.append(addr.sun_path + 1, len - offsetof(sockaddr_un, sun_path) - 1);
  return name;
}

}  // namespace

NotifyFields parse_notify_message(const std::string& text) {
  NotifyFields fields;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    if (auto eq = line.find('='); eq != std::string::npos && eq > 0) fields[line.substr(0, eq)] = line.substr(eq + 1);
    start = end + 1;
  }
  return fields;
}

handoff::Result<NotifySocket> NotifySocket::create() {
  handoff::UniqueFd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd) return handoff::errno_error("socket AF_UNIX SOCK_DGRAM (notify)");
  // Unguessable, so that no one else can squat on the name first.
  std::random_device rd;
  const std::string name = "baton-notify/" + std::to_string(::getpid()) + "/" + std::to_string(rd());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0)
    return handoff::errno_error("bind @" + name + " (notify socket)");
  return adopt(std::move(fd));
}

handoff::Result<NotifySocket> NotifySocket::adopt(handoff::UniqueFd fd) {
  auto address = address_of(fd.get());
  if (!address) return address.error();
  if (auto st = enable_credentials(fd.get()); !st) return st.error();
  NotifySocket s;
  s.fd_ = std::move(fd);
  s.address_ = std::move(address).value();
  return s;
}

handoff::Status NotifySocket::start(uv_loop_t* loop, Handler handler) {
  handler_ = std::move(handler);
  if (int rc = poll_.init(uv_poll_init, loop, this, fd_.get()); rc != 0)
    return handoff::Error{std::string("uv_poll_init (notify socket): ") + uv_strerror(rc)};
  if (int rc = uv_poll_start(poll_.get(), UV_READABLE, &NotifySocket::on_poll); rc != 0)
    return handoff::Error{std::string("uv_poll_start (notify socket): ") + uv_strerror(rc)};
  return {};
}

void NotifySocket::stop() { poll_.close(); }

void NotifySocket::on_poll(uv_poll_t* poll, int status, int) {
  auto* self = static_cast<NotifySocket*>(poll->data);
  if (status < 0) spdlog::warn("notify socket: {}", uv_strerror(status));
  self->read_pending();
}

void NotifySocket::read_pending() {
  for (int i = 0; i < 64 && poll_; ++i) {  // the handler may stop us
    char buf[4096];
    iovec iov{buf, sizeof buf};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred)) + CMSG_SPACE(sizeof(int) * 16)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd_.get(), &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        spdlog::warn("notify socket: recvmsg: {}", std::strerror(errno));
      return;
    }
    pid_t sender = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET) continue;
      if (c->cmsg_type == SCM_CREDENTIALS) {
        ucred cred;
        std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
        sender = cred.pid;
      } else if (c->cmsg_type == SCM_RIGHTS) {
        // FDSTORE=1 and the like: batond keeps no fds for the app.
        const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t k = 0; k < count; ++k) {
          int fd;
          std::memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof fd);
          ::close(fd);
        }
      }
    }
    if (sender <= 0 || (msg.msg_flags & MSG_TRUNC)) {
      spdlog::warn("notify socket: dropped a message ({})", sender <= 0 ? "no sender credentials" : "too long");
      continue;
    }
    handler_(sender, parse_notify_message(std::string(buf, static_cast<size_t>(n))));
  }
}

}  // namespace baton::daemon
