#include "baton/handoff/message.h"

#include <cstdio>

namespace baton::handoff {
namespace {

uint32_t load_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

}  // namespace

const char* to_string(MessageType type) {
  switch (type) {
    case MessageType::Hello: return "HELLO";
    case MessageType::Listeners: return "LISTENERS";
    case MessageType::ListenersEnd: return "LISTENERS_END";
    case MessageType::Ready: return "READY";
    case MessageType::Commit: return "COMMIT";
    case MessageType::Draining: return "DRAINING";
    case MessageType::Connections: return "CONNECTIONS";
    case MessageType::ConnectionsAck: return "CONNECTIONS_ACK";
    case MessageType::Succeeded: return "SUCCEEDED";
    case MessageType::Serving: return "SERVING";
    case MessageType::State: return "STATE";
    case MessageType::StateUpdate: return "STATE_UPDATE";
  }
  return "UNKNOWN";
}

std::vector<uint8_t> encode_frame(MessageType type, std::span<const uint8_t> payload) {
  PayloadWriter w;
  w.u32(kMagic);
  w.u16(kFrameVersion);
  w.u16(static_cast<uint16_t>(type));
  w.u32(static_cast<uint32_t>(payload.size()));
  std::vector<uint8_t> out = w.bytes();
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

Result<Frame> decode_frame(std::span<const uint8_t> d) {
  if (d.size() < kHeaderSize)
    return Error{"message truncated: " + std::to_string(d.size()) + " bytes, header needs " +
                 std::to_string(kHeaderSize)};
  uint32_t magic = load_u32(d.data());
  if (magic != kMagic) return Error{"bad magic " + hex32(magic) + ", expected " + hex32(kMagic)};
  uint16_t version = load_u16(d.data() + 4);
  if (version != kFrameVersion)
    return Error{"unsupported frame version " + std::to_string(version) + ", expected " +
                 std::to_string(kFrameVersion)};
  uint16_t type = load_u16(d.data() + 6);
  if (type < static_cast<uint16_t>(MessageType::Hello) || type > static_cast<uint16_t>(kLastMessageType))
    return Error{"unknown message type " + std::to_string(type)};
  uint32_t length = load_u32(d.data() + 8);
  if (length > kMaxPayload)
    return Error{"length field says " + std::to_string(length) + " payload bytes, more than the " +
                 std::to_string(kMaxPayload) + " a message may carry"};
  if (length != d.size() - kHeaderSize)
    return Error{"length field says " + std::to_string(length) + " payload bytes, datagram carries " +
                 std::to_string(d.size() - kHeaderSize)};
  return Frame{static_cast<MessageType>(type), std::vector<uint8_t>(d.begin() + kHeaderSize, d.end())};
}

void PayloadWriter::u16(uint16_t v) {
  buf_.push_back(static_cast<uint8_t>(v >> 8));
  buf_.push_back(static_cast<uint8_t>(v));
}

void PayloadWriter::u32(uint32_t v) {
  u16(static_cast<uint16_t>(v >> 16));
  u16(static_cast<uint16_t>(v));
}

void PayloadWriter::str(const std::string& s) {
  u16(static_cast<uint16_t>(s.size()));
  buf_.insert(buf_.end(), s.begin(), s.end());
}

void PayloadWriter::blob(const std::string& s) {
  u32(static_cast<uint32_t>(s.size()));
  buf_.insert(buf_.end(), s.begin(), s.end());
}

Result<uint16_t> PayloadReader::u16(const char* field) {
  if (data_.size() - pos_ < 2) return Error{std::string("payload truncated in field '") + field + "'"};
  uint16_t v = load_u16(data_.data() + pos_);
  pos_ += 2;
  return v;
}

Result<uint32_t> PayloadReader::u32(const char* field) {
  if (data_.size() - pos_ < 4) return Error{std::string("payload truncated in field '") + field + "'"};
  uint32_t v = load_u32(data_.data() + pos_);
  pos_ += 4;
  return v;
}

Result<std::string> PayloadReader::str(const char* field) {
  auto len = u16(field);
  if (!len) return len.error();
  return bytes(len.value(), field);
}

Result<std::string> PayloadReader::blob(const char* field) {
  auto len = u32(field);
  if (!len) return len.error();
  return bytes(len.value(), field);
}

Result<std::string> PayloadReader::bytes(size_t len, const char* field) {
  if (data_.size() - pos_ < len) return Error{std::string("payload truncated in field '") + field + "'"};
  std::string s(reinterpret_cast<const char*>(data_.data() + pos_), len);
  pos_ += len;
  return s;
}

Status PayloadReader::finish(const char* message) {
  if (pos_ != data_.size())
    return Error{std::string(message) + " payload has " + std::to_string(data_.size() - pos_) + " unexpected trailing bytes"};
  return {};
}

}  // namespace baton::handoff
