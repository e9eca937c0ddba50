#pragma once
// The side that takes over. Runs synchronously at start-up, before the event
// loop, because nothing can be served until it is done:
//
//   HELLO ->   <- LISTENERS ... [STATE ...] LISTENERS_END   (validate every fd)
//   READY ->   <- [STATE_UPDATE ...] COMMIT       (now accept)
//
// Any malformed or unexpected message is an error naming the fault; the caller
// exits non-zero with it, and the predecessor, seeing the channel close, rolls back.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "baton/handoff/channel.h"
#include "baton/handoff/listener_set.h"
#include "baton/handoff/message.h"
#include "baton/handoff/protocol.h"
#include "baton/handoff/result.h"

namespace baton::handoff {

class Successor {
 public:
  // The channel named by the environment variable (an fd number); nullopt when
  // it is not set, i.e. on a fresh start. The protocol version is the lower of
  // ours and the one the predecessor advertised (kVersionVariable). Both
  // variables are removed so that our own children never see them.
  static Result<std::optional<Successor>> from_environment(const char* variable);

  explicit Successor(HandoffChannel channel, uint16_t version = kProtocolVersion)
      : channel_(std::move(channel)), version_(version) {}
  // The protocol version this hand-off speaks (stated in HELLO).
  uint16_t version() const { return version_; }

  // Sends HELLO and receives every listener, each validated against the
  // address it was announced with, all within `timeout`.
  Result<std::vector<InheritedListener>> take_listeners(std::chrono::milliseconds timeout);

  // Sends READY and waits for COMMIT. Only after COMMIT may the caller accept:
  // a predecessor that rolled back instead kills us, and it must not kill a
  // process that already took client connections.
  Status confirm_ready(std::chrono::milliseconds timeout);

  // The STATE items that came with the listeners (protocol 3), once.
  std::vector<InheritedState> take_state() { return std::move(state_); }
  // The STATE_UPDATEs that came between READY and COMMIT (protocol 4), in
  // order, once. Later ones arrive through PredecessorLink.
  std::vector<StateUpdate> take_state_updates() { return std::move(updates_); }

  // After COMMIT: the channel, on which the predecessor reports its drain
  // (DrainWatch reads it). Empty before COMMIT.
  HandoffChannel take_channel() { return std::move(channel_); }

 private:
  HandoffChannel channel_;
  uint16_t version_;
  std::vector<InheritedState> state_;
  std::vector<StateUpdate> updates_;
};

}  // namespace baton::handoff
