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

// Takes ownership of the fds systemd passed (close-on-exec from now on), and
// removes the variables so no child sees them. Call first thing in main():
// the fds start at 3, and anything opened before (an event loop) could be
// mistaken for one. An error (LISTEN_FDS not a number, LISTEN_FDNAMES of
// another length, an fd that is not open) stops the start.
handoff::Result<std::vector<ActivatedFd>> take_activated_fds();

// With no listener configured: one request per activated fd, under its
// name, on the address it is bound to. Two fds of one name are an error.
// One named "control" is left to the control listener's own request.
handoff::Result<std::vector<handoff::ListenerRequest>> requests_for_activated(const std::vector<ActivatedFd>& fds);

// Each activated fd matched by name to a request, checked to be a listening
// stream socket on an address that fits the request. An fd that matches no
// request is an error naming it: systemd would keep it open and queue clients
// on it that nobody ever accepts.
handoff::Result<std::vector<handoff::InheritedListener>> match_activated(
    std::vector<ActivatedFd> fds, const std::vector<handoff::ListenerRequest>& requests);

}  // namespace baton::daemon
