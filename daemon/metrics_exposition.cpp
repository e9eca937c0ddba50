#include "metrics_exposition.h"

#include <cstdio>
#include <string_view>

namespace baton::daemon {
namespace {

enum class Type { Counter, Gauge, Histogram };

struct Family {
  const char* name;
  Type type;
  const char* help;
};

constexpr Family kFamilies[] = {
    {"baton_connections_accepted_total", Type::Counter, "Client connections accepted, by every generation."},
    {"baton_connections_closed_total", Type::Counter, "Client connections closed, by why."},
    {"baton_connections_handed_off_total", Type::Counter, "Client connections passed to a newer generation (drain = handoff)."},
    {"baton_bytes_echoed_total", Type::Counter, "Bytes read from clients and written back."},
    {"baton_accept_errors_total", Type::Counter, "accept(2) failures on the listeners, by errno name."},
    {"baton_upgrades_total", Type::Counter, "Upgrades started, by outcome."},
    {kUpgradeDuration, Type::Histogram, "From an upgrade's request to its end (probation passed, or failed)."},
    {"baton_app_restarts_total", Type::Counter, "Restarts of the supervised app, by outcome."},
    {"baton_app_crashes_total", Type::Counter, "Supervised app instances that exited unasked."},
    {"baton_open_connections", Type::Gauge, "Client connections this generation serves now."},
    {"baton_draining_generations", Type::Gauge, "Older generations still draining."},
    {"baton_draining_connections", Type::Gauge, "Client connections older generations still drain."},
    {"baton_generation", Type::Gauge, "The serving generation's number (1 at a fresh start)."},
    {"baton_loop_lag_seconds", Type::Gauge, "How late the event loop's last probe timer fired."},
    {"baton_loop_lag_max_seconds", Type::Gauge, "The latest probe timer of this generation's life."},
    {"baton_app_ready", Type::Gauge, "1 when the supervised app's serving instance is ready."},
};

const char* type_name(Type t) {
  switch (t) {
    case Type::Counter: return "counter";
    case Type::Gauge: return "gauge";
    case Type::Histogram: return "histogram";
  }
  return "untyped";
}

// The family a series belongs to: the name before its labels.
std::string_view family_of(std::string_view series) { return series.substr(0, series.find('{')); }

std::string number(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

void header(std::string& out, const Family& f) {
  out += "# HELP " + std::string(f.name) + " " + f.help + "\n";
  out += "# TYPE " + std::string(f.name) + " " + type_name(f.type) + "\n";
}

// Buckets in ascending order (the series map sorts them as text), each
// cumulative already; the sum from microseconds to seconds.
void histogram(std::string& out, const Family& f, const Counters& c) {
  const std::string name = f.name;
  header(out, f);
  for (double b : kUpgradeDurationBuckets) {
    const auto s = Counters::series(name + "_bucket", "le", bucket_label(b));
    out += s + " " + std::to_string(c.value(s)) + "\n";
  }
  const auto inf = Counters::series(name + "_bucket", "le", "+Inf");
  out += inf + " " + std::to_string(c.value(inf)) + "\n";
  out += name + "_sum " + number(static_cast<double>(c.value(name + "_sum_us")) / 1e6) + "\n";
  out += name + "_count " + std::to_string(c.value(name + "_count")) + "\n";
}

}  // namespace

std::string render_exposition(const Counters& counters, const std::vector<GaugeSample>& gauges) {
  std::string out;
  for (const auto& f : kFamilies) {
    if (f.type == Type::Histogram) {
      histogram(out, f, counters);
      continue;
    }
    std::string samples;
    if (f.type == Type::Counter) {
      for (const auto& [series, v] : counters.all())
        if (family_of(series) == f.name) samples += series + " " + std::to_string(v) + "\n";
    } else {
      for (const auto& g : gauges)
        if (family_of(g.series) == f.name) samples += g.series + " " + number(g.value) + "\n";
    }
    if (samples.empty()) continue;
    header(out, f);
    out += samples;
  }
  return out;
}

}  // namespace baton::daemon
