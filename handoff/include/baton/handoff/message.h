#pragma once
// The hand-off wire format. One message per SOCK_SEQPACKET datagram:
//
//   offset 0  u32 magic    "BATN" (0x4241544e)
//          4  u16 version  kFrameVersion (the layout of this header)
//          6  u16 type     MessageType
//          8  u32 length   payload bytes that follow, exactly
//         12  payload
//
// All integers big-endian. File descriptors travel beside a message as
// SCM_RIGHTS, at most kMaxFdsPerMessage each. docs/protocol.md is the prose.
//
// Versions: the header's version is the framing version, which changes only
// with the header's layout. What messages exist is the protocol version,
// agreed per hand-off: the predecessor advertises the newest it speaks in
// the environment of the process it starts (kVersionVariable), the
// successor answers in HELLO with the lower of that and its own, and both
// speak exactly that version from then on. A message type (or a field) is
// only ever added with a new protocol version and is sent only to a peer
// that agreed to it.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "baton/handoff/result.h"

namespace baton::handoff {

inline constexpr uint32_t kMagic = 0x4241544e;
inline constexpr uint16_t kFrameVersion = 1;
// 1: HELLO .. COMMIT, DRAINING, CONNECTIONS, CONNECTIONS_ACK.
// 2: SERVING (probation), SUCCEEDED {pid}.
// 3: STATE (the caller's own state and fds, before LISTENERS_END).
// 4: STATE_UPDATE (the caller's live state, at READY and after COMMIT).
inline constexpr uint16_t kProtocolVersion = 4;
inline constexpr uint16_t kMinProtocolVersion = 1;
// Set by the predecessor in the new process's environment: the newest
// protocol version it speaks. Absent: a predecessor that predates it (1).
inline constexpr const char* kVersionVariable = "BATON_HANDOFF_VERSION";
inline constexpr size_t kHeaderSize = 12;
inline constexpr size_t kMaxPayload = 60 * 1024;  // one datagram, well under the socket buffer
// The kernel caps SCM_RIGHTS at SCM_MAX_FD (253) fds per message.
inline constexpr size_t kMaxFdsPerMessage = 253;

enum class MessageType : uint16_t {
  Hello = 1,         // successor -> predecessor: {pid, protocol version}
  Listeners = 2,     // predecessor -> successor: a batch of listener entries + their fds
  ListenersEnd = 3,  // predecessor -> successor: {total listeners sent}
  Ready = 4,         // successor -> predecessor: {pid}: every listener is adopted
  Commit = 5,        // predecessor -> successor: {}: the hand-off stands, start accepting
  Draining = 6,      // predecessor -> successor, after COMMIT: the older generations still draining
  Connections = 7,   // predecessor -> successor, after COMMIT: open client connections + their fds
  ConnectionsAck = 8,  // successor -> predecessor: which of them it adopted
  // Version 2:
  Succeeded = 9,     // successor -> predecessor: {pid}: it is committing to a newer generation, that pid
  Serving = 10,      // successor -> predecessor, after COMMIT: {}: it accepts; its probation starts
  // Version 3:
  State = 11,        // predecessor -> successor, before LISTENERS_END: {key, data} + fds, the caller's own
  // Version 4:
  StateUpdate = 12,  // predecessor -> successor, between READY and COMMIT and after COMMIT: {key, data}, no fds
};
inline constexpr MessageType kLastMessageType = MessageType::StateUpdate;

const char* to_string(MessageType type);

struct Frame {
  MessageType type;
  std::vector<uint8_t> payload;
};

std::vector<uint8_t> encode_frame(MessageType type, std::span<const uint8_t> payload);
// Checks magic, version, type and length; the error names the field that is wrong.
Result<Frame> decode_frame(std::span<const uint8_t> datagram);

// Big-endian payload building blocks, shared by every message body.
class PayloadWriter {
 public:
  void u16(uint16_t v);
  void u32(uint32_t v);
  void str(const std::string& s);  // u16 length + bytes
  void blob(const std::string& s);  // u32 length + bytes
  const std::vector<uint8_t>& bytes() const { return buf_; }

 private:
  std::vector<uint8_t> buf_;
};

class PayloadReader {
 public:
  explicit PayloadReader(std::span<const uint8_t> data) : data_(data) {}
  Result<uint16_t> u16(const char* field);
  Result<uint32_t> u32(const char* field);
  Result<std::string> str(const char* field);
  Result<std::string> blob(const char* field);
  // Trailing bytes after the last field are an error: the length must match.
  Status finish(const char* message);

 private:
  Result<std::string> bytes(size_t len, const char* field);  // the next `len` bytes
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
};

}  // namespace baton::handoff
