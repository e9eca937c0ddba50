#include "outgoing_handoff.h"

#include <spdlog/spdlog.h>

#include "echo_connection.h"

namespace baton::daemon {
namespace {

// How long a connection being handed off may take to write back what it owes.
constexpr std::chrono::milliseconds kHandoffFlushBound{1000};
// Connections stopped and unanswered at once in a hand-off: each is read by
// neither process for about one batch of this many. 50 connections at 100
// messages/s, 6 upgrades each: per-connection stop p50 0.7-4.3 ms all at
// once, 0.2-1.9 ms 16 at a time, 0.12-0.5 ms 8 at a time.
constexpr size_t kHandoffAtOnce = 8;

}  // namespace

OutgoingHandoff::OutgoingHandoff(uv_loop_t* loop, ConnectionRegistry& registry, LoopLag& lag, Events events)
    : loop_(loop), registry_(registry), lag_(lag), events_(std::move(events)) {}

bool OutgoingHandoff::start(handoff::SuccessorLink* link, bool predecessor_may_offer,
                            std::chrono::milliseconds hold_bound) {
  if (!link || stage_ != Stage::Queued || (registry_.empty() && !predecessor_may_offer)) {
    stage_ = Stage::Over;
    return false;
  }
  handoff_ = std::make_unique<handoff::ConnectionHandoff>(loop_, *link, kHandoffFlushBound);
  queue_.clear();
  registry_.for_each([&](EchoConnection& c) { queue_.push_back(&c); });
  stage_ = Stage::Offering;
  lag_.hold_upgrade_turns(true);
  handoff_->on_settled([this] {
    const LoopLag::Work work(lag_, "handoff_settled");
    lag_.hold_upgrade_turns(false);
    stage_ = Stage::Over;
    hold_timer_.close();
    if (events_.settled) events_.settled();
  });
  if (predecessor_may_offer) {
    handoff_->hold_source_open();
    // Not longer than our drain would have kept them: a predecessor that
    // hangs, its link open, must not keep us forever.
    hold_bound_ = hold_bound;
    hold_timer_.init(uv_timer_init, loop_, this);
    uv_timer_start(hold_timer_.get(), [](uv_timer_t* t) {
      auto* self = static_cast<OutgoingHandoff*>(t->data);
      spdlog::warn("handoff: the previous generation still had connections to offer after {} ms; taking no more",
                   self->hold_bound_.count());
      self->end_source();
    }, static_cast<uint64_t>(hold_bound.count()), 0);
  }
  // Those closed before their turn are no longer registered. A new one can
  // take a closed one's address only by adoption (this generation no longer
  // accepts), and an adopted one joins the queue: offered either way.
  handoff_->start(
      [this]() -> handoff::HandoffConnection* {
        const LoopLag::Work work(lag_, "handoff_source");
        while (!queue_.empty()) {
          auto* c = queue_.front();
          queue_.pop_front();
          if (registry_.contains(c)) return c;
        }
        return nullptr;  // none now (more may come while our predecessor may send them)
      },
      kHandoffAtOnce);
  return true;
}

void OutgoingHandoff::adopted(EchoConnection* c) {
  if (stage_ != Stage::Offering || !handoff_) return;
  queue_.push_back(c);
  handoff_->more();
}

void OutgoingHandoff::end_source() {
  hold_timer_.close();
  if (!holding()) return;
  handoff_->end_source();
  if (events_.hold_ended) events_.hold_ended();
}

void OutgoingHandoff::drop() {
  handoff_.reset();
  hold_timer_.close();
  lag_.hold_upgrade_turns(false);
  queue_.clear();
  stage_ = Stage::None;
}

}  // namespace baton::daemon
