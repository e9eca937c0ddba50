#pragma once
// The socket the supervised app reports readiness on (sd_notify's
// NOTIFY_SOCKET): a datagram socket in the abstract namespace, so no file is
// left behind, with SO_PASSCRED so that every message comes with the pid the
// kernel vouches for. Whoever may send is decided by the caller from that pid
// (the app's instances and their descendants); the socket only reads.
// It is handed to the next batond generation, so its name never changes.

#include <sys/types.h>
#include <uv.h>

#include <functional>
#include <map>
#include <string>

#include "baton/handoff/result.h"
#include "baton/handoff/unique_fd.h"
#include "baton/handoff/uv_handle.h"

namespace baton::daemon {

// One notification: "READY=1\nSTATUS=..." as KEY -> VALUE.
using NotifyFields = std::map<std::string, std::string>;
NotifyFields parse_notify_message(const std::string& text);

class NotifySocket {
 public:
  using Handler = std::function<void(pid_t sender, const NotifyFields& fields)>;

  // A fresh socket, named after this process.
  static handoff::Result<NotifySocket> create();
  // The one an older generation made.
  static handoff::Result<NotifySocket> adopt(handoff::UniqueFd fd);

  NotifySocket() = default;
  NotifySocket(NotifySocket&&) = default;
  NotifySocket& operator=(NotifySocket&&) = default;

  // NOTIFY_SOCKET's value: "@name".
  const std::string& address() const { return address_; }
  int fd() const { return fd_.get(); }

  // Reads in `loop` until stop(); `handler` must outlive that.
  handoff::Status start(uv_loop_t* loop, Handler handler);
  void stop();

 private:
  static void on_poll(uv_poll_t* poll, int status, int events);
  void read_pending();

  handoff::UniqueFd fd_;
  std::string address_;
  Handler handler_;
  handoff::UvHandle<uv_poll_t> poll_;
};

}  // namespace baton::daemon
