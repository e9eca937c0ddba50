// Fuzzes the hand-off wire format without sockets: decode_frame on the whole
// input, then the body decoder its type names; and every body decoder on the
// bytes after the 12-byte header, whatever the header says, so that bodies are
// explored even while the fuzzer has not yet matched magic and length.
//
// Beyond "no crash, no sanitizer report", it checks what the format promises:
// a frame that decodes is re-encoded to the very same bytes, and so is every
// body that decodes (each body must be consumed exactly, so decode is the
// inverse of encode).

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string_view>
#include <vector>

#include "baton/handoff/message.h"
#include "baton/handoff/protocol.h"

namespace {

using namespace baton::handoff;
using Bytes = std::span<const uint8_t>;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_handoff_frame: invariant broken: %s\n", what);
  std::abort();
}

bool same(const std::vector<uint8_t>& a, Bytes b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

// Decodes `body` as `type`; if that succeeds, encoding the result must give `body` back.
void check_body(MessageType type, Bytes body) {
  switch (type) {
    case MessageType::Hello:
      if (auto m = decode_hello(body)) {
        if (!same(encode(*m), body)) fail("encode(decode_hello(p)) != p");
      }
      break;
    case MessageType::Listeners:
      if (auto m = decode_listeners(body)) {
        if (!same(encode(*m), body)) fail("encode(decode_listeners(p)) != p");
      }
      break;
    case MessageType::ListenersEnd:
      if (auto m = decode_listeners_end(body)) {
        if (!same(encode(*m), body)) fail("encode(decode_listeners_end(p)) != p");
      }
      break;
    case MessageType::Ready:
      if (auto m = decode_ready(body)) {
        if (!same(encode(*m), body)) fail("encode(decode_ready(p)) != p");
      }
      break;
    case MessageType::Draining:
      if (auto m = decode_draining(body)) {
        if (!same(encode(*m), body)) fail("encode(decode_draining(p)) != p");
      }
      // Version 1 entries lack probation_left_ms.
      if (auto m = decode_draining(body, 1)) {
        if (!same(encode(*m, 1), body)) fail("encode(decode_draining(p, 1), 1) != p");
      }
      break;
    case MessageType::Succeeded:
      if (auto m = decode_succeeded(body)) {
        // Empty is baton 0.1.0's SUCCEEDED: pid 0, never sent so again.
        if (body.empty() ? m->pid != 0 : !same(encode(*m), body)) fail("encode(decode_succeeded(p)) != p");
      }
      break;
    case MessageType::Connections:
      if (auto m = decode_connections(body)) {
        for (const auto& e : *m)
          if (e.kind != ConnectionKind::Tcp && e.kind != ConnectionKind::Unix) fail("decode_connections: bad kind");
        if (!same(encode(*m), body)) fail("encode(decode_connections(p)) != p");
      }
      break;
    case MessageType::ConnectionsAck:
      if (auto m = decode_connections_ack(body)) {
        if (!same(encode(*m), body)) fail("encode(decode_connections_ack(p)) != p");
      }
      break;
    default:  // COMMIT, SERVING: no body decoder (the receivers check the payload is empty)
      break;
  }
}

constexpr MessageType kDecodable[] = {MessageType::Hello,     MessageType::Listeners,   MessageType::ListenersEnd,
                                      MessageType::Ready,     MessageType::Draining,    MessageType::Connections,
                                      MessageType::ConnectionsAck, MessageType::Succeeded};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Bytes input(data, size);

  if (auto frame = decode_frame(input)) {
    if (frame->payload.size() > kMaxPayload) fail("decode_frame accepted a payload above kMaxPayload");
    if (!same(encode_frame(frame->type, frame->payload), input)) fail("encode_frame(decode_frame(d)) != d");
    if (to_string(frame->type) == std::string_view("UNKNOWN")) fail("decode_frame accepted a type with no name");
    check_body(frame->type, frame->payload);
  }

  // The bodies on their own, after whatever header (or none, for short inputs).
  const Bytes body = size >= kHeaderSize ? input.subspan(kHeaderSize) : input;
  for (MessageType t : kDecodable) check_body(t, body);
  return 0;
}
