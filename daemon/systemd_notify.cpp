#include "systemd_notify.h"

#include <time.h>

#include <cstdlib>

#include "baton/handoff/systemd_notify.h"

namespace baton::daemon {

bool SystemdNotifier::enabled() const {
  const char* s = std::getenv("NOTIFY_SOCKET");
  return s && *s;
}

void SystemdNotifier::send(const std::string& message) const {
  if (!enabled()) return;
  // NOTIFY_SOCKET stays set: the next generation notifies through the same socket.
  handoff::notify_systemd(message);
}

void SystemdNotifier::ready(const std::string& status) const { send("READY=1\nSTATUS=" + status); }

void SystemdNotifier::reloading(const std::string& status) const {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const unsigned long long usec = static_cast<unsigned long long>(ts.tv_sec) * 1000000ULL + ts.tv_nsec / 1000;
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec) + "\nSTATUS=" + status);
}

void SystemdNotifier::stopping(const std::string& status) const { send("STOPPING=1\nSTATUS=" + status); }

void SystemdNotifier::main_pid(pid_t pid, const std::string& status) const {
  send("MAINPID=" + std::to_string(pid) + "\nSTATUS=" + status);
}

void SystemdNotifier::status(const std::string& status) const { send("STATUS=" + status); }

}  // namespace baton::daemon
