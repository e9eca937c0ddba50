#include "baton/handoff/predecessor_link.h"

#include <spdlog/spdlog.h>

#include "baton/handoff/connection_socket.h"

namespace baton::handoff {

PredecessorLink::PredecessorLink(uv_loop_t* loop, HandoffChannel channel, ReportCallback on_report,
                                 ConnectionCallback on_connection, ClosedCallback on_closed)
    : channel_(std::move(channel)),
      on_report_(std::move(on_report)),
      on_connection_(std::move(on_connection)),
      on_closed_(std::move(on_closed)) {
  if (!channel_.open()) return;
  if (poll_.init(uv_poll_init, loop, this, channel_.fd()) != 0) {
    channel_.close();
    return;
  }
  uv_poll_start(poll_.get(), UV_READABLE | UV_DISCONNECT, &PredecessorLink::on_readable);
}

void PredecessorLink::on_readable(uv_poll_t* poll, int status, int) {
  auto* self = static_cast<PredecessorLink*>(poll->data);
  if (status < 0) return self->close(std::string("poll: ") + uv_strerror(status));
  while (self->channel_.open()) {
    auto got = self->channel_.try_receive();
    if (!got) return self->close(got.error().message == kPeerClosed ? "closed" : got.error().message);
    if (!got.value()) return;
    Message& m = *got.value();
    if (m.type == MessageType::Connections) {
      if (auto st = self->take_connections(m); !st) return self->close(st.error().message);
      continue;
    }
    if (m.type != MessageType::Draining || !m.fds.empty())
      return self->close(std::string("unexpected ") + to_string(m.type) + " after COMMIT");
    auto reports = decode_draining(m.payload);
    if (!reports) return self->close("bad DRAINING: " + reports.error().message);
    self->on_report_(reports.value());
  }
}

// Every connection gets an answer: adopted, or refused (invalid, or the
// caller would not take it) so that the predecessor keeps serving it.
Status PredecessorLink::take_connections(Message& m) {
  auto entries = decode_connections(m.payload);
  if (!entries) return Error{"bad CONNECTIONS: " + entries.error().message};
  if (entries->size() != m.fds.size())
    return Error{"CONNECTIONS announces " + std::to_string(entries->size()) + " connections but carries " +
                 std::to_string(m.fds.size()) + " fds"};
  std::vector<ConnectionAck> acks;
  for (size_t i = 0; i < entries->size(); ++i) {
    const auto& e = entries.value()[i];
    bool adopted = false;
    if (auto st = validate_connection(m.fds[i].get(), e.kind); !st) {
      spdlog::warn("hand-off: connection {} refused: {}", e.id, st.error().message);
    } else {
      adopted = on_connection_(e, std::move(m.fds[i]));
    }
    acks.push_back({e.id, adopted});
  }
  return channel_.send(MessageType::ConnectionsAck, encode(acks));
}

Status PredecessorLink::notify_succeeded() {
  if (!channel_.open()) return Error{"no predecessor to tell"};
  return channel_.send(MessageType::Succeeded, {});
}

void PredecessorLink::close(const std::string& why) {
  poll_.close();
  channel_.close();
  on_closed_(why);
}

}  // namespace baton::handoff
