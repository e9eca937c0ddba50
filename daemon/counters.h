#pragma once
// Counters: the service's monotonic totals, by Prometheus series
// ("baton_connections_closed_total{reason=\"client\"}" -> 17). Every value is
// a whole number, so the totals travel between generations exactly (JSON,
// protocol 4's STATE_UPDATE) and merge without rounding; a histogram is its
// bucket, count and sum series, the sum kept in microseconds.
//
// A generation shows what its predecessors reported (inherited, each series
// raised to the highest value seen: reports arrive late, never lower) plus
// what it counted itself. Both only grow, so neither does the sum.

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "baton/handoff/result.h"

namespace baton::daemon {

class Counters {
 public:
  // A series name: `family` alone, or with one label.
  static std::string series(std::string_view family);
  static std::string series(std::string_view family, std::string_view label, std::string_view value);

  void add(const std::string& series, uint64_t n = 1) { values_[series] += n; }
  uint64_t value(const std::string& series) const;
  const std::map<std::string, uint64_t>& all() const { return values_; }
  bool empty() const { return values_.empty(); }

  // Each series raised to `other`'s value where that is higher.
  void raise_to(const Counters& other);
  Counters plus(const Counters& other) const;

  nlohmann::json to_json() const;
  // An object of series -> non-negative integer; anything else is an error.
  static handoff::Result<Counters> from_json(const nlohmann::json& j);

  bool operator==(const Counters&) const = default;

 private:
  std::map<std::string, uint64_t> values_;
};

// The upgrade-duration histogram's upper bounds, in seconds.
inline constexpr double kUpgradeDurationBuckets[] = {0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30};
inline constexpr const char* kUpgradeDuration = "baton_upgrade_duration_seconds";
// Counts one upgrade's duration into the histogram's bucket, count and sum series.
void observe_upgrade_duration(Counters& c, double seconds);
// A bucket's `le` label: "0.05", "1", "30".
std::string bucket_label(double bound);

}  // namespace baton::daemon
