#pragma once
// How baton-load reports: the per-second timeline line, the final summary
// line (both on stdout, one line each so tests and people can grep them) and
// the JSON report.

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "load_options.h"
#include "load_stats.h"

namespace baton::load {

// Facts about the run itself, beside the counters.
struct RunInfo {
  double run_seconds = 0;     // from "started" to the end of sending
  double drain_seconds = 0;   // waiting for in-flight echoes and closes
  bool interrupted = false;   // ended by SIGINT/SIGTERM before --duration
  bool aborted = false;       // a second signal skipped the drain
  int connected_at_start = 0;
  // When the run phase began on steady_clock, i.e. CLOCK_MONOTONIC (µs): the
  // timeline's zero, comparable with batond's history and other processes.
  int64_t started_monotonic_us = 0;
};

// Zero failures and at least one verified echo; anything else is a failed run.
int exit_status(const LoadStats& stats);

std::string timeline_line(const TimelinePoint& p);
std::string summary_line(const LoadStats& stats);
nlohmann::json report_json(const LoadOptions& options, const LoadStats& stats, const RunInfo& run);

}  // namespace baton::load
