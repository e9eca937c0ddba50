#pragma once
// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET (a path,
// or an abstract name written with a leading '@'). Nothing when it is not
// set; a failure is logged, never fatal: the service serves on.

#include <string>

namespace baton::handoff {

void notify_systemd(const std::string& message);

}  // namespace baton::handoff
