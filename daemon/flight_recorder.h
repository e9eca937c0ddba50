#pragma once
// The flight recorder: for each of the last 32 upgrades and app restarts,
// who asked, what happened when (microseconds from the request) and how it
// ended. `batonctl history` prints it.
//
// An upgrade's timeline is written by two processes: the old generation
// (request .. COMMIT, then its drain, its exit) and the new one (exec ..
// first accept). Times are CLOCK_MONOTONIC, one clock for every process on
// the machine. Each generation hands its records to the next (STATE_UPDATE
// "history" at READY, then while it drains); the receiver merges them by id,
// keeping the first time seen for each event, so records survive every
// upgrade and a late report only adds what was missing.

#include <sys/types.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <vector>

#include "baton/handoff/result.h"

namespace baton::daemon {

// Microseconds on CLOCK_MONOTONIC (steady_clock), comparable between processes.
int64_t monotonic_us(std::chrono::steady_clock::time_point t = std::chrono::steady_clock::now());

struct TimelineEvent {
  std::string name;  // "requested", "spawned", "hello", ...
  int64_t at_us = 0;  // monotonic_us()
  std::string detail;
};

struct FlightRecord {
  std::string id;              // "<from pid>-<requested_us>": unique on the machine
  std::string kind;            // "upgrade" or "restart" (of the supervised app)
  std::string trigger;         // "SIGUSR2", "batonctl", "SIGHUP", ...
  int64_t requested_us = 0;    // monotonic
  int64_t requested_unix_ms = 0;  // wall clock, for people
  pid_t from_pid = 0;          // the old generation (app instance, for a restart)
  unsigned from_generation = 0;
  pid_t to_pid = 0;            // the new one, once spawned
  std::string outcome = "in-progress";  // "ok", "failed"
  std::string error;
  std::vector<TimelineEvent> events;  // in time order

  const TimelineEvent* find(const std::string& name) const;
};

class FlightRecorder {
 public:
  static constexpr size_t kCapacity = 32;

  // A new record, now; the oldest goes when there are kCapacity. Returns its id.
  std::string begin(const std::string& kind, const std::string& trigger, pid_t from_pid, unsigned from_generation);
  // An event of record `id`, at `at_us` (default: now). The first of each
  // name counts; an unknown id is ignored (the record scrolled out).
  void event(const std::string& id, const std::string& name, const std::string& detail = {}, int64_t at_us = 0);
  void set_to_pid(const std::string& id, pid_t pid);
  void finish(const std::string& id, bool ok, const std::string& error = {});
  // The upgrade record that started `pid`, if any ("" if none).
  std::string upgrade_to(pid_t pid) const;
  const std::deque<FlightRecord>& records() const { return records_; }
  // Grows with every change: a sender compares it with what it last sent.
  uint64_t version() const { return version_; }

  // Records as JSON, newest last, with each event's offset from the request
  // (`offset_us`) beside its absolute time; `last` = 0 for all of them.
  nlohmann::json to_json(size_t last = 0) const;
  // The same, serialised (compact; invalid UTF-8 replaced). Each record's
  // text is kept until it changes: a generation sends the whole history to
  // its successor on the loop turn that commits the upgrade, and building
  // 32 records' JSON anew cost that turn up to a few hundred microseconds.
  std::string to_text(size_t last = 0) const;
  // Serialises one record whose text is not kept yet, ahead of to_text
  // (each new generation starts with none kept: without this, the turn that
  // commits its upgrade would serialise all 32, ~45 µs each). False once
  // every record's text is kept.
  bool warm_one() const;
  // Merges records another generation sent (the to_json form). A malformed
  // document is an error and changes nothing.
  handoff::Status merge(const nlohmann::json& records);

 private:
  FlightRecord* find(const std::string& id);
  const std::string& text_of(const FlightRecord& r) const;  // kept, or made and kept
  // Every change goes through here: the version grows, the record's text goes.
  void touch(const std::string& id) {
    ++version_;
    text_.erase(id);
  }

  std::deque<FlightRecord> records_;  // oldest first
  uint64_t version_ = 0;
  mutable std::unordered_map<std::string, std::string> text_;  // by id: to_text's cache
};

}  // namespace baton::daemon
