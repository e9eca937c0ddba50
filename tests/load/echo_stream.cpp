#include "echo_stream.h"

#include <algorithm>
#include <cstring>

namespace baton::load {

uint64_t PayloadRng::next() {
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  return state_ * 0x2545f4914f6cdd1dull;
}

void PayloadRng::fill(char* out, size_t n) {
  while (n >= 8) {
    uint64_t v = next();
    std::memcpy(out, &v, 8);
    out += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t v = next();
    std::memcpy(out, &v, n);
  }
}

void EchoStream::queue_message(size_t size, PayloadRng& rng, Clock::time_point now) {
  const size_t old = buf_.size();
  buf_.resize(old + size);
  rng.fill(buf_.data() + old, size);
  messages_.push_back(Message{base_ + buf_.size(), now});
}

std::string_view EchoStream::unsent() const {
  const size_t from = static_cast<size_t>(sent_ - base_);
  return std::string_view(buf_).substr(from);
}

void EchoStream::mark_sent(size_t n) { sent_ += n; }

VerifyResult EchoStream::verify(std::string_view echoed, Clock::time_point now,
                                const std::function<void(Clock::duration)>& on_message) {
  VerifyResult r;
  // The server cannot echo what was never sent: anything beyond is excess.
  const size_t awaited = static_cast<size_t>(sent_ - verified_);
  const size_t n = std::min(echoed.size(), awaited);
  const char* want = buf_.data() + (verified_ - base_);
  const size_t good = std::memcmp(want, echoed.data(), n) == 0
                          ? n
                          : static_cast<size_t>(std::mismatch(want, want + n, echoed.data()).first - want);
  verified_ += good;
  r.bytes_verified = good;
  while (!messages_.empty() && messages_.front().end <= verified_) {
    on_message(now - messages_.front().queued_at);
    messages_.pop_front();
  }
  if (good < n) {
    r.ok = false;
    r.offset = verified_;
    r.expected = static_cast<unsigned char>(want[good]);
    r.got = static_cast<unsigned char>(echoed[good]);
  } else if (echoed.size() > awaited) {
    r.ok = false;
    r.excess = true;
    r.offset = verified_;
    r.got = static_cast<unsigned char>(echoed[n]);
  }
  compact();
  return r;
}

// Drops verified bytes from the front once they are the larger part of the
// buffer, so the copy is amortised and memory stays about pipeline * size.
void EchoStream::compact() {
  const size_t dead = static_cast<size_t>(verified_ - base_);
  if (dead == buf_.size()) {
    buf_.clear();
    base_ = verified_;
  } else if (dead >= 64 * 1024 && dead * 2 >= buf_.size()) {
    buf_.erase(0, dead);
    base_ = verified_;
  }
}

void EchoStream::clear() {
  buf_.clear();
  base_ = verified_ = sent_ = 0;
  messages_.clear();
}

}  // namespace baton::load
