#pragma once
// Opening the listeners a generation is configured with: each is adopted from
// the previous generation when one with the same name and the same configured
// address was handed over, and bound afresh otherwise. Inherited listeners no
// longer wanted are closed and reported.

#include <optional>
#include <string>
#include <vector>

#include "baton/handoff/listen_address.h"
#include "baton/handoff/result.h"
#include "baton/handoff/unique_fd.h"

namespace baton::handoff {

struct ListenerRequest {
  std::string name;
  ListenAddress address;                // as configured; a TCP port may be 0
  std::optional<unsigned> unix_mode{};  // permissions of a Unix socket file we bind
  // Another process accepts on it (a supervised app): bound in blocking
  // mode, as systemd passes sockets, rather than made non-blocking for our
  // loop; an inherited one keeps the mode it has. The mode belongs to the
  // socket, which every process holding it shares (the running app too).
  bool blocking = false;
};

// A listening socket with its identity, as a predecessor hands it over.
struct InheritedListener {
  std::string name;
  ListenAddress configured;
  ListenAddress bound;
  UniqueFd fd;
};

struct OpenListener {
  std::string name;
  ListenAddress configured;
  ListenAddress bound;
  UniqueFd fd;
  bool inherited = false;
};

struct OpenedListeners {
  std::vector<OpenListener> listeners;  // in request order
  std::vector<std::string> dropped;     // "name (address)" of inherited listeners closed as unwanted
};

// Fails on the first listener that can be neither adopted nor bound; then
// nothing stays open.
Result<OpenedListeners> open_listeners(const std::vector<ListenerRequest>& requests,
                                       std::vector<InheritedListener> inherited, int backlog);

}  // namespace baton::handoff
