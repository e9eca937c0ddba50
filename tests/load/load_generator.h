#pragma once
// The event loop of baton-load: one epoll, persistent connections that keep a
// pipeline of messages in flight, short churn connections, timers, and the
// phases of a run:
//
//   Connect: every persistent connection connects (or fails once)
//   Run:     "baton-load: started", load, a timeline (per second or --interval-ms), until --duration or a signal
//   Drain:   nothing new is sent; in-flight echoes are verified, persistent
//            connections half-close and wait for EOF, all within --timeout-ms
//
// A failure is counted once per connection; a persistent connection is then
// reconnected so the run goes on.

#include <memory>

#include "baton/handoff/result.h"
#include "load_options.h"
#include "load_report.h"
#include "load_stats.h"

namespace baton::load {

class LoadGenerator {
 public:
  // Installs the stop signals and the epoll instance.
  static handoff::Result<LoadGenerator> create(const LoadOptions& options);
  LoadGenerator(LoadGenerator&&) noexcept;
  ~LoadGenerator();

  handoff::Result<RunInfo> run();
  const LoadStats& stats() const;

 private:
  class Impl;
  explicit LoadGenerator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace baton::load
