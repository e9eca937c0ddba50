#pragma once
// PredecessorLink: the successor's end of the channel after COMMIT. The
// predecessor, now draining, reports which generations still drain
// (DRAINING) and, with `drain = handoff`, hands over its client connections
// (CONNECTIONS), each validated here and offered to the caller, whose answer
// goes back as CONNECTIONS_ACK. The channel closing means the predecessor
// has exited. Runs in the successor's loop.

#include <uv.h>

#include <functional>
#include <string>
#include <vector>

#include "baton/handoff/channel.h"
#include "baton/handoff/protocol.h"
#include "baton/handoff/uv_handle.h"

namespace baton::handoff {

class PredecessorLink {
 public:
  using ReportCallback = std::function<void(const std::vector<GenerationReport>&)>;
  // Offered a validated connection: return true if it is now served here
  // (the fd is then the callee's), false to leave it with the predecessor.
  using ConnectionCallback = std::function<bool(const ConnectionEntry& entry, UniqueFd fd)>;
  // `why` is "closed" when the predecessor exited, else what went wrong.
  using ClosedCallback = std::function<void(const std::string& why)>;

  PredecessorLink(uv_loop_t* loop, HandoffChannel channel, ReportCallback on_report, ConnectionCallback on_connection,
                  ClosedCallback on_closed);
  PredecessorLink(const PredecessorLink&) = delete;
  PredecessorLink& operator=(const PredecessorLink&) = delete;
  bool open() const { return channel_.open(); }
  // Tells the predecessor that we handed over in turn: it must not resume
  // serving should we exit now.
  Status notify_succeeded();

 private:
  static void on_readable(uv_poll_t* poll, int status, int events);
  Status take_connections(Message& m);
  void close(const std::string& why);

  HandoffChannel channel_;
  ReportCallback on_report_;
  ConnectionCallback on_connection_;
  ClosedCallback on_closed_;
  UvHandle<uv_poll_t> poll_;
};

}  // namespace baton::handoff
