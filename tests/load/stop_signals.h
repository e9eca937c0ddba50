#pragma once
// SIGINT and SIGTERM delivered as readable events on a signalfd, so stopping
// is just another event in the tool's single epoll loop: no async-signal-safe
// juggling, and a second signal can be told apart from the first.

#include "baton/handoff/result.h"
#include "baton/handoff/unique_fd.h"

namespace baton::load {

class StopSignals {
 public:
  // Blocks SIGINT/SIGTERM in this (single-threaded) process, opens the
  // signalfd and ignores SIGPIPE, whose default would kill the tool on the
  // first write to a socket the peer reset.
  static handoff::Result<StopSignals> install();

  int fd() const { return fd_.get(); }
  // Reads every pending signal; returns how many arrived.
  int drain();

 private:
  explicit StopSignals(handoff::UniqueFd fd) : fd_(std::move(fd)) {}
  handoff::UniqueFd fd_;
};

}  // namespace baton::load
