#include "load_report.h"

#include <sstream>

namespace baton::load {
namespace {

nlohmann::json latency_json(const LatencyHistogram& h) {
  return {{"count", h.count()},
          {"p50", h.percentile(0.50)},
          {"p90", h.percentile(0.90)},
          {"p99", h.percentile(0.99)},
          {"max", h.max()}};
}

nlohmann::json failures_json(const Counters& c) {
  nlohmann::json j = nlohmann::json::object();
  for (size_t i = 0; i < kFailureKinds; ++i) j[std::string(failure_name(static_cast<Failure>(i)))] = c.failures[i];
  j["total"] = c.failures_total();
  return j;
}

nlohmann::json timeline_json(const TimelinePoint& p) {
  return {{"t", p.t},
          {"end_s", p.end_s},
          {"seconds", p.seconds},
          {"messages", p.delta.messages},
          {"bytes_verified", p.delta.bytes_verified},
          {"churn_ok", p.delta.churn_ok},
          {"churn_failed", p.delta.churn_failed},
          {"reconnects", p.delta.reconnects},
          {"failures", failures_json(p.delta)},
          {"p99_us", p.p99_us},
          {"max_us", p.max_us}};
}

nlohmann::json parameters_json(const LoadOptions& o) {
  return {{"connections", o.connections}, {"message_size", o.message_size}, {"pipeline", o.pipeline},
          {"rate", o.rate},               {"churn_rate", o.churn_rate},     {"duration_s", o.duration_s},
          {"timeout_ms", o.timeout_ms}, {"interval_ms", o.interval_ms}};
}

}  // namespace

int exit_status(const LoadStats& stats) {
  const Counters& c = stats.totals;
  return c.failures_total() == 0 && c.messages + c.churn_ok > 0 ? kExitOk : kExitFailures;
}

std::string timeline_line(const TimelinePoint& p) {
  std::ostringstream out;
  out << "t=" << p.t << " msgs=" << p.delta.messages << " churn_ok=" << p.delta.churn_ok
      << " failures=" << p.delta.failures_total();
  return out.str();
}

std::string summary_line(const LoadStats& stats) {
  const Counters& c = stats.totals;
  std::ostringstream out;
  out << "baton-load: messages=" << c.messages << " bytes_verified=" << c.bytes_verified
      << " churn_ok=" << c.churn_ok << " churn_failed=" << c.churn_failed << " failures=" << c.failures_total();
  for (size_t i = 0; i < kFailureKinds; ++i) out << ' ' << failure_name(static_cast<Failure>(i)) << '=' << c.failures[i];
  const auto& h = stats.persistent_latency;
  out << " p50_us=" << h.percentile(0.50) << " p99_us=" << h.percentile(0.99) << " max_us=" << h.max();
  return out.str();
}

nlohmann::json report_json(const LoadOptions& options, const LoadStats& stats, const RunInfo& run) {
  const Counters& c = stats.totals;
  nlohmann::json timeline = nlohmann::json::array();
  for (const auto& p : stats.timeline) timeline.push_back(timeline_json(p));
  return {
      {"target", options.target.to_string()},
      {"duration_s", run.run_seconds},
      {"drain_s", run.drain_seconds},
      {"started_monotonic_us", run.started_monotonic_us},
      {"interrupted", run.interrupted},
      {"aborted", run.aborted},
      {"parameters", parameters_json(options)},
      {"persistent",
       {{"connections", options.connections},
        {"connected_at_start", run.connected_at_start},
        {"messages", c.messages},
        {"bytes_verified", c.bytes_verified},
        {"reconnects", c.reconnects},
        {"reconnect_attempts", c.reconnect_attempts},
        {"unclean_closes", c.unclean_closes}}},
      {"churn",
       {{"attempted", c.churn_attempted},
        {"succeeded", c.churn_ok},
        {"failed", c.churn_failed},
        {"skipped", c.churn_skipped}}},
      {"failures", failures_json(c)},
      {"errno_texts", stats.errno_texts},
      {"latency_us", {{"persistent", latency_json(stats.persistent_latency)}, {"churn", latency_json(stats.churn_latency)}}},
      {"timeline", std::move(timeline)},
      {"exit_status", exit_status(stats)},
  };
}

}  // namespace baton::load
