#include "epoll.h"

#include <cerrno>

namespace baton::load {

Result<Epoll> Epoll::create() {
  UniqueFd fd(::epoll_create1(EPOLL_CLOEXEC));
  if (!fd) return handoff::errno_error("epoll_create1");
  return Epoll(std::move(fd));
}

Status Epoll::add(int fd, uint32_t events, uint64_t token) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = token;
  if (::epoll_ctl(fd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return handoff::errno_error("epoll_ctl(ADD)");
  return {};
}

Status Epoll::modify(int fd, uint32_t events, uint64_t token) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = token;
  if (::epoll_ctl(fd_.get(), EPOLL_CTL_MOD, fd, &ev) != 0) return handoff::errno_error("epoll_ctl(MOD)");
  return {};
}

Result<int> Epoll::wait(std::span<epoll_event> out, int timeout_ms) {
  int n = ::epoll_wait(fd_.get(), out.data(), static_cast<int>(out.size()), timeout_ms);
  if (n >= 0) return n;
  // A signal we do not route through the signalfd (SIGCHLD, a debugger's) is not an error.
  if (errno == EINTR) return 0;
  return handoff::errno_error("epoll_wait");
}

}  // namespace baton::load
