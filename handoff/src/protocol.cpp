#include "baton/handoff/protocol.h"

#include <algorithm>

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

Status send_listeners(HandoffChannel& channel, const std::vector<ListenerOffer>& offers) {
  for (size_t begin = 0; begin < offers.size(); begin += kMaxFdsPerMessage) {
    size_t end = std::min(offers.size(), begin + kMaxFdsPerMessage);
    std::vector<ListenerEntry> entries;
    std::vector<int> fds;
    for (size_t i = begin; i < end; ++i) {
      entries.push_back({offers[i].name, offers[i].configured, offers[i].bound});
      fds.push_back(offers[i].fd);
    }
    if (auto st = channel.send(MessageType::Listeners, encode(entries), fds); !st) return st;
  }
  return channel.send(MessageType::ListenersEnd, encode(ListenersEnd{static_cast<uint32_t>(offers.size())}));
}

}  // namespace baton::handoff
