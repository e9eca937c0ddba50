#pragma once
// A thin owner of an epoll instance, shared by baton-load and baseline-echo.
// Each registration carries a 64-bit token the caller picks (baton-load packs
// a slot and a generation into it, so an event that outlives its connection is
// recognised as stale).

#include <sys/epoll.h>

#include <cstdint>
#include <span>

#include "baton/handoff/result.h"
#include "baton/handoff/unique_fd.h"

namespace baton::load {

using handoff::Result;
using handoff::Status;
using handoff::UniqueFd;

class Epoll {
 public:
  static Result<Epoll> create();

  Status add(int fd, uint32_t events, uint64_t token);
  Status modify(int fd, uint32_t events, uint64_t token);
  // Returns the number of events written to `out` (0 on timeout or EINTR).
  Result<int> wait(std::span<epoll_event> out, int timeout_ms);

 private:
  explicit Epoll(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace baton::load
