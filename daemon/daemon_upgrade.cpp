// Daemon, the upgrade: starting one (SIGUSR2 and batonctl alike), its
// outcome, what happens when the successor exits, and the drain reports it
// gets while this generation drains.

#include <unistd.h>

#include <spdlog/spdlog.h>

#include "daemon.h"
#include "daemon_internal.h"

extern char** environ;

namespace baton::daemon {

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
  auto refuse = [&](const std::string& why) -> handoff::Status {
    spdlog::warn("upgrade ({}) refused: {}", trigger, why);
    return handoff::Error{why};
  };
  if (drain_->active()) return refuse("this generation is draining (" + drain_->cause() + ")");
  const std::string& path = binary.empty() ? context_.binary : binary;
  if (path.empty()) return refuse("no binary to start: " + context_.binary_error);
  if (predecessor_->state() != handoff::UpgradeState::Idle)
    return refuse(std::string("busy: an upgrade is already in progress (") + handoff::to_string(predecessor_->state()) + ")");

  std::vector<handoff::ListenerOffer> offers;
  for (const auto& l : listeners_)
    offers.push_back({l->name(), l->configured().to_string(), l->bound().to_string(), l->fd()});
  auto spec = spawn_spec(path);
  spdlog::info("upgrade ({}): starting {} as generation {}", trigger, spec.binary, context_.generation + 1);
  upgrade_requested_ = std::chrono::steady_clock::now();
  upgrade_trigger_ = trigger;
  if (auto st = predecessor_->start(spec, std::move(offers), timeout.value_or(options_.upgrade_timeout)); !st) {
    spdlog::error("upgrade failed ({}), nothing started, still serving: {}", trigger, st.error().message);
    last_upgrade_ = {{"ok", false}, {"trigger", trigger}, {"error", st.error().message}};
    return st;
  }
  return {};
}

void Daemon::on_upgrade_outcome(const handoff::UpgradeOutcome& outcome) {
  const double ms = ms_since(upgrade_requested_);
  if (drain_->active() && !handed_over()) {
    // A stop came during the upgrade and cancelled it.
    spdlog::info("upgrade abandoned after {:.1f} ms because this generation is stopping: {}", ms, outcome.reason);
    for (uint64_t id : upgrade_waiters_)
      if (auto* s = control_sessions_.find(id)) s->send(control::error_reply("abandoned: batond is stopping"));
    upgrade_waiters_.clear();
    if (exit_after_upgrade_) {
      // Not from inside the Predecessor's callback: on the next loop turn.
      exit_timer_.init(uv_timer_init, &loop_, this);
      uv_timer_start(exit_timer_.get(), [](uv_timer_t* t) { static_cast<Daemon*>(t->data)->on_drained(); }, 0, 0);
    }
    return;
  }
  std::vector<ControlSession*> waiters;
  for (uint64_t id : upgrade_waiters_)
    if (auto* s = control_sessions_.find(id)) waiters.push_back(s);
  upgrade_waiters_.clear();

  if (!outcome.ok) {
    spdlog::error("upgrade failed after {:.1f} ms, rolled back, still serving: {}", ms, outcome.reason);
    last_upgrade_ = {{"ok", false}, {"trigger", upgrade_trigger_}, {"pid", outcome.pid}, {"ms", ms},
                     {"error", outcome.reason}};
    for (auto* s : waiters) s->send(control::error_reply("rolled back: " + outcome.reason));
    return;
  }
  // The pid file first: whoever reads the outcome line may read the file next.
  if (auto st = pid_file_.write(outcome.pid); !st) spdlog::error("pid file: {}", st.error().message);
  spdlog::info("upgrade: pid {} is serving as generation {}; READY {:.1f} ms after the request",
               outcome.pid, context_.generation + 1, ms);
  last_upgrade_ = {{"ok", true}, {"trigger", upgrade_trigger_}, {"pid", outcome.pid}, {"ms", ms}};
  // Before this process exits: systemd must follow the main pid to the new one.
  notifier_.main_pid(outcome.pid, "handed over to pid " + std::to_string(outcome.pid) + "; draining " +
                                      std::to_string(registry_.size()) + " connection(s)");
  // Our own predecessor, if it still drains, must not take over again should we exit now.
  if (predecessor_link_ && predecessor_link_->open()) (void)predecessor_link_->notify_succeeded();
  const size_t open = registry_.size();
  report_timer_.init(uv_timer_init, &loop_, this);
  uv_timer_start(report_timer_.get(), &Daemon::on_report_timer, 0, kDrainReportIntervalMs);
  for (auto* s : waiters) {
    auto ready = control::event("ready");
    ready["pid"] = outcome.pid;
    ready["generation"] = context_.generation + 1;
    ready["ms"] = ms;
    s->send(ready);
    auto draining = control::event("draining");
    draining["pid"] = ::getpid();
    draining["connections"] = open;
    s->send(draining);
    auto done = control::ok_reply();
    done["pid"] = outcome.pid;
    done["generation"] = context_.generation + 1;
    done["ready_ms"] = ms;
    done["old_pid"] = ::getpid();
    done["old_connections"] = open;
    s->send(done);
  }
  stop_accepting_and_drain("handed over to pid " + std::to_string(outcome.pid));
}

void Daemon::on_successor_exit(pid_t pid, bool clean, bool superseded, const std::string& how) {
  if (finished_) return;
  if (clean || superseded) {
    spdlog::info("successor pid {} exited with {}{}", pid, how, superseded ? " after handing over in turn" : "");
    close_listeners();  // still handed over: the files are the successor's
    return;
  }
  spdlog::critical("successor pid {} died with {} after taking over; resuming", pid, how);
  if (auto st = predecessor_->resume(); !st) spdlog::error("resume: {}", st.error().message);
  handover_.reset();  // connections still here stay here
  report_timer_.close();
  last_report_sent_.clear();
  drain_->cancel();
  stop_signals_ = 0;
  for (auto& l : listeners_) {
    if (auto st = l->start(); !st) return fatal("resuming: " + st.error().message);
    spdlog::info("listening name={} addr={} resumed=yes", l->name(), l->bound().endpoint());
  }
  if (auto st = pid_file_.write(::getpid()); !st) spdlog::error("pid file: {}", st.error().message);
  notifier_.main_pid(::getpid(), "successor pid " + std::to_string(pid) + " died; serving again");
  spdlog::critical("generation {} (pid {}) resumes serving: its successor died", context_.generation, ::getpid());
}

void Daemon::on_report_timer(uv_timer_t* timer) { static_cast<Daemon*>(timer->data)->report_draining(); }

void Daemon::report_draining() {
  std::vector<handoff::GenerationReport> reports{
      {static_cast<uint32_t>(::getpid()), context_.generation, static_cast<uint32_t>(registry_.size())}};
  reports.insert(reports.end(), older_generations_.begin(), older_generations_.end());
  if (reports == last_report_sent_) return;
  if (auto st = predecessor_->report_draining(reports); !st) {
    spdlog::debug("drain report: {}", st.error().message);
    report_timer_.close();
    return;
  }
  last_report_sent_ = std::move(reports);
}

}  // namespace baton::daemon
