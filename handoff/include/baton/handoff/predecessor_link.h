#pragma once
// PredecessorLink: the successor's end of the channel after COMMIT. It tells
// the predecessor when this process serves (SERVING: the predecessor's
// probation starts) and when it commits to a newer generation in turn
// (SUCCEEDED). The predecessor, now draining, reports which generations
// still drain (DRAINING) and, with `drain = handoff`, hands over its client
// connections (CONNECTIONS), each validated here and offered to the caller,
// whose answer goes back as CONNECTIONS_ACK, and (protocol 4) sends the
// caller's live state (STATE_UPDATE), both ways. The channel closing means the
// predecessor has exited. Runs in the successor's loop; no send blocks it.

#include <sys/types.h>
#include <uv.h>

#include <functional>
#include <string>
#include <vector>

#include "baton/handoff/channel_link.h"
#include "baton/handoff/protocol.h"

namespace baton::handoff {

class PredecessorLink {
 public:
  using ReportCallback = std::function<void(const std::vector<GenerationReport>&)>;
  // Offered a validated connection: return true if it is now served here
  // (the fd is then the callee's), false to leave it with the predecessor.
  using ConnectionCallback = std::function<bool(const ConnectionEntry& entry, UniqueFd fd)>;
  // `why` is "closed" when the predecessor exited, else what went wrong.
  using ClosedCallback = std::function<void(const std::string& why)>;
  // A STATE_UPDATE: the predecessor's latest `data` under `key`.
  using StateCallback = std::function<void(const StateUpdate& update)>;

  // `version`: the protocol version agreed in HELLO (Successor::version()).
  PredecessorLink(uv_loop_t* loop, HandoffChannel channel, uint16_t version, ReportCallback on_report,
                  ConnectionCallback on_connection, ClosedCallback on_closed);
  PredecessorLink(const PredecessorLink&) = delete;
  PredecessorLink& operator=(const PredecessorLink&) = delete;
  bool open() const { return link_.is_open(); }
  // Where STATE_UPDATEs go; without a handler they are read and dropped.
  void on_state_update(StateCallback cb) { on_state_ = std::move(cb); }

  // This process accepts now. Call before the first accept: until then the
  // predecessor may still kill it without losing a client.
  Status notify_serving();
  // We are about to COMMIT to the newer generation `pid`, or our own
  // successor told us that one of its successors is (a relay: every older
  // generation must know every newer one): the predecessor must not resume
  // serving while `pid` lives. Succeeds only once the message is in the
  // predecessor's socket (where it stays readable even if we die); an error
  // means the predecessor cannot be told now. A version 1 predecessor is
  // sent SUCCEEDED empty, as baton 0.1.0 knows it.
  Status notify_succeeded(pid_t pid);
  // The same for a SUCCEEDED our successor told us of: queued if the channel
  // is full (the newer generation is committed already; only the order with
  // COMMIT needed the kernel to take it at once).
  Status relay_succeeded(pid_t pid);
  // Protocol 4: the caller's live state for the predecessor, which could
  // serve again should this process die (batond: the totals it is about to
  // show, so that the predecessor's never fall below them). Sent at once or
  // not at all, never queued: true once it is in the predecessor's socket
  // (where it stays readable after we die), false if the channel is full.
  // Nothing is sent to a predecessor below version 4, or gone (true).
  Result<bool> send_state_update(const std::string& key, const std::string& data);
  // This side closed the link on a malformed or unexpected message: the
  // predecessor may live on, and can no longer be told anything.
  bool broken() const { return broken_; }

 private:
  void handle(Message& m);
  Status take_connections(Message& m);
  void lost(const std::string& why);

  uint16_t version_;
  ReportCallback on_report_;
  ConnectionCallback on_connection_;
  ClosedCallback on_closed_;
  StateCallback on_state_;
  ChannelLink link_;
  bool broken_ = false;
};

}  // namespace baton::handoff
