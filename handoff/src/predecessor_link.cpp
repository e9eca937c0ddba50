#include "baton/handoff/predecessor_link.h"

#include <spdlog/spdlog.h>

#include "baton/handoff/connection_socket.h"

namespace baton::handoff {

PredecessorLink::PredecessorLink(uv_loop_t* loop, HandoffChannel channel, uint16_t version, ReportCallback on_report,
                                 ConnectionCallback on_connection, ClosedCallback on_closed)
    : version_(version),
      on_report_(std::move(on_report)),
      on_connection_(std::move(on_connection)),
      on_closed_(std::move(on_closed)),
      link_(loop, [this](Message& m) { handle(m); }, [this](const std::string& why) { lost(why); }) {
  if (!channel.open()) return;
  if (auto st = link_.open(std::move(channel)); !st) spdlog::warn("previous generation: {}", st.error().message);
}

void PredecessorLink::handle(Message& m) {
  if (m.type == MessageType::Connections) {
    if (auto st = take_connections(m); !st) {
      broken_ = true;
      link_.close();
      lost(st.error().message);
    }
    return;
  }
  std::string error;
  if (m.type == MessageType::StateUpdate && version_ >= 4 && m.fds.empty()) {
    auto update = decode_state_update(m.payload);
    if (update) {
      if (on_state_) on_state_(update.value());
      return;
    }
    error = update.error().message;
  } else if (m.type != MessageType::Draining || !m.fds.empty()) {
    error = std::string("unexpected ") + to_string(m.type) + " after COMMIT";
  } else if (auto reports = decode_draining(m.payload, version_); !reports) {
    error = "bad DRAINING: " + reports.error().message;
  } else {
    return on_report_(reports.value());
  }
  broken_ = true;
  link_.close();
  lost(error);
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
  // A failed ACK (the predecessor is gone, typically) is no reason to stop
  // reading: batches it sent before it went are still queued here, and their
  // clients have nobody else now.
  if (auto st = link_.send(MessageType::ConnectionsAck, encode(acks)); !st)
    spdlog::warn("hand-off: acknowledging {} connection(s): {}", acks.size(), st.error().message);
  return {};
}

Status PredecessorLink::notify_serving() {
  if (version_ < 2 || !link_.is_open()) return {};  // version 1 knows no SERVING; nobody to tell
  return link_.send(MessageType::Serving, {});
}

namespace {
// Version 1 (baton 0.1.0) knows SUCCEEDED only empty, naming no pid: it then
// never resumes, whatever becomes of the newer generation.
std::vector<uint8_t> succeeded_payload(uint16_t version, pid_t pid) {
  if (version < 2 || pid == 0) return {};  // empty: names no pid
  return encode(Succeeded{static_cast<uint32_t>(pid)});
}
}  // namespace

Status PredecessorLink::notify_succeeded(pid_t pid) {
  if (!link_.is_open()) return {};  // nobody to tell: the predecessor is gone
  auto sent = link_.send_now(MessageType::Succeeded, succeeded_payload(version_, pid));
  // The send failed: the predecessor closed its end (it is exiting, or gone).
  if (!sent) return {};
  if (!sent.value()) return Error{"the previous generation's hand-off channel is full (it is not reading)"};
  return {};
}

Result<bool> PredecessorLink::send_state_update(const std::string& key, const std::string& data) {
  if (version_ < 4 || !link_.is_open()) return true;  // nobody to tell, or it would not understand
  auto payload = encode_state(key, data);
  if (payload.size() > kMaxPayload) return Error{"STATE_UPDATE '" + key + "' is larger than one message"};
  return link_.send_now(MessageType::StateUpdate, payload);
}

Status PredecessorLink::relay_succeeded(pid_t pid) {
  if (!link_.is_open()) return {};
  return link_.send(MessageType::Succeeded, succeeded_payload(version_, pid));
}

void PredecessorLink::lost(const std::string& why) { on_closed_(why == kPeerClosed ? "closed" : why); }

}  // namespace baton::handoff
