#include "listener.h"

#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>

namespace baton::daemon {
namespace {

// Accepts per readiness event: bounded so one busy listener cannot starve
// the connections already open.
constexpr int kAcceptBatch = 64;
// How long accepting pauses when the process is out of fds.
constexpr uint64_t kFdBackoffMs = 100;

}  // namespace

Listener::Listener(uv_loop_t* loop, handoff::OpenListener open, AcceptHandler on_accept, FatalHandler on_fatal)
    : loop_(loop), open_(std::move(open)), on_accept_(std::move(on_accept)), on_fatal_(std::move(on_fatal)) {}

handoff::Status Listener::prepare() {
  if (poll_) return {};
  if (int rc = poll_.init(uv_poll_init, loop_, this, open_.fd.get()); rc != 0)
    return handoff::Error{"listener '" + name() + "': uv_poll_init: " + uv_strerror(rc)};
  return {};
}

handoff::Status Listener::start() {
  if (auto st = prepare(); !st) return st;
  if (int rc = uv_poll_start(poll_.get(), UV_READABLE, &Listener::on_poll); rc != 0)
    return handoff::Error{"listener '" + name() + "': uv_poll_start: " + uv_strerror(rc)};
  accepting_ = true;
  return {};
}

void Listener::stop() {
  accepting_ = false;
  if (poll_) uv_poll_stop(poll_.get());
  if (backoff_) uv_timer_stop(backoff_.get());
}

void Listener::close(bool unlink_path) {
  stop();
  poll_.close();
  backoff_.close();
  if (unlink_path && is_unix() && open_.fd) ::unlink(open_.bound.path.c_str());
  open_.fd.reset();
}

void Listener::on_poll(uv_poll_t* poll, int status, int) {
  auto* self = static_cast<Listener*>(poll->data);
  if (status < 0) {
    self->on_fatal_("listener '" + self->name() + "' (" + self->bound().endpoint() + "): poll: " + uv_strerror(status));
    return;
  }
  self->accept_pending();
}

AcceptError classify_accept_error(int err) {
  switch (err) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
      return AcceptError::Drained;
    case EINTR:
    case EPERM:  // a firewall rule refused it
    // accept(2): Linux passes already-pending network errors on the new
    // socket to accept; "treat them like EAGAIN by retrying".
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
      return AcceptError::Retry;
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM:
      return AcceptError::PauseFds;
    default:
      return AcceptError::Fatal;
  }
}

void Listener::accept_pending() {
  for (int i = 0; i < kAcceptBatch && accepting_; ++i) {
    int fd = ::accept4(open_.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      on_accept_(handoff::UniqueFd(fd), *this);
      continue;
    }
    const int err = errno;
    if (classify_accept_error(err) != AcceptError::Drained) {
      const char* name = ::strerrorname_np(err);
      ++accept_errors_[name ? name : std::to_string(err)];
    }
    switch (classify_accept_error(err)) {
      case AcceptError::Drained:
        return;
      case AcceptError::Retry:
        if (err != EINTR && err != ECONNABORTED) {
          if (auto n = retry_log_.allow())
            spdlog::warn("accept name={} addr={}: {}; skipped that connection ({} times since last report)", name(),
                         bound().endpoint(), std::strerror(err), *n);
        }
        continue;
      case AcceptError::PauseFds:
        pause_for_fds(err);
        return;
      case AcceptError::Fatal:
        on_fatal_("listener '" + name() + "' (" + bound().endpoint() + "): accept: " + std::strerror(err));
        return;
    }
  }
}

// Out of fds: stop polling for a while rather than spin on a readable socket
// we cannot accept from. Queued connections wait in the backlog, not reset.
void Listener::pause_for_fds(int err) {
  if (auto n = fd_limit_log_.allow())
    spdlog::warn("accept name={} addr={}: {}; pausing accept for {} ms ({} times since last report)", name(),
                 bound().endpoint(), std::strerror(err), kFdBackoffMs, *n);
  if (poll_) uv_poll_stop(poll_.get());
  if (!backoff_) backoff_.init(uv_timer_init, loop_, this);
  uv_timer_start(backoff_.get(), &Listener::on_backoff_over, kFdBackoffMs, 0);
}

void Listener::on_backoff_over(uv_timer_t* timer) {
  auto* self = static_cast<Listener*>(timer->data);
  if (self->accepting_ && self->poll_) uv_poll_start(self->poll_.get(), UV_READABLE, &Listener::on_poll);
}

}  // namespace baton::daemon
