#include "baton/handoff/connection_socket.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>

namespace baton::handoff {
namespace {

int sockopt(int fd, int option) {
  int v = -1;
  socklen_t len = sizeof v;
  return ::getsockopt(fd, SOL_SOCKET, option, &v, &len) == 0 ? v : -1;
}

}  // namespace

Status validate_connection(int fd, ConnectionKind kind) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return errno_error("fstat");
  if (!S_ISSOCK(st.st_mode)) return Error{"not a socket"};
  if (sockopt(fd, SO_TYPE) != SOCK_STREAM) return Error{"not a stream socket"};
  const int domain = sockopt(fd, SO_DOMAIN);
  const bool fits = kind == ConnectionKind::Unix ? domain == AF_UNIX : (domain == AF_INET || domain == AF_INET6);
  if (!fits) return Error{std::string("socket family does not fit a ") + (kind == ConnectionKind::Unix ? "Unix" : "TCP") +
                          " connection"};
  if (sockopt(fd, SO_ACCEPTCONN) != 0) return Error{"a listening socket, not a connection"};
  sockaddr_storage peer{};
  socklen_t len = sizeof peer;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return errno_error("getpeername");
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return errno_error("fcntl(O_NONBLOCK)");
  return {};
}

}  // namespace baton::handoff
