#include "control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace baton::cli {

handoff::Result<ControlClient> ControlClient::connect(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof addr.sun_path) return handoff::Error{"control socket path too long: " + path};
  handoff::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return handoff::errno_error("socket");
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return handoff::errno_error("cannot reach batond at " + path);
  return ControlClient(std::move(fd));
}

handoff::Status ControlClient::send(const control::Request& request) {
  const std::string line = control::encode_request(request);
  size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::send(fd_.get(), line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return handoff::errno_error("send request");
    off += static_cast<size_t>(n);
  }
  return {};
}

handoff::Result<std::optional<nlohmann::json>> ControlClient::next(std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (j.is_discarded() || !j.is_object()) return handoff::Error{"malformed reply from batond: " + line};
      return std::optional<nlohmann::json>(std::move(j));
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return handoff::Error{"no reply from batond in time"};
    pollfd p{fd_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno != EINTR) return handoff::errno_error("poll");
    if (r <= 0) continue;
    char buf[4096];
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n == 0) return std::optional<nlohmann::json>{};
    if (n < 0 && errno != EINTR) return handoff::errno_error("recv");
    if (n > 0) buffer_.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace baton::cli
