#include "load_stats.h"

#include <cerrno>
#include <cmath>

namespace baton::load {
namespace {

// The error map only explains failures; a flood of distinct texts would not help.
constexpr size_t kMaxErrnoTexts = 32;

}  // namespace

std::string_view failure_name(Failure f) {
  switch (f) {
    case Failure::Refused: return "refused";
    case Failure::Reset: return "reset";
    case Failure::Timeout: return "timeout";
    case Failure::EarlyEof: return "early_eof";
    case Failure::Mismatch: return "mismatch";
    case Failure::Stall: return "stall";
    case Failure::Other: return "other";
  }
  return "other";
}

Failure classify_connect_errno(int err) {
  switch (err) {
    case ECONNREFUSED:
    case ENOENT:  // a unix socket path nobody created (yet)
      return Failure::Refused;
    case ETIMEDOUT: return Failure::Timeout;
    case ECONNRESET:
    case EPIPE: return Failure::Reset;
    default: return Failure::Other;
  }
}

Failure classify_io_errno(int err) {
  switch (err) {
    case ECONNRESET:
    case EPIPE: return Failure::Reset;
    case ETIMEDOUT: return Failure::Timeout;
    default: return Failure::Other;
  }
}

uint64_t Counters::failures_total() const {
  uint64_t n = 0;
  for (auto f : failures) n += f;
  return n;
}

void LoadStats::count_failure(Failure f, const std::string& detail) {
  ++totals.failures[static_cast<size_t>(f)];
  if (detail.empty()) return;
  auto it = errno_texts.find(detail);
  if (it != errno_texts.end()) ++it->second;
  else if (errno_texts.size() < kMaxErrnoTexts) errno_texts.emplace(detail, 1);
  else ++errno_texts["(other texts)"];
}

void LoadStats::record_message(uint64_t latency_us) {
  ++totals.messages;
  persistent_latency.record(latency_us);
  interval_latency_.record(latency_us);
}

const TimelinePoint& LoadStats::close_interval(int t, double end_s, double seconds) {
  TimelinePoint p;
  p.t = t;
  p.end_s = end_s;
  p.seconds = seconds;
  auto diff = [](uint64_t now, uint64_t before) { return now - before; };
  const Counters& a = totals;
  const Counters& b = interval_start_;
  p.delta.messages = diff(a.messages, b.messages);
  p.delta.bytes_verified = diff(a.bytes_verified, b.bytes_verified);
  p.delta.churn_attempted = diff(a.churn_attempted, b.churn_attempted);
  p.delta.churn_ok = diff(a.churn_ok, b.churn_ok);
  p.delta.churn_failed = diff(a.churn_failed, b.churn_failed);
  p.delta.churn_skipped = diff(a.churn_skipped, b.churn_skipped);
  p.delta.reconnect_attempts = diff(a.reconnect_attempts, b.reconnect_attempts);
  p.delta.reconnects = diff(a.reconnects, b.reconnects);
  p.delta.unclean_closes = diff(a.unclean_closes, b.unclean_closes);
  for (size_t i = 0; i < kFailureKinds; ++i) p.delta.failures[i] = diff(a.failures[i], b.failures[i]);
  p.p99_us = interval_latency_.percentile(0.99);
  p.max_us = interval_latency_.max();
  interval_start_ = totals;
  interval_latency_.clear();
  timeline.push_back(p);
  return timeline.back();
}

}  // namespace baton::load
