#pragma once
// DrainWatch: the successor's ear on the channel after COMMIT. The
// predecessor reports which generations still drain (DRAINING); the channel
// closing means the predecessor has exited. Runs in the successor's loop.

#include <uv.h>

#include <functional>
#include <vector>

#include "baton/handoff/channel.h"
#include "baton/handoff/protocol.h"
#include "baton/handoff/uv_handle.h"

namespace baton::handoff {

class DrainWatch {
 public:
  using ReportCallback = std::function<void(const std::vector<GenerationReport>&)>;
  // `why` is "closed" when the predecessor exited, else what went wrong.
  using ClosedCallback = std::function<void(const std::string& why)>;

  DrainWatch(uv_loop_t* loop, HandoffChannel channel, ReportCallback on_report, ClosedCallback on_closed);
  DrainWatch(const DrainWatch&) = delete;
  DrainWatch& operator=(const DrainWatch&) = delete;
  bool open() const { return channel_.open(); }

 private:
  static void on_readable(uv_poll_t* poll, int status, int events);
  void close(const std::string& why);

  HandoffChannel channel_;
  ReportCallback on_report_;
  ClosedCallback on_closed_;
  UvHandle<uv_poll_t> poll_;
};

}  // namespace baton::handoff
