#include "baton/handoff/drain_watch.h"

namespace baton::handoff {

DrainWatch::DrainWatch(uv_loop_t* loop, HandoffChannel channel, ReportCallback on_report, ClosedCallback on_closed)
    : channel_(std::move(channel)), on_report_(std::move(on_report)), on_closed_(std::move(on_closed)) {
  if (!channel_.open()) return;
  if (poll_.init(uv_poll_init, loop, this, channel_.fd()) != 0) {
    channel_.close();
    return;
  }
  uv_poll_start(poll_.get(), UV_READABLE | UV_DISCONNECT, &DrainWatch::on_readable);
}

void DrainWatch::on_readable(uv_poll_t* poll, int status, int) {
  auto* self = static_cast<DrainWatch*>(poll->data);
  if (status < 0) return self->close(std::string("poll: ") + uv_strerror(status));
  while (self->channel_.open()) {
    auto got = self->channel_.try_receive();
    if (!got) {
      const bool eof = got.error().message == kPeerClosed;
      return self->close(eof ? "closed" : got.error().message);
    }
    if (!got.value()) return;
    Message& m = *got.value();
    if (m.type != MessageType::Draining || !m.fds.empty())
      return self->close(std::string("unexpected ") + to_string(m.type) + " after COMMIT");
    auto reports = decode_draining(m.payload);
    if (!reports) return self->close("bad DRAINING: " + reports.error().message);
    self->on_report_(reports.value());
  }
}

void DrainWatch::close(const std::string& why) {
  poll_.close();
  channel_.close();
  on_closed_(why);
}

}  // namespace baton::handoff
