// Daemon, the upgrade: starting one (SIGUSR2 and batonctl alike), its
// outcome, what happens when the successor exits, and the drain reports it
// gets while this generation drains.

#include <unistd.h>

#include <algorithm>

#include <spdlog/spdlog.h>

#include "daemon.h"
#include "elapsed.h"
#include "handoff_stops.h"

extern char** environ;

namespace baton::daemon {
namespace {

// How often a draining generation tells its successor how far it has got.
constexpr uint64_t kDrainReportIntervalMs = 200;

}  // namespace

handoff::SpawnSpec Daemon::spawn_spec(const std::string& binary) const {
  handoff::SpawnSpec spec;
  spec.binary = binary;
  spec.args = context_.args;
  spec.channel_variable = kHandoffFdVariable;
  const std::string gen_prefix = std::string(kGenerationVariable) + "=";
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    if (!kv.starts_with(gen_prefix)) spec.env.push_back(std::move(kv));
  }
  spec.env.push_back(gen_prefix + std::to_string(context_.generation + 1));
  return spec;
}

handoff::Status Daemon::request_upgrade(const std::string& trigger, const std::string& binary,
                                        std::optional<std::chrono::milliseconds> timeout) {
  const LoopLag::Work work(loop_lag_, "request");
  auto refuse = [&](const std::string& why) -> handoff::Status {
    spdlog::warn("upgrade ({}) refused: {}", trigger, why);
    return handoff::Error{why};
  };
  if (drain_->active()) return refuse("this generation is draining (" + drain_->cause() + ")");
  const std::string& path = binary.empty() ? context_.binary : binary;
  if (path.empty()) return refuse("no binary to start: " + context_.binary_error);
  if (predecessor_->state() != handoff::UpgradeState::Idle)
    return refuse(std::string("busy: an upgrade is already in progress (") + handoff::to_string(predecessor_->state()) + ")");

  std::vector<handoff::StateOffer> state;
  if (app_) {
    auto app_state = app_->state();
    if (!app_state) return refuse(app_state.error().message);
    state.push_back(std::move(app_state).value());
  }
  std::vector<handoff::ListenerOffer> offers;
  for (const auto& l : listeners_)
    offers.push_back({l->name(), l->configured().to_string(), l->bound().to_string(), l->fd()});
  auto spec = spawn_spec(path);
  spdlog::info("upgrade ({}): starting {} as generation {}", trigger, spec.binary, context_.generation + 1);
  attempt_.begin(trigger, timeout.value_or(options_.upgrade_timeout));
  upgrade_record_ = history_.begin("upgrade", trigger, ::getpid(), context_.generation);
  // From before the spawn: what the upgrade costs this loop, the spawn included.
  // An earlier attempt's window (one that failed) is not this upgrade's: not sent.
  loop_lag_.begin_window();
  loop_windows_sent_ = loop_lag_.windows_ended();
  // An earlier hand-off's figure (one cut short by a successor that died) is
  // not this upgrade's: not sent to this successor.
  handoff_stops_sent_ = true;
  const handoff::UpgradeTimeouts timeouts{attempt_.timeout(), options_.upgrade_probation};
  if (auto st = predecessor_->start(spec, std::move(offers), timeouts, std::move(state)); !st) {
    end_loop_window();
    spdlog::error("upgrade failed ({}), nothing started, still serving: {}", trigger, st.error().message);
    attempt_.not_started(st.error().message);
    count_upgrade_outcome(false, st.error().message);
    return st;
  }
  // The app as it was sent is what the new generation takes over: nothing
  // changes it (no restart, no replacement) until the outcome. At COMMIT
  // the new generation supervises it; on a rollback we do again.
  if (app_) app_->pause();
  return {};
}

void Daemon::on_upgrade_progress(const char* step) {
  if (std::string_view(step) == "spawned") {
    const pid_t pid = predecessor_->successor_pid();
    history_.set_to_pid(upgrade_record_, pid);
    attempt_.spawned(pid, options_.upgrade_probation);
  }
  record_upgrade_step(step);
}

handoff::Status Daemon::before_commit(pid_t pid) {
  // Told before COMMIT, not after: should we die between the two, our
  // predecessor must not resume beside a generation that may be serving.
  // The message sits in its socket even if we die right after sending it.
  // Closed by its side (EOF): it is exiting. Closed by ours on a bad message:
  // it lives on and could resume, and cannot be told.
  if (predecessor_link_ && predecessor_alive()) {
    if (predecessor_link_->broken())
      return handoff::Error{"the previous generation (pid " + std::to_string(predecessor_process_.pid()) +
                            ") lives, but its hand-off channel is closed: it could not be told, and could resume "
                            "beside the new generation"};
    if (auto st = predecessor_link_->notify_succeeded(pid); !st) return st;
  }
  // Our totals and timelines reach the new generation before COMMIT: it
  // serves (and is scraped) with them from its first moment.
  // What the successor surely has, shown by us after COMMIT (on_committed).
  commit_totals_.reset();
  if (send_state_updates(/*force=*/true)) commit_totals_ = counters_sent_;
  return {};
}

void Daemon::relay_succeeded(pid_t pid) {
  // Best effort: the newer generation is committed already. Should this
  // fail, an older generation could resume beside it only if every
  // generation between them died.
  if (!predecessor_link_) return;
  if (auto st = predecessor_link_->relay_succeeded(pid); !st)
    spdlog::warn("upgrade: could not tell the previous generation of newer pid {}: {}", pid, st.error().message);
}

void Daemon::on_committed(pid_t pid) {
  shown_after_commit_ = std::exchange(commit_totals_, std::nullopt);
  // The successor writes its pid to its own path before it reports serving;
  // ours may differ (the configuration moved it): written if it still names
  // us, never over the successor's (or a newer generation's) own. Off the
  // loop: a rename can block for most of a millisecond (pid_file.h).
  pid_file_.write_soon(pid, PidFile::Replace::IfOurs);
  spdlog::info("upgrade: committed; successor={} accepts as generation {}, READY {:.1f} ms after the request; probation "
               "for {} ms once it reports serving",
               pid, context_.generation + 1, attempt_.ms_since_request(), options_.upgrade_probation.count());
  // Before this process exits: systemd must follow the main pid to the new one.
  notifier_.main_pid(pid, "handed over to pid " + std::to_string(pid) + "; draining " +
                              std::to_string(registry_.size()) + " connection(s)");
  report_timer_.init(uv_timer_init, &loop_, this);
  uv_timer_start(report_timer_.get(), &Daemon::on_report_timer, 0, kDrainReportIntervalMs);
  // Connections stay ours through the probation: in `handoff` mode they go
  // only to a successor that passed it. A drain deadline falling inside the
  // probation (which waits up to the upgrade timeout for SERVING) would
  // half-close them before they could go: it counts from its end instead.
  std::optional<std::chrono::milliseconds> deadline;
  if (options_.drain_mode == DaemonOptions::DrainMode::Handoff) {
    deadline = handoff_drain_deadline();
    outgoing_.queue();
  }
  stop_accepting_and_drain("handed over to pid " + std::to_string(pid), deadline);
  record_upgrade_step("old_stopped_accepting");
}

std::chrono::milliseconds Daemon::handoff_drain_deadline() const {
  return options_.drain_timeout + options_.upgrade_timeout + options_.upgrade_probation;
}

void Daemon::on_upgrade_outcome(const handoff::UpgradeOutcome& outcome) {
  const double ms = attempt_.ms_since_request();
  if (!outcome.committed && drain_->active()) {
    // A stop came during the upgrade and cancelled it.
    spdlog::info("upgrade abandoned after {:.1f} ms because this generation is stopping: {}", ms, outcome.reason);
    shown_after_commit_.reset();
    count_upgrade_outcome(false, "abandoned: stopping: " + outcome.reason);
    end_loop_window();
    attempt_.abandoned();
    exit_after_drained_upgrade();
    return;
  }
  if (!outcome.ok) {
    const std::string what = outcome.committed ? "failed in probation" : "failed";
    spdlog::error("upgrade {} after {:.1f} ms, rolled back, still serving: {}", what, ms, outcome.reason);
    record_upgrade_step("rolled_back");
    shown_after_commit_.reset();
    count_upgrade_outcome(false, outcome.reason);
    end_loop_window();
    attempt_.failed(outcome.pid, ms, outcome.reason, outcome.committed);
    if (outcome.committed) resume_serving(outcome.reason);
    else if (app_) app_->resume();
    return;
  }
  spdlog::info("upgrade: pid {} is serving as generation {}; probation passed {:.1f} ms after the request",
               outcome.pid, context_.generation + 1, ms);
  record_upgrade_step("probation_passed");
  count_upgrade_outcome(true);
  attempt_.succeeded(outcome.pid, ms, context_.generation + 1, registry_.size());
  // Decided at COMMIT (drain = handoff then): ours go, and what our
  // predecessor may still hand us goes after them. The window runs on through
  // the hand-off: it is part of what the loop pays.
  const bool predecessor_may_offer = predecessor_offers_ && predecessor_link_ && predecessor_link_->open();
  handoff_stops_noted_for_ = nullptr;  // a new one may take a freed one's address (and may settle at once)
  if (outgoing_.start(predecessor_->successor(), predecessor_may_offer, handoff_drain_deadline())) {
    record_upgrade_step("handoff_started", std::to_string(registry_.size()) + " connection(s)" +
                                               (predecessor_may_offer ? ", and what the previous generation sends" : ""));
  } else {
    end_loop_window();
    send_state_updates(/*force=*/false);  // "done" to our successor, now
  }
  exit_after_drained_upgrade();
}

bool Daemon::will_offer_connections() const {
  if (outgoing_.passing_on()) return true;
  // At COMMIT (before_commit), before on_committed has queued ours.
  return outgoing_.stage() == OutgoingHandoff::Stage::None &&
         options_.drain_mode == DaemonOptions::DrainMode::Handoff &&
         predecessor_->state() == handoff::UpgradeState::AwaitingReady;
}

void Daemon::end_handoff_source() { outgoing_.end_source(); }

void Daemon::on_outgoing_settled() {
  end_loop_window();
  note_handoff_stops();
  send_state_updates(/*force=*/false);  // "done" to our successor, now
  // However it settled (also on a broken link, the source held open): a
  // drain that was done and waited for it goes on.
  after_hold();
}

void Daemon::after_hold() {
  if (finished() || !drain_->done()) return;
  drained_next_turn();
}

void Daemon::drop_connection_handoff() {
  const bool held = holding_for_predecessor();
  if (outgoing_.current() && !outgoing_.current()->settled()) {  // it will not settle now
    end_loop_window();
    note_handoff_stops();
  }
  outgoing_.drop();
  if (held) after_hold();
}

void Daemon::note_handoff_stops() {
  const auto* handoff = outgoing_.current();
  if (!handoff || handoff_stops_noted_for_ == handoff) return;  // settled, then dropped: once
  handoff_stops_noted_for_ = handoff;
  auto summary = summarize_handoff_stops(handoff->stops());
  if (summary.is_null()) return;
  summary["pid"] = ::getpid();
  summary["generation"] = context_.generation;
  spdlog::info("handoff: each connection stopped (read by neither process until adopted, or served here again) for {}",
               describe_handoff_stops(summary));
  handoff_stops_ = std::move(summary);
  handoff_stops_sent_ = false;
}

void Daemon::end_loop_window(bool now) { loop_lag_.end_window(now); }

void Daemon::on_loop_window_ended() {
  spdlog::info("upgrade: {} during it (from the request to its outcome, or to the end of the connection hand-off)",
               loop_lag_.last_window_summary());
}

void Daemon::exit_after_drained_upgrade() {
  if (drained_wait_ != DrainedWait::Upgrade) return;
  drained_wait_ = DrainedWait::Nothing;
  // Not from inside the Predecessor's callback: on the next loop turn.
  drained_next_turn();
}

void Daemon::drained_next_turn() {
  exit_timer_.init(uv_timer_init, &loop_, this);
  uv_timer_start(exit_timer_.get(), [](uv_timer_t* t) { static_cast<Daemon*>(t->data)->on_drained(); }, 0, 0);
}

void Daemon::on_successor_exit(pid_t pid, bool clean, bool superseded, const std::string& how) {
  if (finished()) return;
  if (superseded) {
    spdlog::info("successor pid {} exited with {} after handing over in turn", pid, how);
    // What it adopted from us it may have passed on: close our copies only.
    outgoing_.abandon_unknown();
    close_listeners(SocketFiles::Keep);  // the newer generation serves on them
    return;
  }
  if (clean) {
    // It stopped (and drained) as asked: the service is being stopped. What
    // it never answered for, it cannot be serving now: drained here. The
    // socket files stay: should a newer generation we were never told of
    // serve on them, removing them would cut it off for good, while a file
    // left behind by a stopped service is only replaced at the next start.
    spdlog::info("successor pid {} exited with {}", pid, how);
    // Its stop is the service's: an older generation that still lives
    // (draining, or in its probation of us) must not resume once we exit.
    note_stop_requested("successor pid " + std::to_string(pid) + " stopped");
    drop_connection_handoff();
    close_listeners(SocketFiles::Keep);
    return;
  }
  spdlog::critical("successor pid {} died with {} after taking over; resuming", pid, how);
  if (auto st = predecessor_->resume(); !st) spdlog::error("resume: {}", st.error().message);
  resume_serving("successor pid " + std::to_string(pid) + " died");
}

void Daemon::resume_serving(const std::string& why) {
  // The successor is dead: every connection we still hold, those whose
  // hand-off was unanswered included, can be served by us alone.
  drop_connection_handoff();
  report_timer_.close();
  last_report_sent_.clear();
  keep_successor_totals();
  shown_after_commit_.reset();
  if (stop_requested()) {
    // Told to stop while the successor still had the service: nothing to
    // resume for. The drain runs on; the service stops, as asked.
    spdlog::error("{}; not resuming: a stop was asked of this generation", why);
    // The service is this process again, stopping: the pid file and systemd
    // must not name the dead successor (a reused pid could be signalled).
    pid_file_.write_soon(::getpid());
    notifier_.main_pid(::getpid(), why + "; stopping");
    notifier_.stopping("stopping: " + why);
    close_listeners(SocketFiles::RemoveIfLast);
    if (app_) app_->stop();
    exit_after_drained_upgrade();
    return;
  }
  // Before anything can fail: the file must not name the dead successor.
  pid_file_.write_soon(::getpid());
  exit_timer_.close();
  drain_->cancel();
  drained_wait_ = DrainedWait::Nothing;
  stop_signals_ = 0;
  for (auto& l : listeners_) {
    if (!serves_itself(*l)) continue;
    if (auto st = l->start(); !st) return fatal("resuming: " + st.error().message);
    spdlog::info("listening name={} addr={} resumed=yes", l->name(), l->bound().endpoint());
  }
  if (app_) app_->resume();
  notifier_.main_pid(::getpid(), why + "; serving again");
  spdlog::critical("generation {} (pid {}) resumes serving: {}", context_.generation, ::getpid(), why);
}

void Daemon::on_report_timer(uv_timer_t* timer) {
  auto* self = static_cast<Daemon*>(timer->data);
  const LoopLag::Work work(self->loop_lag_, "drain_report");
  self->report_draining();
  self->send_state_updates(/*force=*/false);
}

void Daemon::report_draining() {
  const auto left = predecessor_->probation_left();
  std::vector<handoff::GenerationReport> reports{{static_cast<uint32_t>(::getpid()), context_.generation,
                                                  static_cast<uint32_t>(registry_.size()),
                                                  left ? static_cast<uint32_t>(std::max<int64_t>(1, left->count())) : 0}};
  reports.insert(reports.end(), older_generations_.begin(), older_generations_.end());
  if (reports == last_report_sent_) return;
  auto* link = predecessor_->successor();
  auto st = link ? link->report_draining(reports) : handoff::Status(handoff::Error{"no successor to report to"});
  if (!st) {
    spdlog::debug("drain report: {}", st.error().message);
    report_timer_.close();
    return;
  }
  last_report_sent_ = std::move(reports);
}

}  // namespace baton::daemon
