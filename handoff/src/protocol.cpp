#include "baton/handoff/protocol.h"

#include <algorithm>
#include <charconv>


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

std::vector<uint8_t> encode(const Succeeded& m) {
  PayloadWriter w;
  w.u32(m.pid);
  return w.bytes();
}

Result<Succeeded> decode_succeeded(std::span<const uint8_t> payload) {
  if (payload.empty()) return Succeeded{};
  PayloadReader r(payload);
  BATON_TRY_ASSIGN(pid, r.u32("pid"));
  if (auto st = r.finish("SUCCEEDED"); !st) return st.error();
  return Succeeded{pid};
}

std::string advertised_version(pid_t predecessor) {
  return std::to_string(kProtocolVersion) + ":" + std::to_string(predecessor);
}

Result<uint16_t> agreed_version(const char* advertised, pid_t parent) {
  if (!advertised) return kMinProtocolVersion;
  const std::string text(advertised);
  auto bad = [&] { return Error{std::string(kVersionVariable) + "='" + text + "' is not VERSION:PID"}; };
  const auto colon = text.find(':');
  unsigned v = 0;
  if (colon == std::string::npos) {
    // A bare version names no parent (a build before VERSION:PID): its
    // origin is unknown, so only version 1 is safe.
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || end != text.data() + text.size() || v < kMinProtocolVersion) return bad();
    return kMinProtocolVersion;
  }
  long pid = 0;
  auto [vend, vec] = std::from_chars(text.data(), text.data() + colon, v);
  auto [pend, pec] = std::from_chars(text.data() + colon + 1, text.data() + text.size(), pid);
  if (vec != std::errc() || vend != text.data() + colon || v < kMinProtocolVersion || pec != std::errc() ||
      pend != text.data() + text.size() || pid <= 0)
    return bad();
  if (pid != parent) return kMinProtocolVersion;
  return static_cast<uint16_t>(std::min<unsigned>(v, kProtocolVersion));
}

std::vector<uint8_t> encode(const std::vector<GenerationReport>& reports, uint16_t version) {
  PayloadWriter w;
  w.u16(static_cast<uint16_t>(reports.size()));
  for (const auto& r : reports) {
    w.u32(r.pid);
    w.u32(r.generation);
    w.u32(r.connections);
    if (version >= 2) w.u32(r.probation_left_ms);
  }
  return w.bytes();
}

Result<std::vector<GenerationReport>> decode_draining(std::span<const uint8_t> payload, uint16_t version) {
  PayloadReader r(payload);
  BATON_TRY_ASSIGN(count, r.u16("count"));
  std::vector<GenerationReport> out;
  for (uint16_t i = 0; i < count; ++i) {
    BATON_TRY_ASSIGN(pid, r.u32("pid"));
    BATON_TRY_ASSIGN(generation, r.u32("generation"));
    BATON_TRY_ASSIGN(connections, r.u32("connections"));
    uint32_t probation_left_ms = 0;
    if (version >= 2) {
      BATON_TRY_ASSIGN(left, r.u32("probation_left_ms"));
      probation_left_ms = left;
    }
    out.push_back({pid, generation, connections, probation_left_ms});
  }
  if (auto st = r.finish("DRAINING"); !st) return st.error();
  return out;
}

namespace {

void put_u64(PayloadWriter& w, uint64_t v) {
  w.u32(static_cast<uint32_t>(v >> 32));
  w.u32(static_cast<uint32_t>(v));
}

Result<uint64_t> get_u64(PayloadReader& r, const char* field) {
  auto hi = r.u32(field);
  if (!hi) return hi.error();
  auto lo = r.u32(field);
  if (!lo) return lo.error();
  return (uint64_t{hi.value()} << 32) | lo.value();
}

}  // namespace

std::vector<uint8_t> encode(const std::vector<ConnectionEntry>& entries) {
  PayloadWriter w;
  w.u16(static_cast<uint16_t>(entries.size()));
  for (const auto& e : entries) {
    put_u64(w, e.id);
    w.u16(static_cast<uint16_t>(e.kind));
  }
  return w.bytes();
}

std::vector<uint8_t> encode(const std::vector<ConnectionAck>& acks) {
  PayloadWriter w;
  w.u16(static_cast<uint16_t>(acks.size()));
  for (const auto& a : acks) {
    put_u64(w, a.id);
    w.u16(a.adopted ? 1 : 0);
  }
  return w.bytes();
}

Result<std::vector<ConnectionEntry>> decode_connections(std::span<const uint8_t> payload) {
  PayloadReader r(payload);
  BATON_TRY_ASSIGN(count, r.u16("count"));
  std::vector<ConnectionEntry> out;
  for (uint16_t i = 0; i < count; ++i) {
    BATON_TRY_ASSIGN(id, get_u64(r, "id"));
    BATON_TRY_ASSIGN(kind, r.u16("kind"));
    if (kind != static_cast<uint16_t>(ConnectionKind::Tcp) && kind != static_cast<uint16_t>(ConnectionKind::Unix))
      return Error{"connection " + std::to_string(id) + " has unknown kind " + std::to_string(kind)};
    out.push_back({id, static_cast<ConnectionKind>(kind)});
  }
  if (auto st = r.finish("CONNECTIONS"); !st) return st.error();
  return out;
}

Result<std::vector<ConnectionAck>> decode_connections_ack(std::span<const uint8_t> payload) {
  PayloadReader r(payload);
  BATON_TRY_ASSIGN(count, r.u16("count"));
  std::vector<ConnectionAck> out;
  for (uint16_t i = 0; i < count; ++i) {
    BATON_TRY_ASSIGN(id, get_u64(r, "id"));
    BATON_TRY_ASSIGN(adopted, r.u16("adopted"));
    if (adopted > 1) return Error{"CONNECTIONS_ACK: 'adopted' must be 0 or 1"};
    out.push_back({id, adopted == 1});
  }
  if (auto st = r.finish("CONNECTIONS_ACK"); !st) return st.error();
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

std::vector<uint8_t> encode_state(const std::string& key, const std::string& data) {
  PayloadWriter w;
  w.str(key);
  w.blob(data);
  return w.bytes();
}

Result<std::pair<std::string, std::string>> decode_state(std::span<const uint8_t> payload) {
  PayloadReader r(payload);
  auto key = r.str("key");
  if (!key) return key.error();
  if (key->empty()) return Error{"STATE: empty key"};
  auto data = r.blob("data");
  if (!data) return data.error();
  if (auto st = r.finish("STATE"); !st) return st.error();
  return std::pair{std::move(key).value(), std::move(data).value()};
}

Result<std::vector<uint8_t>> encode_state_update(const std::string& key, const std::string& data) {
  auto payload = encode_state(key, data);
  if (payload.size() > kMaxPayload) return Error{"STATE_UPDATE '" + key + "' is larger than one message"};
  return payload;
}

Result<StateUpdate> decode_state_update(std::span<const uint8_t> payload) {
  auto item = decode_state(payload);
  if (!item) return Error{"bad STATE_UPDATE: " + item.error().message};
  return StateUpdate{std::move(item->first), std::move(item->second)};
}

Result<std::vector<OutgoingMessage>> listener_messages(const std::vector<ListenerOffer>& offers,
                                                       const std::vector<StateOffer>& state) {
  // A batch ends at kMaxFdsPerMessage fds or when the next entry would not
  // fit in one payload, whichever comes first.
  std::vector<OutgoingMessage> out;
  std::vector<ListenerEntry> entries;
  std::vector<int> fds;
  size_t payload = 2;  // the entry count
  auto flush = [&] {
    if (entries.empty()) return;
    out.push_back({MessageType::Listeners, encode(entries), std::move(fds)});
    entries.clear();
    fds.clear();
    payload = 2;
  };
  for (const auto& o : offers) {
    if (entry_size(o) + 2 > kMaxPayload) return Error{"listener '" + o.name + "' is too long to announce"};
    if (fds.size() == kMaxFdsPerMessage || payload + entry_size(o) > kMaxPayload) flush();
    entries.push_back({o.name, o.configured, o.bound});
    fds.push_back(o.fd);
    payload += entry_size(o);
  }
  flush();
  for (const auto& item : state) {
    if (item.key.empty() || item.key.size() > 255) return Error{"state key must be 1 to 255 bytes"};
    if (item.fds.size() > kMaxFdsPerMessage)
      return Error{"state '" + item.key + "' carries " + std::to_string(item.fds.size()) + " fds, more than " +
                   std::to_string(kMaxFdsPerMessage)};
    auto payload_bytes = encode_state(item.key, item.data);
    if (payload_bytes.size() > kMaxPayload) return Error{"state '" + item.key + "' is too large for one message"};
    out.push_back({MessageType::State, std::move(payload_bytes), item.fds});
  }
  out.push_back({MessageType::ListenersEnd, encode(ListenersEnd{static_cast<uint32_t>(offers.size())}), {}});
  return out;
}

Status send_listeners(HandoffChannel& channel, const std::vector<ListenerOffer>& offers) {
  auto messages = listener_messages(offers);
  if (!messages) return messages.error();
  for (const auto& m : messages.value())
    if (auto st = channel.send(m.type, m.payload, m.fds); !st) return st;
  return {};
}

}  // namespace baton::handoff
