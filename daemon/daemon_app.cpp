// Daemon, supervisor mode: the app on batond's listeners, its restarts, and
// what a batond upgrade hands over of it.

#include <spdlog/spdlog.h>

#include "daemon.h"

namespace baton::daemon {

void Daemon::make_app_supervisor() {
  std::vector<std::pair<std::string, int>> fds;
  for (const auto& l : listeners_)
    if (!is_batond_listener(l->name())) fds.emplace_back(l->name(), l->fd());
  app_ = std::make_unique<AppSupervisor>(&loop_, options_.app, std::move(fds),
                                         AppEvents{
                                             .progress = [this](const nlohmann::json& e) { on_app_progress(e); },
                                             .outcome = [this](const RestartOutcome& o) { on_app_restart_outcome(o); },
                                             .stopped = [this] { on_app_stopped(); },
                                             .serving = [this](pid_t pid) { on_app_serving(pid); },
                                         });
}

handoff::Status Daemon::adopt_app(std::vector<handoff::InheritedState> state) {
  for (auto& item : state) {
    if (item.key != kAppStateKey) {
      spdlog::warn("hand-off: ignored state '{}' from the previous generation: not one this batond knows", item.key);
      continue;
    }
    if (!options_.exec_mode())
      return handoff::Error{"the previous generation supervises an app, and this one has no --exec (or [app] command): "
                            "it would be left unsupervised"};
    make_app_supervisor();
    if (auto st = app_->adopt(item.data, std::move(item.fds)); !st) return st;
    app_adopted_ = true;
  }
  return {};
}

handoff::Status Daemon::start_app() {
  if (!options_.exec_mode()) return {};
  if (app_adopted_) {
    // Until the previous generation has exited (its process, not our link
    // to it: a link closed on a bad message leaves it alive), it could
    // resume with the app as it handed it over: nothing changes the app
    // meanwhile.
    app_->set_held(watch_predecessor_exit());
    app_->resume();
    return {};
  }
  if (app_) return {};
  make_app_supervisor();
  return app_->start();
}

bool Daemon::watch_predecessor_exit() {
  if (predecessor_exit_) return true;
  if (!predecessor_alive() || predecessor_process_.fd() < 0) return false;  // gone, or cannot be watched
  if (predecessor_exit_.init(uv_poll_init, &loop_, this, predecessor_process_.fd()) != 0) return false;
  uv_poll_start(predecessor_exit_.get(), UV_READABLE, [](uv_poll_t* poll, int, int) {
    auto* self = static_cast<Daemon*>(poll->data);
    self->predecessor_exit_.close();
    self->note_takeover_step("old_exited");
    // Gone before it could report the end: we serve, so the upgrade stood.
    self->history_.finish(self->takeover_record_, true);
    if (!self->app_) return;
    spdlog::info("app: the previous batond generation has exited; supervising alone");
    self->app_->set_held(false);
  });
  return true;
}

void Daemon::restart_app(const std::string& trigger, ControlSession* session) {
  auto refuse = [&](const std::string& why) {
    spdlog::warn("restart ({}) refused: {}", trigger, why);
    if (session) session->send(control::error_reply(why));
  };
  if (!app_) return refuse("batond runs no app: start it with --exec -- CMD (see docs/supervisor.md)");
  if (predecessor_->state() != handoff::UpgradeState::Idle)
    return refuse(std::string("a batond upgrade is in progress (") + handoff::to_string(predecessor_->state()) + ")");
  // Registered first: the "spawned" event comes from inside restart().
  if (session) restart_waiters_.push_back(session->id());
  // A restart already in flight keeps its record: this request is refused
  // below, and is no restart of its own.
  const bool recording = restart_record_.empty();
  if (recording) {
    const auto serving = app_->status()["pid"];
    restart_record_ = history_.begin("restart", trigger, serving.is_number() ? serving.get<pid_t>() : 0,
                                     context_.generation);
  }
  if (auto st = app_->restart(trigger); !st) {
    if (recording) history_.finish(std::exchange(restart_record_, {}), false, st.error().message);
    if (session) {
      restart_waiters_.pop_back();
      session->send(control::error_reply(st.error().message));
    }
  }
}

void Daemon::on_app_progress(const nlohmann::json& event) {
  // "spawned" and "ready", each with the new instance's pid.
  const auto name = event.value("event", std::string());
  if (name == "spawned") history_.set_to_pid(restart_record_, event.value("pid", pid_t{0}));
  if (!name.empty()) history_.event(restart_record_, name);
  for (uint64_t id : restart_waiters_)
    if (auto* s = control_sessions_.find(id)) s->send(event);
}

void Daemon::on_app_restart_outcome(const RestartOutcome& outcome) {
  if (outcome.ok) history_.event(restart_record_, "probation_passed", "old pid " + std::to_string(outcome.old_pid) + " told to stop");
  history_.finish(std::exchange(restart_record_, {}), outcome.ok, outcome.reason);
  auto reply = outcome.ok ? control::ok_reply() : control::error_reply(outcome.reason);
  reply["pid"] = outcome.pid;
  reply["old_pid"] = outcome.old_pid;
  reply["ms"] = outcome.ms;
  for (uint64_t id : restart_waiters_)
    if (auto* s = control_sessions_.find(id)) s->send(reply);
  restart_waiters_.clear();
}

void Daemon::on_app_serving(pid_t pid) {
  // READY=1 again after a restart is harmless; STATUS= names the instance.
  notifier_.ready("serving: generation " + std::to_string(context_.generation) + ", app pid " + std::to_string(pid));
}

void Daemon::on_app_stopped() {
  spdlog::info("app: every instance has exited");
  if (drained_wait_ != DrainedWait::App) return;
  drained_wait_ = DrainedWait::Nothing;
  on_drained();
}

}  // namespace baton::daemon
