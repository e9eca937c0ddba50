#include "flight_recorder.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>

namespace baton::daemon {
namespace {

constexpr size_t kMaxText = 512;  // trigger, error, detail: enough to explain, bounded for the wire

std::string bounded(std::string s) {
  if (s.size() > kMaxText) s.resize(kMaxText);
  return s;
}

void insert_event(FlightRecord& r, TimelineEvent e) {
  if (r.find(e.name)) return;
  auto at = std::upper_bound(r.events.begin(), r.events.end(), e.at_us,
                             [](int64_t t, const TimelineEvent& x) { return t < x.at_us; });
  r.events.insert(at, std::move(e));
}

handoff::Result<FlightRecord> record_from_json(const nlohmann::json& j) {
  try {
    FlightRecord r;
    r.id = bounded(j.at("id").get<std::string>());
    if (r.id.empty()) return handoff::Error{"history: a record has an empty id"};
    r.kind = bounded(j.at("kind").get<std::string>());
    r.trigger = bounded(j.value("trigger", std::string()));
    r.requested_us = j.at("requested_us").get<int64_t>();
    r.requested_unix_ms = j.value("requested_unix_ms", int64_t{0});
    r.from_pid = j.value("from_pid", pid_t{0});
    r.from_generation = j.value("from_generation", 0u);
    r.to_pid = j.value("to_pid", pid_t{0});
    r.outcome = bounded(j.value("outcome", std::string("in-progress")));
    r.error = bounded(j.value("error", std::string()));
    for (const auto& e : j.at("events")) {
      insert_event(r, {bounded(e.at("name").get<std::string>()), e.at("at_us").get<int64_t>(),
                       bounded(e.value("detail", std::string()))});
    }
    return r;
  } catch (const nlohmann::json::exception& e) {
    return handoff::Error{std::string("history: malformed record: ") + e.what()};
  }
}

nlohmann::json record_json(const FlightRecord& r) {
  nlohmann::json events = nlohmann::json::array();
  for (const auto& e : r.events) {
    nlohmann::json ev{{"name", e.name}, {"at_us", e.at_us}, {"offset_us", e.at_us - r.requested_us}};
    if (!e.detail.empty()) ev["detail"] = e.detail;
    events.push_back(std::move(ev));
  }
  return {{"id", r.id},
          {"kind", r.kind},
          {"trigger", r.trigger},
          {"requested_us", r.requested_us},
          {"requested_unix_ms", r.requested_unix_ms},
          {"from_pid", r.from_pid},
          {"from_generation", r.from_generation},
          {"to_pid", r.to_pid},
          {"outcome", r.outcome},
          {"error", r.error},
          {"events", std::move(events)}};
}

}  // namespace

int64_t monotonic_us(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

const TimelineEvent* FlightRecord::find(const std::string& name) const {
  for (const auto& e : events)
    if (e.name == name) return &e;
  return nullptr;
}

std::string FlightRecorder::begin(const std::string& kind, const std::string& trigger, pid_t from_pid,
                                  unsigned from_generation) {
  FlightRecord r;
  r.requested_us = monotonic_us();
  r.requested_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
  // Unique: two records begun within a microsecond would otherwise share one.
  while (find(std::to_string(::getpid()) + "-" + std::to_string(r.requested_us))) ++r.requested_us;
  r.id = std::to_string(::getpid()) + "-" + std::to_string(r.requested_us);
  r.kind = kind;
  r.trigger = bounded(trigger);
  r.from_pid = from_pid;
  r.from_generation = from_generation;
  r.events.push_back({"requested", r.requested_us, {}});
  if (records_.size() == kCapacity) {
    text_.erase(records_.front().id);
    records_.pop_front();
  }
  records_.push_back(std::move(r));
  touch(records_.back().id);
  return records_.back().id;
}

FlightRecord* FlightRecorder::find(const std::string& id) {
  for (auto& r : records_)
    if (r.id == id) return &r;
  return nullptr;
}

void FlightRecorder::event(const std::string& id, const std::string& name, const std::string& detail, int64_t at_us) {
  auto* r = find(id);
  if (!r || r->find(name)) return;
  insert_event(*r, {name, at_us ? at_us : monotonic_us(), bounded(detail)});
  touch(id);
}

void FlightRecorder::set_to_pid(const std::string& id, pid_t pid) {
  if (auto* r = find(id)) {
    r->to_pid = pid;
    touch(id);
  }
}

void FlightRecorder::finish(const std::string& id, bool ok, const std::string& error) {
  auto* r = find(id);
  if (!r || r->outcome != "in-progress") return;
  r->outcome = ok ? "ok" : "failed";
  r->error = bounded(error);
  touch(id);
}

std::string FlightRecorder::upgrade_to(pid_t pid) const {
  for (auto it = records_.rbegin(); it != records_.rend(); ++it)
    if (it->kind == "upgrade" && it->to_pid == pid) return it->id;
  return {};
}

nlohmann::json FlightRecorder::to_json(size_t last) const {
  nlohmann::json out = nlohmann::json::array();
  const size_t skip = last && last < records_.size() ? records_.size() - last : 0;
  for (size_t i = skip; i < records_.size(); ++i) out.push_back(record_json(records_[i]));
  return out;
}

const std::string& FlightRecorder::text_of(const FlightRecord& r) const {
  auto [it, fresh] = text_.try_emplace(r.id);
  if (fresh) it->second = record_json(r).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return it->second;
}

std::string FlightRecorder::to_text(size_t last) const {
  std::string out = "[";
  const size_t skip = last && last < records_.size() ? records_.size() - last : 0;
  for (size_t i = skip; i < records_.size(); ++i) {
    if (i > skip) out += ',';
    out += text_of(records_[i]);
  }
  return out + "]";
}

bool FlightRecorder::warm_one() const {
  for (const auto& r : records_) {
    if (text_.contains(r.id)) continue;
    text_of(r);
    return true;
  }
  return false;
}

handoff::Status FlightRecorder::merge(const nlohmann::json& records) {
  if (!records.is_array()) return handoff::Error{"history: not a JSON array"};
  std::vector<FlightRecord> incoming;
  for (const auto& j : records) {
    auto r = record_from_json(j);
    if (!r) return r.error();
    incoming.push_back(std::move(r).value());
  }
  for (auto& in : incoming) {
    text_.erase(in.id);
    auto* mine = find(in.id);
    if (!mine) {
      // In time order, so that the oldest scroll out first.
      auto at = std::upper_bound(records_.begin(), records_.end(), in.requested_us,
                                 [](int64_t t, const FlightRecord& x) { return t < x.requested_us; });
      records_.insert(at, std::move(in));
      continue;
    }
    if (!mine->to_pid) mine->to_pid = in.to_pid;
    if (mine->outcome == "in-progress" && in.outcome != "in-progress") {
      mine->outcome = in.outcome;
      mine->error = in.error;
    }
    for (auto& e : in.events) insert_event(*mine, std::move(e));
  }
  while (records_.size() > kCapacity) {
    text_.erase(records_.front().id);
    records_.pop_front();
  }
  ++version_;
  return {};
}

}  // namespace baton::daemon
