// Daemon, what it shows of itself: the Prometheus metrics (counters that
// survive upgrades: each generation hands its totals to the next), the loop
// lag, and the flight recorder's timelines of upgrades and app restarts.

#include <unistd.h>

#include <spdlog/spdlog.h>

#include "daemon.h"
#include "elapsed.h"

namespace baton::daemon {
namespace {

constexpr const char* kMetricsStateKey = "metrics";
constexpr const char* kHistoryStateKey = "history";
// The loop's cost of the last upgrade, measured by the generation that ran
// it (the old one): sent down, so that the new one's status shows it.
constexpr const char* kLoopLagStateKey = "loop_lag";
constexpr const char* kHandoffStopsStateKey = "handoff_stops";
// Whether this generation will still offer its successor connections
// ("pending": drain = handoff, its hand-off not settled) or not ("done"): a
// successor that committed to a newer generation keeps taking them, to pass
// on, only while they may come. An older batond never says: "done".
constexpr const char* kOffersStateKey = "connection_offers";
// While draining, only the latest records can still change: those are sent.
constexpr size_t kHistoryUpdateRecords = 8;

}  // namespace

Counters Daemon::own_counters() const {
  Counters c = own_events_;
  // Adopted connections were accepted by an older generation, which counted them.
  c.add(Counters::series("baton_connections_accepted_total"), registry_.accepted_total() - adopted_connections_);
  c.add(Counters::series("baton_connections_closed_total", "reason", "client"), drain_counts_.closed_by_client);
  c.add(Counters::series("baton_connections_closed_total", "reason", "drain_deadline"), drain_counts_.closed_at_deadline);
  c.add(Counters::series("baton_connections_closed_total", "reason", "forced"), drain_counts_.closed_forcibly);
  c.add(Counters::series("baton_connections_closed_total", "reason", "max_connections"), 0);
  c.add(Counters::series("baton_connections_handed_off_total"), drain_counts_.handed_over);
  c.add(Counters::series("baton_bytes_echoed_total"), drain_counts_.bytes_echoed);
  for (const auto& l : listeners_)
    for (const auto& [err, n] : l->accept_errors()) c.add(Counters::series("baton_accept_errors_total", "errno", err), n);
  for (const char* outcome : {"ok", "failed"}) c.add(Counters::series("baton_upgrades_total", "outcome", outcome), 0);
  return c;
}

Counters Daemon::counter_totals() const { return inherited_counters_.plus(own_counters()).plus(resumed_offset_); }

std::string Daemon::serve_metrics() {
  tell_predecessor_totals(counter_totals().to_json().dump());
  return metrics_text();
}

void Daemon::tell_predecessor_totals(const std::string& data) {
  if (!predecessor_link_ || !predecessor_alive() || data == totals_told_up_) return;
  auto sent = predecessor_link_->send_state_update(kMetricsStateKey, data);
  // Not taken (its socket is full: it is not reading): the scrape is answered
  // anyway; only if we died before the next one could it resume lower.
  if (!sent || !sent.value())
    return spdlog::debug("totals to the previous generation: {}", sent ? "its channel is full" : sent.error().message);
  totals_told_up_ = data;
}

void Daemon::take_successor_state(const handoff::StateUpdate& update) {
  if (update.key != kMetricsStateKey) return;
  auto counters = Counters::from_json(nlohmann::json::parse(update.data, nullptr, false));
  if (!counters) return spdlog::warn("upgrade: ignored the new generation's counters: {}", counters.error().message);
  successor_totals_.raise_to(counters.value());
  // Up the chain too: should we and it both die, an older generation resumes,
  // and what the newest showed is its floor as well.
  tell_predecessor_totals(update.data);
}

void Daemon::keep_successor_totals() {
  // What it showed is what we last sent it (inherited) plus what it counted
  // itself: that part stays counted, ours keep counting beside it.
  for (const auto& [series, shown] : successor_totals_.all())
    if (shown > counters_sent_.value(series)) resumed_offset_.add(series, shown - counters_sent_.value(series));
  successor_totals_ = {};
  tell_predecessor_totals(counter_totals().to_json().dump());
}

std::string Daemon::metrics_text() const {
  Counters counters = shown_after_commit_ ? *shown_after_commit_ : counter_totals();
  std::vector<GaugeSample> gauges;
  uint64_t older_connections = 0;
  for (const auto& g : older_generations_) older_connections += g.connections;
  gauges.push_back({"baton_open_connections", static_cast<double>(registry_.size())});
  gauges.push_back({"baton_draining_generations", static_cast<double>(older_generations_.size())});
  gauges.push_back({"baton_draining_connections", static_cast<double>(older_connections)});
  gauges.push_back({"baton_generation", static_cast<double>(context_.generation)});
  gauges.push_back({"baton_loop_lag_seconds", loop_lag_.last_s()});
  gauges.push_back({"baton_loop_lag_max_seconds", loop_lag_.max_s()});
  if (app_) {
    // The app's counts travel with its own state (app_supervisor.h), not with ours.
    const auto a = app_->status();
    counters.add(Counters::series("baton_app_restarts_total", "outcome", "ok"), a.value("restarts", uint64_t{0}));
    counters.add(Counters::series("baton_app_restarts_total", "outcome", "failed"), a.value("failed_restarts", uint64_t{0}));
    counters.add(Counters::series("baton_app_crashes_total"), a.value("crashes", uint64_t{0}));
    gauges.push_back({"baton_app_ready", a.value("ready", false) ? 1.0 : 0.0});
  }
  return render_exposition(counters, gauges);
}

nlohmann::json Daemon::upgrade_loop_window() const {
  auto w = loop_lag_.last_window_json();
  if (w.is_null()) return w;
  w["pid"] = ::getpid();
  w["generation"] = context_.generation;
  return w;
}

nlohmann::json Daemon::observability_status() const {
  nlohmann::json j;
  j["loop_lag_ms"] = loop_lag_.to_json();
  // Our own upgrade's, once we made one; before that, the one that started us.
  auto own = upgrade_loop_window();
  j["loop_lag_ms"]["last_upgrade"] = own.is_null() ? inherited_loop_window_ : own;
  j["handoff_stop_us"] = handoff_stops_.is_null() ? inherited_handoff_stops_ : handoff_stops_;
  j["metrics"] = options_.metrics ? nlohmann::json{{"address", options_.metrics->to_string()},
                                                   {"scrapes", metrics_http_.served()}}
                                  : nlohmann::json(nullptr);
  return j;
}

// ---- the predecessor's state, as it arrives --------------------------------------------

void Daemon::apply_state_update(const handoff::StateUpdate& update) {
  const auto j = nlohmann::json::parse(update.data, nullptr, /*allow_exceptions=*/false);
  if (update.key == kMetricsStateKey) {
    auto counters = Counters::from_json(j);
    if (!counters) return spdlog::warn("hand-off: ignored the previous generation's counters: {}", counters.error().message);
    inherited_counters_.raise_to(counters.value());
  } else if (update.key == kLoopLagStateKey) {
    if (j.is_object()) inherited_loop_window_ = j;
  } else if (update.key == kOffersStateKey) {
    predecessor_offers_ = update.data == "pending";
    if (!predecessor_offers_) end_handoff_source();
  } else if (update.key == kHandoffStopsStateKey) {
    if (j.is_object()) inherited_handoff_stops_ = j;
  } else if (update.key == kHistoryStateKey) {
    if (auto st = history_.merge(j); !st)
      return spdlog::warn("hand-off: ignored the previous generation's history: {}", st.error().message);
    attach_takeover_steps();
    warm_history();
  } else {
    spdlog::debug("hand-off: ignored state update '{}': not one this batond knows", update.key);
  }
}

void Daemon::note_takeover_step(const std::string& step, std::chrono::steady_clock::time_point at) {
  takeover_steps_.push_back({step, monotonic_us(at), {}});
  attach_takeover_steps();
}

void Daemon::attach_takeover_steps() {
  if (takeover_record_.empty()) takeover_record_ = history_.upgrade_to(::getpid());
  if (takeover_record_.empty()) return;  // not yet arrived (or an older predecessor keeps none)
  for (const auto& e : takeover_steps_) history_.event(takeover_record_, e.name, e.detail, e.at_us);
  takeover_steps_.clear();
}

// ---- this generation's own upgrades -------------------------------------------------------

void Daemon::record_upgrade_step(const std::string& step, const std::string& detail) {
  if (!upgrade_record_.empty()) history_.event(upgrade_record_, step, detail);
}

void Daemon::count_upgrade_outcome(bool ok, const std::string& error) {
  const double seconds = attempt_.ms_since_request() / 1000.0;
  own_events_.add(Counters::series("baton_upgrades_total", "outcome", ok ? "ok" : "failed"));
  observe_upgrade_duration(own_events_, seconds);
  history_.finish(upgrade_record_, ok, error);
}

bool Daemon::send_state_updates(bool force) {
  if (!predecessor_) return false;
  auto send = [&](const char* key, const std::string& data) {
    // Inside before_commit with the attempt, after COMMIT over the link.
    auto* link = predecessor_->successor();
    auto st = link ? link->send_state_update(key, data) : predecessor_->send_state_update(key, data);
    if (!st) spdlog::debug("state update '{}': {}", key, st.error().message);
    return st.ok();
  };
  const auto totals = counter_totals();
  bool totals_sent = totals == counters_sent_ && !force;
  if (!totals_sent && send(kMetricsStateKey, totals.to_json().dump())) {
    counters_sent_ = totals;
    totals_sent = true;
  }
  if (loop_lag_.windows_ended() != loop_windows_sent_ && send(kLoopLagStateKey, upgrade_loop_window().dump()))
    loop_windows_sent_ = loop_lag_.windows_ended();
  if (!handoff_stops_sent_ && send(kHandoffStopsStateKey, handoff_stops_.dump())) handoff_stops_sent_ = true;
  const bool offers = will_offer_connections();
  if ((force || offers_told_ != offers) && send(kOffersStateKey, offers ? "pending" : "done")) offers_told_ = offers;
  if (!force && history_.version() == history_sent_) return totals_sent;
  // At READY the whole history goes (it fits in one message unless its
  // texts are unusually long: then fewer records); later, the latest.
  for (size_t n : {force ? FlightRecorder::kCapacity : kHistoryUpdateRecords, kHistoryUpdateRecords, size_t{1}}) {
    auto data = history_.to_text(n);
    if (data.size() + 64 > handoff::kMaxPayload) continue;
    if (send(kHistoryStateKey, data)) history_sent_ = history_.version();
    return totals_sent;
  }
  return totals_sent;
}

// ---- control ------------------------------------------------------------------------------

void Daemon::warm_history() {
  // One record per idle loop turn, ahead of the next upgrade's COMMIT turn,
  // which sends them all (FlightRecorder::warm_one).
  if (history_warmer_ || !loop_ready_) return;
  if (history_warmer_.init(uv_idle_init, &loop_, this) != 0) return;
  uv_idle_start(history_warmer_.get(), [](uv_idle_t* idle) {
    auto* self = static_cast<Daemon*>(idle->data);
    if (!self->history_.warm_one()) self->history_warmer_.close();
  });
}

nlohmann::json Daemon::metrics_reply() {
  auto reply = control::ok_reply();
  reply["content_type"] = kExpositionContentType;
  reply["text"] = serve_metrics();
  return reply;
}

nlohmann::json Daemon::history_reply() const {
  auto reply = control::ok_reply();
  reply["records"] = history_.to_json();
  return reply;
}

}  // namespace baton::daemon
