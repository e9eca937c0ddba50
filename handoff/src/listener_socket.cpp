#include "baton/handoff/listener_socket.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace baton::handoff {
namespace {

Result<int> sockopt_int(int fd, int option, const char* name) {
  int v = 0;
  socklen_t len = sizeof v;
  if (::getsockopt(fd, SOL_SOCKET, option, &v, &len) != 0) return errno_error(std::string("getsockopt(") + name + ")");
  return v;
}

const char* domain_name(int d) {
  switch (d) {
    case AF_INET: return "AF_INET";
    case AF_INET6: return "AF_INET6";
    case AF_UNIX: return "AF_UNIX";
    default: return "another family";
  }
}

std::string unix_label(const std::string& path) {
  std::string s = "unix:";
  s.append(path);
  return s;
}

// A Unix socket path that already exists is replaced only when connecting to
// it is refused: then its listener is gone and the file is stale.
Status clear_stale_unix_socket(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return errno_error("stat " + path);
  }
  if (!S_ISSOCK(st.st_mode)) return Error{unix_label(path) + " exists and is not a socket; not replacing it"};
  auto addr = ListenAddress::parse(unix_label(path));
  if (!addr) return addr.error();
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!probe) return errno_error("socket(AF_UNIX)");
  sockaddr_storage ss;
  socklen_t len = addr->to_sockaddr(ss);
  if (::connect(probe.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0 || errno == EAGAIN)
    return Error{unix_label(path) + ": another process is listening on it"};
  if (errno != ECONNREFUSED) return errno_error("connect " + path);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return errno_error("unlink stale socket " + path);
  return {};
}

}  // namespace

Result<UniqueFd> bind_listener(const ListenAddress& address, int backlog, std::optional<unsigned> unix_mode) {
  if (address.family == ListenAddress::Family::Unix) {
    if (auto st = clear_stale_unix_socket(address.path); !st) return st.error();
  }
  UniqueFd fd(::socket(address.domain(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return errno_error("socket for " + address.to_string());
  int one = 1;
  if (address.is_tcp() && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
    return errno_error("setsockopt(SO_REUSEADDR) " + address.endpoint());
  // An IPv6 listener means exactly that address, not the IPv4 space too.
  if (address.family == ListenAddress::Family::Tcp6 &&
      ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) != 0)
    return errno_error("setsockopt(IPV6_V6ONLY) " + address.endpoint());
  sockaddr_storage ss;
  socklen_t len = address.to_sockaddr(ss);
  const bool set_mode = unix_mode && address.family == ListenAddress::Family::Unix;
  const mode_t old_umask = set_mode ? ::umask(~*unix_mode & 0777) : 0;
  const int bound = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len);
  const int bind_errno = errno;
  if (set_mode) ::umask(old_umask);
  if (bound != 0) return sys_error("bind " + address.endpoint(), bind_errno);
  if (::listen(fd.get(), backlog) != 0) return errno_error("listen " + address.endpoint());
  return fd;
}

Result<ListenAddress> local_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return errno_error("getsockname");
  return ListenAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

Status validate_listener(int fd, const ListenAddress& announced) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return errno_error("fstat");
  if (!S_ISSOCK(st.st_mode)) return Error{"not a socket"};

  auto domain = sockopt_int(fd, SO_DOMAIN, "SO_DOMAIN");
  if (!domain) return domain.error();
  if (domain.value() != announced.domain())
    return Error{std::string("socket is ") + domain_name(domain.value()) + ", announced " + announced.to_string() +
                 " needs " + domain_name(announced.domain())};

  auto type = sockopt_int(fd, SO_TYPE, "SO_TYPE");
  if (!type) return type.error();
  if (type.value() != SOCK_STREAM)
    return Error{"socket type is " + std::string(type.value() == SOCK_DGRAM ? "SOCK_DGRAM" : std::to_string(type.value())) +
                 ", expected SOCK_STREAM"};

  auto accepting = sockopt_int(fd, SO_ACCEPTCONN, "SO_ACCEPTCONN");
  if (!accepting) return accepting.error();
  if (accepting.value() == 0) return Error{"socket is not listening (SO_ACCEPTCONN is 0)"};

  auto bound = local_address(fd);
  if (!bound) return bound.error();
  if (!(bound.value() == announced))
    return Error{"socket is bound to " + bound->to_string() + ", announced " + announced.to_string()};
  return {};
}

}  // namespace baton::handoff
