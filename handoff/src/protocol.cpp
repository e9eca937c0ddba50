#include "baton/handoff/protocol.h"


#include "baton/handoff/channel.h"

namespace baton::handoff {

#define BATON_TRY_ASSIGN(var, expr)       \
  auto var##_result = (expr);             \
  if (!var##_result) return var##_result.error(); \
  auto var = std::move(var##_result).value()

std::vector<uint8_t> encode(const Hello& m) {
  PayloadWriter w;
  w.u32(m.pid);
  w.u16(m.version);
  return w.bytes();
}

std::vector<uint8_t> encode(const std::vector<ListenerEntry>& entries) {
  PayloadWriter w;
  w.u16(static_cast<uint16_t>(entries.size()));
  for (const auto& e : entries) {
    w.str(e.name);
    w.str(e.configured);
    w.str(e.bound);
  }
  return w.bytes();
}

std::vector<uint8_t> encode(const ListenersEnd& m) {
  PayloadWriter w;
  w.u32(m.total);
  return w.bytes();
}

std::vector<uint8_t> encode(const Ready& m) {
  PayloadWriter w;
  w.u32(m.pid);
  return w.bytes();
}

std::vector<uint8_t> encode(const std::vector<GenerationReport>& reports) {
  PayloadWriter w;
  w.u16(static_cast<uint16_t>(reports.size()));
  for (const auto& r : reports) {
    w.u32(r.pid);
    w.u32(r.generation);
    w.u32(r.connections);
  }
  return w.bytes();
}

Result<std::vector<GenerationReport>> decode_draining(std::span<const uint8_t> payload) {
  PayloadReader r(payload);
  BATON_TRY_ASSIGN(count, r.u16("count"));
  std::vector<GenerationReport> out;
  for (uint16_t i = 0; i < count; ++i) {
    BATON_TRY_ASSIGN(pid, r.u32("pid"));
    BATON_TRY_ASSIGN(generation, r.u32("generation"));
    BATON_TRY_ASSIGN(connections, r.u32("connections"));
    out.push_back({pid, generation, connections});
  }
  if (auto st = r.finish("DRAINING"); !st) return st.error();
  return out;
}

Result<Hello> decode_hello(std::span<const uint8_t> payload) {
  PayloadReader r(payload);
  BATON_TRY_ASSIGN(pid, r.u32("pid"));
  BATON_TRY_ASSIGN(version, r.u16("version"));
  if (auto st = r.finish("HELLO"); !st) return st.error();
  return Hello{pid, version};
}

Result<std::vector<ListenerEntry>> decode_listeners(std::span<const uint8_t> payload) {
  PayloadReader r(payload);
  BATON_TRY_ASSIGN(count, r.u16("count"));
  std::vector<ListenerEntry> entries;
  for (uint16_t i = 0; i < count; ++i) {
    BATON_TRY_ASSIGN(name, r.str("name"));
    BATON_TRY_ASSIGN(configured, r.str("configured"));
    BATON_TRY_ASSIGN(bound, r.str("bound"));
    entries.push_back({std::move(name), std::move(configured), std::move(bound)});
  }
  if (auto st = r.finish("LISTENERS"); !st) return st.error();
  return entries;
}

Result<ListenersEnd> decode_listeners_end(std::span<const uint8_t> payload) {
  PayloadReader r(payload);
  BATON_TRY_ASSIGN(total, r.u32("total"));
  if (auto st = r.finish("LISTENERS_END"); !st) return st.error();
  return ListenersEnd{total};
}

Result<Ready> decode_ready(std::span<const uint8_t> payload) {
  PayloadReader r(payload);
  BATON_TRY_ASSIGN(pid, r.u32("pid"));
  if (auto st = r.finish("READY"); !st) return st.error();
  return Ready{pid};
}

#undef BATON_TRY_ASSIGN

namespace {

// Encoded size of one entry in a LISTENERS payload (three u16-prefixed strings).
size_t entry_size(const ListenerOffer& o) { return 6 + o.name.size() + o.configured.size() + o.bound.size(); }

}  // namespace

Status send_listeners(HandoffChannel& channel, const std::vector<ListenerOffer>& offers) {
  // A batch ends at kMaxFdsPerMessage fds or when the next entry would not
  // fit in one payload, whichever comes first.
  std::vector<ListenerEntry> entries;
  std::vector<int> fds;
  size_t payload = 2;  // the entry count
  auto flush = [&]() -> Status {
    if (entries.empty()) return {};
    auto st = channel.send(MessageType::Listeners, encode(entries), fds);
    entries.clear();
    fds.clear();
    payload = 2;
    return st;
  };
  for (const auto& o : offers) {
    if (entry_size(o) + 2 > kMaxPayload) return Error{"listener '" + o.name + "' is too long to announce"};
    if (fds.size() == kMaxFdsPerMessage || payload + entry_size(o) > kMaxPayload) {
      if (auto st = flush(); !st) return st;
    }
    entries.push_back({o.name, o.configured, o.bound});
    fds.push_back(o.fd);
    payload += entry_size(o);
  }
  if (auto st = flush(); !st) return st;
  return channel.send(MessageType::ListenersEnd, encode(ListenersEnd{static_cast<uint32_t>(offers.size())}));
}

}  // namespace baton::handoff
