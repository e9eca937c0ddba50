#pragma once
// A listening socket in the loop. Accepting is ours (accept4 on a uv_poll)
// rather than libuv's uv_listen, for two reasons: an inherited socket is
// adopted as it is, and when the process runs out of fds we pause accepting
// and leave connections queued in the kernel's backlog, where libuv would
// accept and drop them. The Listener knows nothing of what is served; each
// accepted fd goes to the handler.

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "baton/handoff/listener_set.h"
#include "baton/handoff/uv_handle.h"
#include "rate_limited_log.h"

namespace baton::daemon {

// What accept4 failing with `err` means for the listener.
enum class AcceptError {
  Drained,   // EAGAIN: nothing more queued
  Retry,     // this connection failed (it was aborted, or its network is down): try the next
  PauseFds,  // out of fds or memory: leave the backlog queued for a while
  Fatal,     // the listening socket itself is broken
};
AcceptError classify_accept_error(int err);

class Listener {
 public:
  using AcceptHandler = std::function<void(handoff::UniqueFd fd, Listener& from)>;
  using FatalHandler = std::function<void(const std::string& reason)>;

  Listener(uv_loop_t* loop, handoff::OpenListener open, AcceptHandler on_accept, FatalHandler on_fatal);
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  // Registers the socket with the loop without accepting yet: the part of
  // start() that can fail, done before a new generation says READY.
  handoff::Status prepare();
  handoff::Status start();  // begin accepting
  void stop();              // stop accepting; the socket stays open
  // Closes the socket. `unlink_path`: remove a Unix socket's file too, which
  // only the last generation to use it may do.
  void close(bool unlink_path);

  const std::string& name() const { return open_.name; }
  const handoff::ListenAddress& configured() const { return open_.configured; }
  const handoff::ListenAddress& bound() const { return open_.bound; }
  bool inherited() const { return open_.inherited; }
  bool is_unix() const { return open_.bound.family == handoff::ListenAddress::Family::Unix; }
  int fd() const { return open_.fd.get(); }
  // accept(2) failures so far (EAGAIN aside), by errno name ("EMFILE").
  const std::map<std::string, uint64_t>& accept_errors() const { return accept_errors_; }

 private:
  static void on_poll(uv_poll_t* poll, int status, int events);
  static void on_backoff_over(uv_timer_t* timer);
  void accept_pending();
  void pause_for_fds(int err);

  uv_loop_t* loop_;
  handoff::OpenListener open_;
  AcceptHandler on_accept_;
  FatalHandler on_fatal_;
  handoff::UvHandle<uv_poll_t> poll_;
  handoff::UvHandle<uv_timer_t> backoff_;
  RateLimiter fd_limit_log_;
  RateLimiter retry_log_;
  bool accepting_ = false;
  std::map<std::string, uint64_t> accept_errors_;
};

}  // namespace baton::daemon
