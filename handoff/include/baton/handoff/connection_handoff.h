#pragma once
// ConnectionHandoff: once the new generation has passed its probation, the
// old process gives it its open connections instead of waiting for them to
// end. The server's connections take part through HandoffConnection.
//
// For each connection: stop reading, let what it owes the client flush
// (bounded by `flush_bound`), send its fd over the channel in batches, and
// close our copy only when the successor acknowledges it. Connections taken
// from a Source go a few at a time: the next ones stop only once earlier
// ones are answered, so each is read by neither process for about one small
// batch's round trip (not the whole hand-off's), and the rest are served
// here meanwhile. A connection is read by one process only:
//   - one that will not flush, that the successor refuses, or that was never
//     sent (the link broke, or the successor stopped reading for longer than
//     kStallBound) is served here again and drained the ordinary way;
//   - one whose fate is unknown (sent, unanswered, and the link broke: the
//     successor may be serving it) is never read or shut down here. It is
//     served again only once the successor's exit proves it cannot be
//     serving it (this object is destroyed: see ~ConnectionHandoff), and
//     otherwise only our copy is closed (abandon_unknown, or the drain's end).
// Sends never block the loop: at most kBatchesInFlight batches wait for
// their ACK, and a full channel is retried when it becomes writable.

#include <uv.h>

#include <chrono>
#include <deque>
#include <functional>
#include <string>
#include <unordered_map>

#include <vector>

#include "baton/handoff/successor_link.h"
#include "baton/handoff/protocol.h"
#include "baton/handoff/uv_handle.h"

namespace baton::handoff {

class ConnectionHandoff;

// A server's client connection, as the hand-off sees it. The server
// implements it; every call comes from the loop's thread.
class HandoffConnection {
 public:
  // The connected socket (TCP or Unix stream); the hand-off sends a
  // duplicate, this one stays the connection's.
  virtual int handoff_fd() const = 0;
  // Stop reading: what the client sends from now on waits in the kernel for
  // the successor. Once everything already read has been answered and
  // written, call `handoff.flushed(*this)` (at once, from inside this call,
  // if nothing is owed). If the connection closes before it is settled,
  // call `handoff.gone(*this)` (from its close callback). Return false if
  // it is ending already: it is then left alone.
  virtual bool begin_handoff(ConnectionHandoff& handoff) = 0;
  // The hand-off did not happen: serve it here again (and drain it).
  virtual void cancel_handoff() = 0;
  // The successor serves it (or may): close this process's copy, which never
  // shuts the socket down (no shutdown(2), no SO_LINGER reset), and forget
  // the ConnectionHandoff, which may be destroyed before the close completes.
  virtual void close_handed_off() = 0;

 protected:
  ~HandoffConnection() = default;
};

class ConnectionHandoff {
 public:
  // How long the successor may make no progress (no ACK, channel full)
  // before the connections not yet sent stay here.
  static constexpr std::chrono::milliseconds kStallBound{2000};
  static constexpr size_t kBatchesInFlight = 4;

  // `link` is to a successor that has passed the probation
  // (Predecessor::successor() in UpgradeState::HandedOver), and outlives
  // this object.
  ConnectionHandoff(uv_loop_t* loop, SuccessorLink& link, std::chrono::milliseconds flush_bound);
  // Serves again every connection not handed over, those of unknown fate
  // included: destroy it only once the successor is dead (or this process
  // closes every connection anyway).
  ~ConnectionHandoff();
  ConnectionHandoff(const ConnectionHandoff&) = delete;
  ConnectionHandoff& operator=(const ConnectionHandoff&) = delete;

  // The next connection to offer, nullptr once there is none left. Called
  // as the hand-off makes room, from the loop; it must return only
  // connections that are still open (it is how the server tells us of one
  // that closed before its turn) and may return one more than once.
  using Source = std::function<HandoffConnection*()>;
  // At most `at_once` connections stopped and unanswered at any time.
  void start(Source next, size_t at_once);
  // Before start: the source may get more later (a server that still adopts
  // connections from its own predecessor while it hands its own on). Its
  // nullptr then means "none now": more() asks again, and the hand-off
  // cannot settle before end_source() says it will never have any.
  void hold_source_open() { source_open_ = true; }
  // Held open and still asked (not settled, not given up on a broken link).
  bool source_held_open() const { return source_open_ && source_ && !reported_; }
  void more();
  void end_source();
  // All at once (begin_handoff on each, now): for a caller that cannot tell
  // whether one closed before its turn would come.
  void start(const std::vector<HandoffConnection*>& connections);
  // The successor exited after committing to a newer generation, which may
  // serve what it adopted from us: close our copies of those, nothing more.
  void abandon_unknown();
  // Every connection offered is settled: handed off, kept or gone.
  bool settled() const { return reported_; }
  // Called once, when that happens (from inside start() if nothing needs to
  // wait). It must not destroy this object.
  void on_settled(std::function<void()> fn) { on_settled_ = std::move(fn); }
  // For each connection offered so far and settled: how long it stopped,
  // from begin_handoff (this process no longer reads it) to the ACK saying
  // the successor adopted it (it has registered it for reading, and reads it
  // from its next loop turn), or to its being served here again (kept: not
  // flushed in time, refused, never sent).
  const std::vector<std::chrono::microseconds>& stops() const { return stops_; }

  // From the connections (see HandoffConnection).
  void flushed(HandoffConnection& c);
  void gone(HandoffConnection& c);

 private:
  enum class Stage {
    Flushing,  // stopped reading, still writing back what it owes
    Ready,     // flushed, waiting for a batch
    InFlight,  // sent, no answer yet
    Unknown,   // sent, and the link broke before the answer: not ours to read
  };
  struct Entry {
    HandoffConnection* connection;  // nullptr: closed here since (in flight only)
    Stage stage;
    std::chrono::steady_clock::time_point paused;  // begin_handoff: no longer read here
  };
  using Entries = std::unordered_map<uint64_t, Entry>;

  static void on_send_tick(uv_timer_t* t);
  static void on_flush_deadline(uv_timer_t* t);
  static void on_stall(uv_timer_t* t);
  void schedule_send();
  void send_ready();
  void on_acks(const std::vector<ConnectionAck>& acks);
  void on_link_lost(const std::string& why);
  // Stop handing over: what was not sent yet is served here.
  void keep_unsent(const std::string& why);
  void keep(uint64_t id);
  // Offers more from the source while there is room, then re-arms the flush deadline.
  void offer_more();
  void arm_flush_deadline();
  // Offers more, or reports once everything is settled.
  void advance();
  // Drops an entry, and its connection's id.
  Entries::iterator forget(Entries::iterator it);
  void progress();
  size_t count(Stage stage) const;

  uv_loop_t* loop_;
  SuccessorLink& link_;
  SuccessorLink::Subscription subscription_;
  std::chrono::milliseconds flush_bound_;
  // By the id the protocol carries (ours, counted from 1), and the reverse.
  Entries entries_;
  std::unordered_map<HandoffConnection*, uint64_t> ids_;
  uint64_t next_id_ = 1;
  std::deque<uint64_t> ready_;  // in the order they flushed
  Source source_;                // null once it ran dry (and was not held open)
  bool source_open_ = false;     // hold_source_open, until end_source
  size_t at_once_ = 0;
  bool offering_ = false;        // inside offer_more (begin_handoff may call back)
  uint64_t progress_made_ = 0;   // batches sent and answers read, for on_stall
  size_t batches_in_flight_ = 0;
  bool sending_ = true;  // false once the link broke or the successor stalled
  UvHandle<uv_timer_t> send_tick_;
  UvHandle<uv_timer_t> flush_deadline_;
  UvHandle<uv_timer_t> stall_;
  std::chrono::steady_clock::time_point started_;
  size_t offered_ = 0, handed_over_ = 0, kept_ = 0;
  std::vector<std::chrono::microseconds> stops_;
  bool reported_ = false;
  std::function<void()> on_settled_;
};

}  // namespace baton::handoff
