#pragma once
// The bookkeeping of one connection's echo stream, free of sockets so it can
// be reasoned about (and tested) alone. Every byte queued stays in one buffer
// until its echo came back identical:
//
//   [verified ........ sent ........ queued)
//    awaiting echo     not yet written
//
// Messages are boundaries in that stream, each with the time it was queued.

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <string>
#include <string_view>

namespace baton::load {

using Clock = std::chrono::steady_clock;

// xorshift64*: payloads must be unpredictable to the server (so a server that
// echoes stale or shifted data is caught), not cryptographic; and fast.
class PayloadRng {
 public:
  explicit PayloadRng(uint64_t seed) : state_(seed ? seed : 0x9e3779b97f4a7c15ull) {}
  void fill(char* out, size_t n);

 private:
  uint64_t next();
  uint64_t state_;
};

struct VerifyResult {
  bool ok = true;
  bool excess = false;        // more bytes came back than were sent
  uint64_t offset = 0;        // stream offset of the first bad byte
  unsigned char expected = 0;
  unsigned char got = 0;
  size_t bytes_verified = 0;  // good bytes in this call (before any bad one)
};

class EchoStream {
 public:
  void queue_message(size_t size, PayloadRng& rng, Clock::time_point now);

  std::string_view unsent() const;
  void mark_sent(size_t n);

  // Compares echoed bytes with what was sent; on_message(latency) runs for
  // every message whose last byte is verified by this call.
  VerifyResult verify(std::string_view echoed, Clock::time_point now,
                      const std::function<void(Clock::duration)>& on_message);

  size_t messages_in_flight() const { return messages_.size(); }
  bool idle() const { return messages_.empty(); }
  void clear();

 private:
  void compact();

  std::string buf_;          // bytes from stream offset base_ on
  uint64_t base_ = 0;        // stream offset of buf_[0]
  uint64_t verified_ = 0;
  uint64_t sent_ = 0;
  struct Message {
    uint64_t end;            // stream offset just past its last byte
    Clock::time_point queued_at;
  };
  std::deque<Message> messages_;
};

}  // namespace baton::load
