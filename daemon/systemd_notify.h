#pragma once
// What batond tells systemd (sd_notify), when NOTIFY_SOCKET is set; without
// it every call does nothing. With NotifyAccess=all a new generation, a child
// of the old one in the same unit, may notify too: the old one announces the
// new MAINPID once the new one is READY, so systemd follows the hand-off
// instead of killing the unit when the old main process exits.

#include <sys/types.h>

#include <string>

namespace baton::daemon {

class SystemdNotifier {
 public:
  bool enabled() const;
  void ready(const std::string& status) const;
  void reloading(const std::string& status) const;  // RELOADING=1 with MONOTONIC_USEC
  void stopping(const std::string& status) const;
  void main_pid(pid_t pid, const std::string& status) const;
  void status(const std::string& status) const;

 private:
  void send(const std::string& message) const;
};

}  // namespace baton::daemon
