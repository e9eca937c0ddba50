#pragma once
// OutgoingHandoff: a generation's open connections' way to the generation it
// committed to, with `drain = handoff` (decided at COMMIT). Until it has
// settled (Queued, Offering), connections our predecessor still hands us go
// the same way: an upgrade asked of us inside our predecessor's probation
// would otherwise leave them with it, which could only drain them. While our
// predecessor says it may still offer some (connection_offers "pending"),
// the hand-off's source stays open (more may come) and the generation must
// not exit, at most until `hold_bound` (its drain deadline).
//
// The connections are taken from the registry a few at a time (closed ones
// are skipped), so each is read by neither process for about one small
// batch's round trip. Its sends and answers run in the library's callbacks:
// from start() until it settles or is dropped, every loop turn counts as the
// upgrade's (LoopLag::hold_upgrade_turns).

#include <uv.h>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>

#include "baton/handoff/connection_handoff.h"
#include "baton/handoff/successor_link.h"
#include "baton/handoff/uv_handle.h"
#include "connection_registry.h"
#include "loop_lag.h"

namespace baton::daemon {

class EchoConnection;

class OutgoingHandoff {
 public:
  struct Events {
    // However it settled (a broken link too). Not called for drop().
    std::function<void()> settled;
    // The source held open for the predecessor ended (end_source, or the hold
    // bound): a drain that waited for it may go on.
    std::function<void()> hold_ended;
  };
  OutgoingHandoff(uv_loop_t* loop, ConnectionRegistry& registry, LoopLag& lag, Events events);
  OutgoingHandoff(const OutgoingHandoff&) = delete;
  OutgoingHandoff& operator=(const OutgoingHandoff&) = delete;

  enum class Stage {
    None,      // not committed to a newer generation, or not passing connections on
    Queued,    // committed: what we hold goes at the outcome
    Offering,  // the outcome came: the queue is being offered
    Over,      // settled, or nothing to offer: the predecessor keeps what it still offers
  };
  Stage stage() const { return stage_; }
  // Queued or Offering: what we hold, or are handed, goes on.
  bool passing_on() const { return stage_ == Stage::Queued || stage_ == Stage::Offering; }

  // COMMIT with drain = handoff.
  void queue() { stage_ = Stage::Queued; }
  // The upgrade passed its probation. Queued: offers every registered
  // connection over `link` (Predecessor::successor(), which outlives this
  // hand-off), and with `predecessor_may_offer` holds the source open for
  // what the predecessor still sends, at most `hold_bound`. True if it
  // started (it may have settled already); false leaves it Over (not
  // Queued, no link, or nothing to offer).
  bool start(handoff::SuccessorLink* link, bool predecessor_may_offer, std::chrono::milliseconds hold_bound);
  // A connection adopted from the predecessor: offered too, while Offering.
  void adopted(EchoConnection* c);
  // The source is held open for the predecessor: the generation must not exit.
  bool holding() const { return handoff_ && handoff_->source_held_open(); }
  // The predecessor sends nothing more, or we take nothing more (a stop).
  void end_source();
  // The successor handed over in turn and exited: what it took from us it
  // may have passed on; our copies of those close.
  void abandon_unknown() {
    if (handoff_) handoff_->abandon_unknown();
  }
  // It will not settle now (the successor is gone, or we exit): everything
  // not handed over is served here again. Back to None.
  void drop();
  // The current hand-off (its stops, whether it settled); null before start().
  const handoff::ConnectionHandoff* current() const { return handoff_.get(); }

 private:
  uv_loop_t* loop_;
  ConnectionRegistry& registry_;
  LoopLag& lag_;
  Events events_;
  Stage stage_ = Stage::None;
  std::unique_ptr<handoff::ConnectionHandoff> handoff_;
  std::deque<EchoConnection*> queue_;      // Offering: not yet offered
  handoff::UvHandle<uv_timer_t> hold_timer_;  // bounds how long the source is held open
  std::chrono::milliseconds hold_bound_{};
};

}  // namespace baton::daemon
