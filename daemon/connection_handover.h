#pragma once
// ConnectionHandover: with `drain = handoff`, once the new generation has
// passed its probation, the old process gives it its open connections
// instead of waiting for them.
//
// For each connection: stop reading, let what it owes the client flush
// (bounded by `flush_bound`), send its fd over the channel in batches, and
// close our copy only when the successor acknowledges it. A connection is
// read by one process only:
//   - one that will not flush, that the successor refuses, or that was never
//     sent (the link broke, or the successor stopped reading for longer than
//     kStallBound) is served here again and drained the ordinary way;
//   - one whose fate is unknown (sent, unanswered, and the link broke: the
//     successor may be serving it) is never read or shut down here. It is
//     served again only once the successor's exit proves it cannot be
//     serving it (this object is destroyed: see ~ConnectionHandover), and
//     otherwise only our copy is closed (abandon_unknown, or the drain's end).
// Sends never block the loop: at most kBatchesInFlight batches wait for
// their ACK, and a full channel is retried when it becomes writable.

#include <uv.h>

#include <chrono>
#include <deque>
#include <string>
#include <unordered_map>

#include "baton/handoff/predecessor.h"
#include "baton/handoff/uv_handle.h"
#include "connection_registry.h"
#include "echo_connection.h"

namespace baton::daemon {

class ConnectionHandover final : public HandoverObserver {
 public:
  // How long the successor may make no progress (no ACK, channel full)
  // before the connections not yet sent stay here.
  static constexpr std::chrono::milliseconds kStallBound{2000};
  static constexpr size_t kBatchesInFlight = 4;

  ConnectionHandover(uv_loop_t* loop, ConnectionRegistry& registry, handoff::Predecessor& predecessor,
                     std::chrono::milliseconds flush_bound);
  // Serves again every connection not handed over, those of unknown fate
  // included: destroy it only once the successor is dead (or this process
  // closes every connection anyway).
  ~ConnectionHandover();
  ConnectionHandover(const ConnectionHandover&) = delete;
  ConnectionHandover& operator=(const ConnectionHandover&) = delete;

  void start();
  // The successor exited after committing to a newer generation, which may
  // serve what it adopted from us: close our copies of those, nothing more.
  void abandon_unknown();

  void flushed(EchoConnection& c) override;
  void gone(EchoConnection& c) override;

 private:
  enum class Stage {
    Flushing,  // stopped reading, still writing back what it owes
    Ready,     // flushed, waiting for a batch
    InFlight,  // sent, no answer yet
    Unknown,   // sent, and the link broke before the answer: not ours to read
  };
  struct Entry {
    EchoConnection* connection;  // nullptr: closed here since (in flight only)
    Stage stage;
  };

  static void on_send_tick(uv_timer_t* t);
  static void on_flush_deadline(uv_timer_t* t);
  static void on_stall(uv_timer_t* t);
  void schedule_send();
  void send_ready();
  void on_acks(const std::vector<handoff::ConnectionAck>& acks);
  void on_link_lost(const std::string& why);
  // Stop handing over: what was not sent yet is served here.
  void keep_unsent(const std::string& why);
  void keep(uint64_t id);
  void progress();
  void log_if_settled();
  size_t count(Stage stage) const;

  uv_loop_t* loop_;
  ConnectionRegistry& registry_;
  handoff::Predecessor& predecessor_;
  handoff::Predecessor::LinkSubscription subscription_;
  std::chrono::milliseconds flush_bound_;
  std::unordered_map<uint64_t, Entry> entries_;
  std::deque<uint64_t> ready_;  // in the order they flushed
  size_t batches_in_flight_ = 0;
  bool sending_ = true;  // false once the link broke or the successor stalled
  handoff::UvHandle<uv_timer_t> send_tick_;
  handoff::UvHandle<uv_timer_t> flush_deadline_;
  handoff::UvHandle<uv_timer_t> stall_;
  std::chrono::steady_clock::time_point started_;
  size_t offered_ = 0, handed_over_ = 0, kept_ = 0;
  bool reported_ = false;
};

}  // namespace baton::daemon
