#pragma once
// systemd socket activation on a fresh start: listeners passed as
// LISTEN_FDS (named by LISTEN_FDNAMES) are taken instead of bound, matched by
// name to the configured ones. Ignored when LISTEN_PID is not this process.

#include <string>
#include <vector>

#include "baton/handoff/listener_set.h"

namespace baton::daemon {

struct ActivatedFd {
  std::string name;
  handoff::UniqueFd fd;
};

// Takes ownership of the fds systemd passed, and removes the variables so no
// child sees them. Call first thing in main(): the fds start at 3, and
// anything opened before (an event loop) could be mistaken for one.
std::vector<ActivatedFd> take_activated_fds();

// Each activated fd whose name matches a request, checked to be a listening
// stream socket on an address that fits the request. Others are closed and
// logged.
std::vector<handoff::InheritedListener> match_activated(std::vector<ActivatedFd> fds,
                                                        const std::vector<handoff::ListenerRequest>& requests);

}  // namespace baton::daemon
