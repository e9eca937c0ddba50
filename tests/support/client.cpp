#include "client.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <random>

#include "baton/handoff/listen_address.h"

namespace baton::test {
namespace {

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

bool wait_io(int fd, short events, Clock::time_point deadline) {
  pollfd p{fd, events, 0};
  for (;;) {
    int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

}  // namespace

UniqueFd connect_to(const std::string& endpoint) {
  std::string text = endpoint.starts_with("/") ? "unix:" + endpoint : "tcp://" + endpoint;
  auto addr = handoff::ListenAddress::parse(text);
  if (!addr) {
    errno = EINVAL;
    return UniqueFd();
  }
  UniqueFd fd(::socket(addr->domain(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return fd;
  sockaddr_storage ss;
  socklen_t len = addr->to_sockaddr(ss);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    int err = errno;
    fd.reset();
    errno = err;
  }
  return fd;
}

bool send_all(int fd, const std::string& data, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!wait_io(fd, POLLOUT, deadline)) return false;
      continue;
    }
    return false;
  }
  return true;
}

std::optional<std::string> recv_exact(int fd, size_t n, std::chrono::milliseconds timeout, std::string* partial) {
  auto deadline = Clock::now() + timeout;
  std::string out;
  out.reserve(n);
  char buf[65536];
  while (out.size() < n) {
    ssize_t r = ::recv(fd, buf, std::min(sizeof buf, n - out.size()), MSG_DONTWAIT);
    if (r > 0) {
      out.append(buf, static_cast<size_t>(r));
      continue;
    }
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (wait_io(fd, POLLIN, deadline)) continue;
    }
    if (partial) *partial = out;
    return std::nullopt;
  }
  return out;
}

bool echo_roundtrip(int fd, const std::string& data, std::chrono::milliseconds timeout) {
  // Send and receive at once: a payload larger than the socket buffers would
  // otherwise deadlock against the daemon's backpressure.
  auto deadline = Clock::now() + timeout;
  size_t sent = 0;
  std::string back;
  back.reserve(data.size());
  char buf[65536];
  while (back.size() < data.size()) {
    pollfd p{fd, static_cast<short>(POLLIN | (sent < data.size() ? POLLOUT : 0)), 0};
    int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r <= 0) return false;
    if ((p.revents & POLLOUT) && sent < data.size()) {
      ssize_t n = ::send(fd, data.data() + sent, std::min<size_t>(data.size() - sent, 65536), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
      if (n > 0) sent += static_cast<size_t>(n);
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n == 0) return false;
      if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
      if (n > 0) back.append(buf, static_cast<size_t>(n));
    }
  }
  return back == data;
}

namespace {

// 0: EOF, 1: reset, -1: deadline or another error.
int wait_end(int fd, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  char buf[4096];
  for (;;) {
    ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r == 0) return 0;
    if (r > 0) continue;
    if (errno == EAGAIN || errno == EINTR) {
      if (!wait_io(fd, POLLIN, deadline)) return -1;
      continue;
    }
    return errno == ECONNRESET ? 1 : -1;
  }
}

}  // namespace

bool wait_eof(int fd, std::chrono::milliseconds timeout) { return wait_end(fd, timeout) == 0; }

bool wait_closed(int fd, std::chrono::milliseconds timeout) { return wait_end(fd, timeout) >= 0; }

std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

std::string field(const std::string& line, const std::string& key) {
  auto pos = line.find(" " + key + "=");
  if (pos == std::string::npos) return {};
  pos += key.size() + 2;
  auto end = line.find(' ', pos);
  return line.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
}

}  // namespace baton::test
