#include "baton/handoff/successor_link.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace baton::handoff {

SuccessorLink::Subscription& SuccessorLink::Subscription::operator=(Subscription&& o) noexcept {
  if (this != &o) {
    if (auto h = handlers_.lock()) *h = {};
    handlers_ = std::move(o.handlers_);
    o.handlers_.reset();
  }
  return *this;
}

SuccessorLink::Subscription::~Subscription() {
  if (auto h = handlers_.lock()) *h = {};
}

SuccessorLink::SuccessorLink(uv_loop_t* loop, pid_t pid, uint16_t version, Events events)
    : pid_(pid),
      version_(version),
      events_(std::move(events)),
      link_(
          loop, [this](Message& m) { handle(m); }, [this](const std::string& why) { on_closed(why); }) {
  link_.on_writable([this] {
    auto h = handlers_;  // kept while it runs: it may subscribe anew
    if (!closed_ && h->writable) h->writable();
  });
}

Status SuccessorLink::open(HandoffChannel channel) { return link_.open(std::move(channel)); }

void SuccessorLink::close() {
  // The events stay (one of them may be running now): closed_ silences them.
  closed_ = true;
  link_.close();
}

SuccessorLink::Subscription SuccessorLink::subscribe(Handlers handlers) {
  // A fresh object: an older Subscription points at the one it replaced.
  handlers_ = std::make_shared<Handlers>(std::move(handlers));
  return Subscription(handlers_);
}

void SuccessorLink::on_closed(const std::string& why) {
  if (closed_) return;
  if (events_.closed) events_.closed(why);
  if (closed_) return;  // the owner closed us
  auto h = handlers_;
  if (h->lost) h->lost(why);
}

void SuccessorLink::refuse(const std::string& what) {
  link_.close();
  on_closed(what);
}

void SuccessorLink::handle(Message& m) {
  if (closed_) return;
  if (!m.fds.empty()) return refuse(std::string(to_string(m.type)) + " from the new process carries unexpected fds");
  if (m.type == MessageType::Serving && version_ >= 2 && m.payload.empty()) {
    if (events_.serving) events_.serving();
    return;
  }
  if (m.type == MessageType::Succeeded) return take_succeeded(m);
  if (m.type == MessageType::StateUpdate && version_ >= 4) {
    auto update = decode_state_update(m.payload);
    if (!update) return refuse(update.error().message);
    if (events_.state) events_.state(update.value());
    return;
  }
  if (m.type == MessageType::ConnectionsAck && connections_allowed_) {
    auto acks = decode_connections_ack(m.payload);
    if (!acks) return refuse("bad CONNECTIONS_ACK: " + acks.error().message);
    auto h = handlers_;
    if (h->acks) h->acks(acks.value());
    return;
  }
  refuse(std::string("unexpected ") + to_string(m.type) + " from the successor " +
         (connections_allowed_ ? "after its probation" : "in its probation"));
}

void SuccessorLink::take_succeeded(Message& m) {
  auto s = decode_succeeded(m.payload);
  if (!s) return refuse("bad SUCCEEDED: " + s.error().message);
  const auto pid = static_cast<pid_t>(s->pid);
  if (pid == 0) {
    newer_unnamed_ = true;
  } else {
    // Taken now, while the newer process certainly lives (it just sent READY
    // to its predecessor, or was relayed while it did): no pid-reuse accident.
    newer_.push_back(ProcessHandle::open(pid));
  }
  spdlog::info("upgrade: successor pid {} commits to a newer generation{}", pid_,
               pid ? " (pid " + std::to_string(pid) + ")" : std::string());
  if (events_.succeeded) events_.succeeded(pid);
}

bool SuccessorLink::newer_generation_alive() const {
  if (newer_unnamed_) return true;  // a version 1 SUCCEEDED: assume so, as that version did
  return std::any_of(newer_.begin(), newer_.end(), [](const ProcessHandle& h) { return h.alive(); });
}

Result<bool> SuccessorLink::send_connections(const std::vector<ConnectionOffer>& batch) {
  if (!connections_allowed_) return Error{"no connections before the successor has passed its probation"};
  if (!link_.is_open()) return Error{"no successor to hand connections to"};
  std::vector<ConnectionEntry> entries;
  std::vector<int> fds;
  for (const auto& o : batch) {
    entries.push_back({o.id, o.kind});
    fds.push_back(o.fd);
  }
  return link_.send_now(MessageType::Connections, encode(entries), fds);
}

Status SuccessorLink::report_draining(const std::vector<GenerationReport>& reports) {
  if (!link_.is_open()) return Error{"no successor to report to"};
  return link_.send(MessageType::Draining, encode(reports, version_));
}

Status SuccessorLink::send_state_update(const std::string& key, const std::string& data) {
  if (version_ < 4) return {};
  if (!link_.is_open()) return Error{"the link to the successor is closed"};
  auto payload = encode_state_update(key, data);
  if (!payload) return payload.error();
  return link_.send(MessageType::StateUpdate, std::move(payload).value());
}

}  // namespace baton::handoff
