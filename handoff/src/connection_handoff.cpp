#include "baton/handoff/connection_handoff.h"

#include <sys/socket.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>
#include <optional>

namespace baton::handoff {
namespace {

ConnectionKind kind_of(int fd) {
  int domain = 0;
  socklen_t len = sizeof domain;
  if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX) return ConnectionKind::Unix;
  return ConnectionKind::Tcp;
}

}  // namespace

ConnectionHandoff::ConnectionHandoff(uv_loop_t* loop, SuccessorLink& link, std::chrono::milliseconds flush_bound)
    : loop_(loop), link_(link), flush_bound_(flush_bound) {}

ConnectionHandoff::~ConnectionHandoff() {
  // Whatever is still undecided stays here, served as before.
  size_t served_again = 0;
  for (auto& [id, e] : entries_) {
    if (!e.connection) continue;
    e.connection->cancel_handoff();
    ++served_again;
  }
  if (!reported_)
    spdlog::info("handoff: ended: {} connection(s) handed over, {} kept here, {} served here again (the successor is gone)",
                 handed_over_, kept_, served_again);
}

void ConnectionHandoff::start(const std::vector<HandoffConnection*>& connections) {
  // All at once: the caller cannot tell us of one that closes before its turn.
  start([all = connections, next = size_t{0}]() mutable { return next < all.size() ? all[next++] : nullptr; },
        std::numeric_limits<size_t>::max());
}

void ConnectionHandoff::start(Source next, size_t at_once) {
  started_ = std::chrono::steady_clock::now();
  source_ = std::move(next);
  at_once_ = std::max<size_t>(at_once, 1);
  subscription_ = link_.subscribe({
      [this](const std::vector<ConnectionAck>& acks) { on_acks(acks); },
      [this](const std::string& why) { on_link_lost(why); },
      [this] { send_ready(); },
  });
  send_tick_.init(uv_timer_init, loop_, this);
  stall_.init(uv_timer_init, loop_, this);
  flush_deadline_.init(uv_timer_init, loop_, this);
  // The link may have closed in the probation (the successor serves on, but
  // can take nothing from us): nothing is offered, everything is served here.
  if (!link_.open()) return keep_unsent("the link to the successor closed before the hand-off");
  spdlog::info("handoff: handing connections to the successor, {} at a time", at_once_ == std::numeric_limits<size_t>::max() ? std::string("all") : std::to_string(at_once_));
  advance();
}

void ConnectionHandoff::offer_more() {
  // Not while offering (begin_handoff may report back at once), and only
  // while sending: what is not offered is simply served here on.
  if (offering_) return;
  offering_ = true;
  while (source_ && sending_ && entries_.size() < at_once_) {
    HandoffConnection* c = source_();
    if (!c) {
      if (!source_open_) source_ = nullptr;  // else: none now
      break;
    }
    if (ids_.contains(c)) continue;
    const uint64_t id = next_id_++;
    ids_[c] = id;
    entries_[id] = {c, Stage::Flushing, std::chrono::steady_clock::now()};
    ++offered_;
    if (!c->begin_handoff(*this)) {
      if (auto it = entries_.find(id); it != entries_.end()) forget(it);
      std::erase(ready_, id);  // should it have said flushed before refusing
      --offered_;  // already closing: the server sees it out
    }
  }
  offering_ = false;
  if (!sending_ && source_) {
    // Stopped while offering (keep_unsent could not drain the source then):
    // the rest were never stopped, and stay as they are.
    while (source_()) ++kept_;
    source_ = nullptr;
  }
  arm_flush_deadline();
}

void ConnectionHandoff::more() {
  if (source_ && !reported_) advance();
}

void ConnectionHandoff::end_source() {
  if (!source_open_) return;
  source_open_ = false;
  if (!reported_) advance();  // the source is asked until it says nullptr, then it may settle
}

void ConnectionHandoff::arm_flush_deadline() {
  // Each connection gets flush_bound from its own begin_handoff.
  std::optional<std::chrono::steady_clock::time_point> first;
  for (const auto& [id, e] : entries_)
    if (e.stage == Stage::Flushing && (!first || e.paused < *first)) first = e.paused;
  if (!first) return (void)uv_timer_stop(flush_deadline_.get());
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*first + flush_bound_ -
                                                                          std::chrono::steady_clock::now());
  uv_timer_start(flush_deadline_.get(), &ConnectionHandoff::on_flush_deadline,
                 static_cast<uint64_t>(std::max<int64_t>(left.count(), 0)) + 1, 0);
}

size_t ConnectionHandoff::count(Stage stage) const {
  return static_cast<size_t>(
      std::count_if(entries_.begin(), entries_.end(), [stage](const auto& kv) { return kv.second.stage == stage; }));
}

ConnectionHandoff::Entries::iterator ConnectionHandoff::forget(Entries::iterator it) {
  if (it->second.connection) ids_.erase(it->second.connection);
  return entries_.erase(it);
}

void ConnectionHandoff::flushed(HandoffConnection& c) {
  auto known = ids_.find(&c);
  if (known == ids_.end()) return;
  const uint64_t id = known->second;
  auto it = entries_.find(id);
  if (it == entries_.end() || it->second.stage != Stage::Flushing) return;
  if (!sending_) return keep(id);
  it->second.stage = Stage::Ready;
  ready_.push_back(id);
  schedule_send();
}

void ConnectionHandoff::schedule_send() {
  // Connections flushed in the same loop turn travel in one batch.
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(send_tick_.get())))
    uv_timer_start(send_tick_.get(), &ConnectionHandoff::on_send_tick, 0, 0);
}

void ConnectionHandoff::gone(HandoffConnection& c) {
  auto known = ids_.find(&c);
  if (known == ids_.end()) return;
  const uint64_t id = known->second;
  ids_.erase(known);
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  if (it->second.stage == Stage::InFlight) {
    it->second.connection = nullptr;  // its ACK still counts
  } else {
    entries_.erase(it);
    std::erase(ready_, id);
  }
  advance();
}

void ConnectionHandoff::on_send_tick(uv_timer_t* t) { static_cast<ConnectionHandoff*>(t->data)->send_ready(); }

void ConnectionHandoff::send_ready() {
  while (sending_ && !ready_.empty() && batches_in_flight_ < kBatchesInFlight) {
    // One without an fd (closing) stays here, alone: it must not fail the
    // batch (EBADF breaks the link). Kept before the batch is built: keep()
    // runs the server's code, which may close others.
    std::vector<uint64_t> no_fd;
    for (auto id : ready_)
      if (entries_.at(id).connection->handoff_fd() < 0) no_fd.push_back(id);
    for (auto id : no_fd) keep(id);
    if (!sending_ || ready_.empty()) break;
    std::vector<ConnectionOffer> batch;
    for (auto id : ready_) {
      if (batch.size() == kMaxFdsPerMessage) break;
      const int fd = entries_.at(id).connection->handoff_fd();
      batch.push_back({id, kind_of(fd), fd});
    }
    auto sent = link_.send_connections(batch);
    if (!sent) {
      // The link is gone. If it broke on this send, on_link_lost has settled
      // everything already; if it was closed before, nothing was sent.
      if (sending_) on_link_lost(sent.error().message);
      return;
    }
    if (!sent.value()) break;  // channel full: `writable` calls us again
    for (const auto& o : batch) {
      entries_.at(o.id).stage = Stage::InFlight;
      ready_.pop_front();
    }
    ++batches_in_flight_;
    progress();
  }
  // Work left that cannot go now, or answers awaited (the next connections
  // wait for them): the successor has kStallBound to make progress.
  if (sending_ && (!ready_.empty() || batches_in_flight_ > 0) &&
      !uv_is_active(reinterpret_cast<uv_handle_t*>(stall_.get())))
    uv_timer_start(stall_.get(), &ConnectionHandoff::on_stall, static_cast<uint64_t>(kStallBound.count()), 0);
  advance();
}

void ConnectionHandoff::progress() {
  ++progress_made_;
  uv_timer_stop(stall_.get());
}

void ConnectionHandoff::on_stall(uv_timer_t* t) {
  auto* self = static_cast<ConnectionHandoff*>(t->data);
  // Timers run before the loop polls: answers may be waiting in the channel
  // (this process was paused, or one loop turn was long). Read them first.
  const uint64_t before = self->progress_made_;
  self->link_.read_pending();
  if (self->progress_made_ != before || !self->sending_) return;  // answered after all (re-armed if need be)
  self->keep_unsent("the successor made no progress for " + std::to_string(kStallBound.count()) + " ms");
}

void ConnectionHandoff::on_acks(const std::vector<ConnectionAck>& acks) {
  if (batches_in_flight_ > 0) --batches_in_flight_;
  progress();
  for (const auto& a : acks) {
    // Unknown too: an ACK read after the link broke (its last words, read
    // before its exit is judged) still settles the connection's fate.
    auto it = entries_.find(a.id);
    if (it == entries_.end() || (it->second.stage != Stage::InFlight && it->second.stage != Stage::Unknown)) continue;
    HandoffConnection* c = it->second.connection;
    if (a.adopted) {
      ++handed_over_;
      stops_.push_back(
          std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - it->second.paused));
      forget(it);
      // Our copy only: uv_close never shuts the socket down, the successor serves it.
      if (c) c->close_handed_off();
    } else if (c) {
      keep(a.id);
    } else {
      forget(it);
    }
  }
  send_ready();
}

void ConnectionHandoff::on_link_lost(const std::string& why) {
  sending_ = false;
  // Sent and unanswered: the successor may have read the message before the
  // link broke, and serve them. Not ours to read until its exit says so.
  size_t unknown = 0;
  for (auto& [id, e] : entries_) {
    if (e.stage != Stage::InFlight) continue;
    e.stage = Stage::Unknown;
    ++unknown;
  }
  batches_in_flight_ = 0;
  if (unknown)
    spdlog::warn("handoff: link to the successor lost ({}); {} connection(s) sent but unanswered stay untouched until "
                 "the successor answers or exits",
                 why, unknown);
  keep_unsent("link to the successor lost: " + why);
}

void ConnectionHandoff::keep_unsent(const std::string& why) {
  sending_ = false;
  progress();
  std::vector<uint64_t> unsent;
  for (auto& [id, e] : entries_)
    if (e.stage == Stage::Flushing || e.stage == Stage::Ready) unsent.push_back(id);
  // Those never offered were never stopped: they stay as they are, counted.
  size_t never_offered = 0;
  if (source_ && !offering_) {
    while (source_()) ++never_offered;
    source_ = nullptr;
  }
  if (!unsent.empty() || never_offered)
    spdlog::warn("handoff: {}; keeping {} connection(s) not yet sent and draining them here", why,
                 unsent.size() + never_offered);
  kept_ += never_offered;
  for (auto id : unsent) keep(id);
  ready_.clear();
  advance();
}

void ConnectionHandoff::keep(uint64_t id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  HandoffConnection* c = it->second.connection;
  if (c) stops_.push_back(std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                                it->second.paused));
  forget(it);
  std::erase(ready_, id);
  ++kept_;
  if (c) c->cancel_handoff();
}

void ConnectionHandoff::abandon_unknown() {
  std::vector<HandoffConnection*> copies;
  for (auto it = entries_.begin(); it != entries_.end();) {
    const bool unknown = it->second.stage == Stage::InFlight || it->second.stage == Stage::Unknown;
    if (unknown && it->second.connection) copies.push_back(it->second.connection);
    it = unknown ? forget(it) : std::next(it);
  }
  if (!copies.empty())
    spdlog::info("handoff: closing our copy of {} connection(s) the successor may have passed on", copies.size());
  for (auto* c : copies) c->close_handed_off();
  advance();
}

void ConnectionHandoff::on_flush_deadline(uv_timer_t* t) {
  auto* self = static_cast<ConnectionHandoff*>(t->data);
  const auto now = std::chrono::steady_clock::now();
  std::vector<uint64_t> stuck;
  for (auto& [id, e] : self->entries_)
    if (e.stage == Stage::Flushing && e.paused + self->flush_bound_ <= now) stuck.push_back(id);
  if (!stuck.empty())
    spdlog::info("handoff: {} connection(s) did not flush within {} ms (the client is not reading); draining them here",
                 stuck.size(), self->flush_bound_.count());
  for (auto id : stuck) self->keep(id);
  self->advance();
}

void ConnectionHandoff::advance() {
  offer_more();
  if (reported_ || !entries_.empty() || (source_ && sending_)) return;
  reported_ = true;
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_).count();
  spdlog::info("handoff: done in {:.1f} ms: {} connection(s) handed over, {} kept here to drain", ms, handed_over_,
               kept_);
  if (on_settled_) on_settled_();
}

}  // namespace baton::handoff
