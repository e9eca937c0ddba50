#pragma once
// HandoffChannel: the AF_UNIX SOCK_SEQPACKET socket between two generations.
// Sends and receives whole messages (message.h) with fds as SCM_RIGHTS.
// Whatever goes wrong on receive, every fd that arrived is closed before the
// error is returned: a malformed message can never leak a descriptor.

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "baton/handoff/message.h"
#include "baton/handoff/result.h"
#include "baton/handoff/unique_fd.h"

namespace baton::handoff {

// The error text of a receive that found the peer gone (EOF).
inline constexpr const char* kPeerClosed = "peer closed the hand-off channel";

struct Message {
  MessageType type;
  std::vector<uint8_t> payload;
  std::vector<UniqueFd> fds;
};

class HandoffChannel {
 public:
  // A connected pair: the first end stays here, the second goes to the child.
  // Both ends are close-on-exec; the spawner places the child's end explicitly.
  static Result<std::pair<HandoffChannel, UniqueFd>> create_pair();
  // Takes an inherited fd; refuses anything that is not an AF_UNIX SOCK_SEQPACKET socket.
  static Result<HandoffChannel> adopt(UniqueFd fd);

  explicit HandoffChannel(UniqueFd fd) : fd_(std::move(fd)) {}
  int fd() const { return fd_.get(); }
  bool open() const { return fd_.valid(); }
  void close() { fd_.reset(); }

  // At most kMaxFdsPerMessage fds and kMaxPayload bytes; the fds stay owned by the caller.
  // Blocks for at most the channel's send timeout (2 s): for the synchronous start-up only.
  Status send(MessageType type, std::span<const uint8_t> payload, std::span<const int> fds = {});
  // The same without ever blocking: true if the kernel took the whole
  // message, false if the socket buffer is full (nothing was sent).
  Result<bool> try_send(MessageType type, std::span<const uint8_t> payload, std::span<const int> fds = {});
  // A message if one is queued, nullopt if none is (never blocks).
  // `max_fds` sizes the control buffer; only tests lower it, to provoke MSG_CTRUNC.
  Result<std::optional<Message>> try_receive(size_t max_fds = kMaxFdsPerMessage);
  // Waits for one message for at most `timeout`.
  Result<Message> receive(std::chrono::milliseconds timeout);

 private:
  Result<bool> try_send_flags(MessageType type, std::span<const uint8_t> payload, std::span<const int> fds, int flags);

  UniqueFd fd_;
};

// One datagram with `fds` as SCM_RIGHTS, exactly as given (no framing, no
// limits checked): what HandoffChannel::send puts on the wire, and what tests
// and fuzzers use to put anything else there. Returns sendmsg's result.
ssize_t send_datagram(int fd, std::span<const uint8_t> bytes, std::span<const int> fds, int flags = 0);

// Receives one message of the expected type within `timeout`; anything else is
// an error naming what came instead.
Result<Message> expect_message(HandoffChannel& channel, MessageType expected, std::chrono::milliseconds timeout);

}  // namespace baton::handoff
