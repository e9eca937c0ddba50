#include "handoff_stops.h"

#include <algorithm>
#include <cstdio>

namespace baton::daemon {

nlohmann::json summarize_handoff_stops(std::vector<std::chrono::microseconds> stops) {
  if (stops.empty()) return nullptr;
  std::sort(stops.begin(), stops.end());
  const size_t n = stops.size();
  // The nearest rank: the smallest stop at least q of them do not exceed.
  auto at = [&](double q) { return stops[std::min(n - 1, static_cast<size_t>(q * static_cast<double>(n) + 0.999999) - 1)].count(); };
  nlohmann::json samples = nlohmann::json::array();
  const size_t k = std::min(n, kHandoffStopSamples);
  for (size_t i = 0; i < k; ++i) samples.push_back(stops[k == 1 ? 0 : i * (n - 1) / (k - 1)].count());
  return {{"count", n}, {"p50", at(0.50)}, {"p90", at(0.90)}, {"p99", at(0.99)}, {"max", stops.back().count()},
          {"samples", std::move(samples)}};
}

std::string describe_handoff_stops(const nlohmann::json& summary) {
  if (!summary.is_object()) return "no connection handed off";
  auto ms = [&](const char* key) { return summary.value(key, int64_t{0}) / 1000.0; };
  char buf[160];
  std::snprintf(buf, sizeof buf, "p50 %.2f ms, p99 %.2f ms, max %.2f ms over %llu connection(s)", ms("p50"), ms("p99"),
                ms("max"), static_cast<unsigned long long>(summary.value("count", uint64_t{0})));
  return buf;
}

}  // namespace baton::daemon
