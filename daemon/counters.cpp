#include "counters.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace baton::daemon {
namespace {

// The exposition format's label value escapes: backslash, quote, newline.
std::string escape_label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

}  // namespace

std::string bucket_label(double bound) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", bound);
  return buf;
}

std::string Counters::series(std::string_view family) { return std::string(family); }

std::string Counters::series(std::string_view family, std::string_view label, std::string_view value) {
  return std::string(family) + "{" + std::string(label) + "=\"" + escape_label(value) + "\"}";
}

uint64_t Counters::value(const std::string& series) const {
  auto it = values_.find(series);
  return it == values_.end() ? 0 : it->second;
}

void Counters::raise_to(const Counters& other) {
  for (const auto& [k, v] : other.values_) {
    auto& mine = values_[k];
    if (v > mine) mine = v;
  }
}

Counters Counters::plus(const Counters& other) const {
  Counters sum = *this;
  for (const auto& [k, v] : other.values_) sum.values_[k] += v;
  return sum;
}

nlohmann::json Counters::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : values_) j[k] = v;
  return j;
}

handoff::Result<Counters> Counters::from_json(const nlohmann::json& j) {
  if (!j.is_object()) return handoff::Error{"counters: not a JSON object"};
  Counters c;
  for (const auto& [k, v] : j.items()) {
    if (k.empty() || k.size() > 256) return handoff::Error{"counters: a series name is empty or too long"};
    if (!v.is_number_unsigned()) return handoff::Error{"counters: '" + k + "' is not a non-negative integer"};
    c.values_[k] = v.get<uint64_t>();
  }
  return c;
}

void observe_upgrade_duration(Counters& c, double seconds) {
  const std::string family = kUpgradeDuration;
  for (double b : kUpgradeDurationBuckets)
    if (seconds <= b) c.add(Counters::series(family + "_bucket", "le", bucket_label(b)));
  c.add(Counters::series(family + "_bucket", "le", "+Inf"));
  c.add(Counters::series(family + "_count"));
  c.add(Counters::series(family + "_sum_us"), static_cast<uint64_t>(std::llround(std::max(0.0, seconds) * 1e6)));
}

}  // namespace baton::daemon
