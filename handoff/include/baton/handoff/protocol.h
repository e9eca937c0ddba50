#pragma once
// The bodies of the hand-off messages (see message.h for the frame around them).

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "baton/handoff/message.h"
#include "baton/handoff/result.h"
#include "baton/handoff/unique_fd.h"

namespace baton::handoff {

struct Hello {
  uint32_t pid = 0;
  uint16_t version = kProtocolVersion;
};

// One listening socket as announced; its fd travels at the same index of the
// message's SCM_RIGHTS array.
struct ListenerEntry {
  std::string name;
  std::string configured;  // the address as the operator wrote it (port may be 0)
  std::string bound;       // the address the socket is bound to (getsockname)
};

struct ListenersEnd {
  uint32_t total = 0;  // listeners sent in all LISTENERS batches
};

struct Ready {
  uint32_t pid = 0;
};

// Protocol 2: the successor is about to commit to a newer generation, `pid`.
// (baton 0.1.0 sent it empty inside version 1, after its COMMIT; it is still
// understood on receipt as "some newer one", pid 0, but never sent so.)
struct Succeeded {
  uint32_t pid = 0;
};

// A generation that handed over and is still draining, as its successor
// learns it over the channel kept open after COMMIT.
struct GenerationReport {
  uint32_t pid = 0;
  uint32_t generation = 0;
  uint32_t connections = 0;  // still open
  // Protocol 2: > 0 while it stands by, in probation, to resume should its
  // successor die (ms left of the window).
  uint32_t probation_left_ms = 0;
  bool operator==(const GenerationReport&) const = default;
};

// An established client connection handed over with `drain = handoff`. The
// old process has written back everything it owed on it and stopped
// reading; what the client sent since waits in the kernel for the new one.
enum class ConnectionKind : uint8_t { Tcp = 1, Unix = 2 };

struct ConnectionEntry {
  uint64_t id = 0;  // the old process's name for it, echoed in the ACK
  ConnectionKind kind = ConnectionKind::Tcp;
  bool operator==(const ConnectionEntry&) const = default;
};

struct ConnectionAck {
  uint64_t id = 0;
  bool adopted = false;  // false: the old process keeps it and drains it itself
  bool operator==(const ConnectionAck&) const = default;
};

// Protocol 3: state of the caller's own (batond's supervised app, say) that
// the new process needs before it can serve, with the fds that go with it.
// The hand-off library carries it as it is: `key` names it, `data` is the
// caller's encoding; the fds are received in the order they were sent.
struct StateOffer {
  std::string key;
  std::string data;
  std::vector<int> fds;  // the caller's; they stay open until the outcome is reported
};
struct InheritedState {
  std::string key;
  std::string data;
  std::vector<UniqueFd> fds;
};
// At most kMaxFdsPerMessage fds and one payload per item.
std::vector<uint8_t> encode_state(const std::string& key, const std::string& data);
Result<std::pair<std::string, std::string>> decode_state(std::span<const uint8_t> payload);
// Protocol 4: the caller's live state (batond's counters, say), sent when the
// new process said READY and again while the old one drains: the same body as
// STATE, without fds. A key may come many times; each replaces the last.
struct StateUpdate {
  std::string key;
  std::string data;
  bool operator==(const StateUpdate&) const = default;
};
// Fails if it would not fit in one message.
Result<std::vector<uint8_t>> encode_state_update(const std::string& key, const std::string& data);
// Errors read "bad STATE_UPDATE: ...".
Result<StateUpdate> decode_state_update(std::span<const uint8_t> payload);

// A connection to hand over; the fd stays the caller's.
struct ConnectionOffer {
  uint64_t id = 0;
  ConnectionKind kind = ConnectionKind::Tcp;
  int fd = -1;
};

std::vector<uint8_t> encode(const Hello&);
std::vector<uint8_t> encode(const std::vector<ListenerEntry>&);
std::vector<uint8_t> encode(const ListenersEnd&);
std::vector<uint8_t> encode(const Ready&);
std::vector<uint8_t> encode(const Succeeded&);
// DRAINING: its entries carry probation_left_ms from protocol version 2 on.
std::vector<uint8_t> encode(const std::vector<GenerationReport>&, uint16_t version = kProtocolVersion);
std::vector<uint8_t> encode(const std::vector<ConnectionEntry>&);
std::vector<uint8_t> encode(const std::vector<ConnectionAck>&);

class HandoffChannel;

// A listener to hand over. The fd stays the caller's, and must stay open
// until the outcome is reported.
struct ListenerOffer {
  std::string name;
  std::string configured;
  std::string bound;
  int fd = -1;
};


// A message ready for the wire; its fds stay owned by whoever gave them.
struct OutgoingMessage {
  MessageType type;
  std::vector<uint8_t> payload;
  std::vector<int> fds;
};

// LISTENERS in batches of at most kMaxFdsPerMessage, then LISTENERS_END.
// With `state` (protocol 3 only), one STATE message per item before LISTENERS_END.
Result<std::vector<OutgoingMessage>> listener_messages(const std::vector<ListenerOffer>& offers,
                                                       const std::vector<StateOffer>& state = {});
// The same, sent with HandoffChannel::send (blocking, for tests and tools).
Status send_listeners(HandoffChannel& channel, const std::vector<ListenerOffer>& offers);

Result<Hello> decode_hello(std::span<const uint8_t> payload);
Result<std::vector<ListenerEntry>> decode_listeners(std::span<const uint8_t> payload);
Result<ListenersEnd> decode_listeners_end(std::span<const uint8_t> payload);
Result<Ready> decode_ready(std::span<const uint8_t> payload);
Result<Succeeded> decode_succeeded(std::span<const uint8_t> payload);
Result<std::vector<GenerationReport>> decode_draining(std::span<const uint8_t> payload,
                                                     uint16_t version = kProtocolVersion);
Result<std::vector<ConnectionEntry>> decode_connections(std::span<const uint8_t> payload);
Result<std::vector<ConnectionAck>> decode_connections_ack(std::span<const uint8_t> payload);

// What a predecessor puts in kVersionVariable: "VERSION:PID", the newest
// version it speaks and its own pid.
std::string advertised_version(pid_t predecessor);
// The protocol version a successor speaks, from what was advertised in
// kVersionVariable (nullptr: absent, a version 1 predecessor). `parent` is
// the successor's parent pid: an advertisement naming another pid leaked
// through a process that did not set its own (a version 1 generation passes
// its whole environment on) and is ignored, as if absent.
Result<uint16_t> agreed_version(const char* advertised, pid_t parent);

}  // namespace baton::handoff
