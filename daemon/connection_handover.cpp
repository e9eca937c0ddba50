#include "connection_handover.h"


#include <spdlog/spdlog.h>

#include <algorithm>

namespace baton::daemon {

ConnectionHandover::ConnectionHandover(uv_loop_t* loop, ConnectionRegistry& registry,
                                       handoff::Predecessor& predecessor, std::chrono::milliseconds flush_bound)
    : loop_(loop), registry_(registry), predecessor_(predecessor), flush_bound_(flush_bound) {}

ConnectionHandover::~ConnectionHandover() {
  // Whatever is still undecided stays here, served as before.
  for (auto& [id, c] : flushing_) c->cancel_handover();
  for (auto* c : ready_) c->cancel_handover();
  for (auto& [id, c] : in_flight_)
    if (c) c->cancel_handover();
}

void ConnectionHandover::start() {
  started_ = std::chrono::steady_clock::now();
  predecessor_.on_link([this](const std::vector<handoff::ConnectionAck>& acks) { on_acks(acks); },
                       [this](const std::string& why) { keep_all("link to the successor lost: " + why); });
  send_tick_.init(uv_timer_init, loop_, this);
  flush_deadline_.init(uv_timer_init, loop_, this);
  uv_timer_start(flush_deadline_.get(), &ConnectionHandover::on_flush_deadline,
                 static_cast<uint64_t>(flush_bound_.count()), 0);
  registry_.for_each([this](EchoConnection& c) {
    flushing_[c.id()] = &c;
    ++offered_;
    if (!c.begin_handover(this)) {
      flushing_.erase(c.id());
      --offered_;  // already closing: the drain sees it out
    }
  });
  spdlog::info("handoff: handing {} connection(s) to the successor", offered_);
  log_if_settled();
}

void ConnectionHandover::flushed(EchoConnection& c) {
  if (!flushing_.erase(c.id())) return;
  if (link_lost_) return keep(c);
  ready_.push_back(&c);
  // Connections flushed in the same loop turn travel in one batch.
  if (ready_.size() == 1) uv_timer_start(send_tick_.get(), &ConnectionHandover::on_send_tick, 0, 0);
}

void ConnectionHandover::gone(EchoConnection& c) {
  flushing_.erase(c.id());
  std::erase(ready_, &c);
  if (auto it = in_flight_.find(c.id()); it != in_flight_.end()) it->second = nullptr;
  log_if_settled();
}

void ConnectionHandover::on_send_tick(uv_timer_t* t) { static_cast<ConnectionHandover*>(t->data)->send_ready(); }

void ConnectionHandover::send_ready() {
  std::vector<handoff::ConnectionOffer> offers;
  for (auto* c : ready_) {
    offers.push_back({c->id(), c->kind(), c->fd()});
    in_flight_[c->id()] = c;
  }
  ready_.clear();
  if (offers.empty()) return log_if_settled();
  if (auto st = predecessor_.send_connections(offers); !st) keep_all("sending connections: " + st.error().message);
}

void ConnectionHandover::on_acks(const std::vector<handoff::ConnectionAck>& acks) {
  for (const auto& a : acks) {
    auto it = in_flight_.find(a.id);
    if (it == in_flight_.end()) continue;
    EchoConnection* c = it->second;
    in_flight_.erase(it);
    if (!c) {
      handed_over_ += a.adopted;
      continue;
    }
    if (a.adopted) {
      ++handed_over_;
      c->close_now(EchoConnection::EndReason::HandedOver);
    } else {
      keep(*c);
    }
  }
  log_if_settled();
}

void ConnectionHandover::on_flush_deadline(uv_timer_t* t) {
  auto* self = static_cast<ConnectionHandover*>(t->data);
  if (self->flushing_.empty()) return;
  spdlog::info("handoff: {} connection(s) did not flush within {} ms (the client is not reading); draining them here",
               self->flushing_.size(), self->flush_bound_.count());
  auto stuck = std::move(self->flushing_);
  self->flushing_.clear();
  for (auto& [id, c] : stuck) self->keep(*c);
  self->log_if_settled();
}

void ConnectionHandover::keep_all(const std::string& why) {
  link_lost_ = true;
  const size_t n = in_flight_.size() + ready_.size() + flushing_.size();
  if (n) spdlog::warn("handoff: {}; keeping {} connection(s) and draining them here", why, n);
  for (auto& [id, c] : in_flight_)
    if (c) keep(*c);
  in_flight_.clear();
  for (auto* c : ready_) keep(*c);
  ready_.clear();
  for (auto& [id, c] : flushing_) keep(*c);
  flushing_.clear();
  log_if_settled();
}

void ConnectionHandover::keep(EchoConnection& c) {
  ++kept_;
  c.cancel_handover();
}

void ConnectionHandover::log_if_settled() {
  if (reported_ || !flushing_.empty() || !ready_.empty() || !in_flight_.empty()) return;
  reported_ = true;
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started_).count();
  spdlog::info("handoff: done in {:.1f} ms: {} connection(s) handed over, {} kept here to drain", ms, handed_over_,
               kept_);
}

}  // namespace baton::daemon
