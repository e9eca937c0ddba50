#pragma once
// What baton-load counts: failures by reason, verified work, latencies, and
// the timeline (per second, or --interval-ms). Only verified echoes ever increase a success count.

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "latency_histogram.h"

namespace baton::load {

enum class Failure { Refused, Reset, Timeout, EarlyEof, Mismatch, Stall, Other };
constexpr size_t kFailureKinds = 7;
std::string_view failure_name(Failure f);

// Failure reason for a connect() that did not succeed.
Failure classify_connect_errno(int err);
// Failure reason for a send()/recv() error on an established connection.
Failure classify_io_errno(int err);

// Round-trip latencies (µs), shared with batond's loop-lag measure.
using stats::LatencyHistogram;

// Totals, kept cumulative; the timeline stores differences between snapshots.
struct Counters {
  uint64_t messages = 0;        // persistent messages whose echo was verified byte for byte
  uint64_t bytes_verified = 0;  // persistent echo bytes verified
  uint64_t churn_attempted = 0;
  uint64_t churn_ok = 0;
  uint64_t churn_failed = 0;
  uint64_t churn_skipped = 0;   // starts not made because the concurrency cap was reached
  uint64_t reconnect_attempts = 0;
  uint64_t reconnects = 0;      // persistent connections re-established after a failure
  uint64_t unclean_closes = 0;  // peer did not close after our shutdown(SHUT_WR) in time
  std::array<uint64_t, kFailureKinds> failures{};

  uint64_t failures_total() const;
  bool operator==(const Counters&) const = default;
};

struct TimelinePoint {
  int t = 0;              // intervals since the start (seconds with the default --interval-ms 1000)
  double end_s = 0;       // seconds since the start, at the end of this interval
  double seconds = 0;     // length of the interval (the last one may be partial)
  Counters delta;         // what happened in this interval
  uint64_t p99_us = 0;    // persistent message latency within the interval
  uint64_t max_us = 0;
};

class LoadStats {
 public:
  Counters totals;
  LatencyHistogram persistent_latency;
  LatencyHistogram churn_latency;
  std::map<std::string, uint64_t> errno_texts;  // "connect: Connection refused" -> count
  std::vector<TimelinePoint> timeline;

  // `detail` is "syscall: strerror" when an errno caused it, else empty.
  void count_failure(Failure f, const std::string& detail);
  void record_message(uint64_t latency_us);
  // Closes the current interval and returns it.
  const TimelinePoint& close_interval(int t, double end_s, double seconds);
  // Something was counted since the last interval closed.
  bool interval_has_counts() const { return !(totals == interval_start_); }

 private:
  Counters interval_start_;
  LatencyHistogram interval_latency_;
};

}  // namespace baton::load
