#pragma once
// What a connection hand-off cost each connection: how long it was read by
// neither generation (ConnectionHandoff::stops), summed up for status JSON
// (`handoff_stop_us`), the log and the successor, which shows its
// predecessor's figure until it hands off connections of its own.

#include <chrono>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace baton::daemon {

// At most this many samples go with the summary (evenly spread over the
// sorted stops, both ends kept): enough for a distribution, one message.
inline constexpr size_t kHandoffStopSamples = 1000;

// {"count", "p50", "p90", "p99", "max" (µs), "samples": [µs, ...]}; null when
// no connection was handed off.
nlohmann::json summarize_handoff_stops(std::vector<std::chrono::microseconds> stops);
// "p50 0.41 ms, p99 1.20 ms, max 1.31 ms over 50 connection(s)", from the above.
std::string describe_handoff_stops(const nlohmann::json& summary);

}  // namespace baton::daemon
