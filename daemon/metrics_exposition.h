#pragma once
// The Prometheus text exposition format (version 0.0.4) of batond's metrics:
// every family batond knows, with its HELP and TYPE, and the samples it has.
// docs/operations.md lists them.

#include <string>
#include <vector>

#include "counters.h"

namespace baton::daemon {

inline constexpr const char* kExpositionContentType = "text/plain; version=0.0.4; charset=utf-8";

// A gauge's value now: its series (family and labels, as Counters::series
// writes them) and value.
struct GaugeSample {
  std::string series;
  double value = 0;
};

// Counters (their families known here; an unknown one is skipped, so a newer
// generation's series never breaks an older one's output) and gauges.
std::string render_exposition(const Counters& counters, const std::vector<GaugeSample>& gauges);

}  // namespace baton::daemon
