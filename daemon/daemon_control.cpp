// Daemon, the control side: batonctl's requests on the control socket, the
// status it reports, and reloading the configuration file.

#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cstring>

#include "config_file.h"
#include "daemon.h"
#include "elapsed.h"
#include "baton/handoff/executable_path.h"
#include "version.h"

namespace baton::daemon {

handoff::Result<nlohmann::json> Daemon::reload(const std::string& trigger) {
  if (context_.config_path.empty()) {
    spdlog::warn("reload ({}): batond was started without --config; nothing to re-read", trigger);
    return handoff::Error{"batond was started without --config; nothing to re-read"};
  }
  notifier_.reloading("reloading " + context_.config_path);
  auto file = load_config_file(context_.config_path);
  if (!file) {
    spdlog::error("reload ({}) rejected, the running configuration stays: {}", trigger, file.error().message);
    notifier_.ready("reload rejected: " + file.error().message);
    return handoff::Error{file.error().message};
  }
  DaemonOptions next = merge(file.value(), context_.command_line ? *context_.command_line : SettingsLayer{});
  std::vector<std::string> applied, at_next_upgrade;
  if (next.log_level != options_.log_level) {
    spdlog::set_level(spdlog::level::from_str(next.log_level));
    applied.push_back("log_level=" + next.log_level);
  }
  if (next.max_connections != options_.max_connections) applied.push_back("max_connections=" + std::to_string(next.max_connections));
  if (next.drain_timeout != options_.drain_timeout) applied.push_back("drain.timeout");
  if (next.upgrade_timeout != options_.upgrade_timeout) applied.push_back("upgrade.timeout");
  if (next.upgrade_probation != options_.upgrade_probation) applied.push_back("upgrade.probation");
  if (next.drain_mode != options_.drain_mode)
    applied.push_back(std::string("drain.mode=") + (next.drain_mode == DaemonOptions::DrainMode::Handoff ? "handoff" : "wait"));
  auto names = [](const DaemonOptions& o) {
    std::string s;
    for (const auto& l : o.listeners) s += l.name + "=" + l.address.to_string() + " ";
    return s;
  };
  if (names(next) != names(options_)) at_next_upgrade.push_back("listeners");
  if (next.pid_file != options_.pid_file) at_next_upgrade.push_back("pid_file");
  if (next.log_format != options_.log_format) at_next_upgrade.push_back("log_format");
  if (next.control_path != options_.control_path) at_next_upgrade.push_back("control");
  if (next.backlog != options_.backlog) at_next_upgrade.push_back("backlog");
  if (next.metrics != options_.metrics) at_next_upgrade.push_back("metrics");
  if (next.exec_mode() != options_.exec_mode()) {
    // Into supervisor mode, an upgrade can go; out of it, it refuses (the
    // running app would be left unsupervised): that takes a stop and a start.
    at_next_upgrade.push_back(next.exec_mode() ? "app (supervisor mode)"
                                               : "app (leaving supervisor mode: needs a stop and a start, an upgrade refuses it)");
    next.app = options_.app;
  } else if (!(next.app == options_.app)) {
    // The next restart (SIGHUP's own, or batonctl restart) runs the new command.
    if (app_) app_->set_options(next.app);
    applied.push_back("app");
  }
  if (next.binary != options_.binary) {
    // What the next upgrade starts: takes effect for that very upgrade.
    auto resolved = next.binary.empty() ? handoff::Result<std::string>(context_.binary) : handoff::resolve_executable(next.binary);
    if (!resolved) {
      spdlog::error("reload ({}) rejected, the running configuration stays: upgrade.binary: {}", trigger,
                    resolved.error().message);
      return handoff::Error{"upgrade.binary: " + resolved.error().message};
    }
    context_.binary = resolved.value();
    applied.push_back("upgrade.binary=" + context_.binary);
  }

  // What cannot change in a running process keeps its current value here.
  next.listeners = options_.listeners;
  next.pid_file = options_.pid_file;
  next.log_format = options_.log_format;
  next.control_path = options_.control_path;
  next.backlog = options_.backlog;
  next.metrics = options_.metrics;
  options_ = std::move(next);

  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s.empty() ? std::string("nothing") : s;
  };
  spdlog::info("reload ({}): {} re-read; applied now: {}; at the next upgrade: {}", trigger, context_.config_path,
               join(applied), join(at_next_upgrade));
  notifier_.ready("serving: generation " + std::to_string(context_.generation) + ", configuration reloaded");
  auto reply = control::ok_reply();
  reply["applied"] = applied;
  reply["at_next_upgrade"] = at_next_upgrade;
  return reply;
}

void Daemon::accept_control(handoff::UniqueFd fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    spdlog::warn("control: SO_PEERCRED: {}; connection refused", std::strerror(errno));
    return;
  }
  // Same user or root: the socket's 0600 mode says the same, this holds
  // even if someone loosens the file's permissions.
  if (cred.uid != ::geteuid() && cred.uid != 0) {
    spdlog::warn("control: refused connection from uid {} pid {} (only uid {} or root may control batond)", cred.uid,
                 cred.pid, ::geteuid());
    return;
  }
  spdlog::debug("control: connection from uid {} pid {}", cred.uid, cred.pid);
  ControlSession::start(&loop_, std::move(fd),
                        [this](ControlSession& s, const control::Request& r) { handle_control(s, r); },
                        control_sessions_);
}

void Daemon::handle_control(ControlSession& session, const control::Request& request) {
  using control::Command;
  spdlog::info("control: {} requested", control::to_string(request.command));
  auto timeout = [&]() -> std::optional<std::chrono::milliseconds> {
    if (!request.timeout_s) return std::nullopt;
    return std::chrono::milliseconds(static_cast<long long>(*request.timeout_s * 1000.0));
  };
  switch (request.command) {
    case Command::Status:
      session.send(status());
      return;
    case Command::Reload: {
      auto r = reload("batonctl");
      session.send(r ? r.value() : control::error_reply(r.error().message));
      return;
    }
    case Command::Upgrade: {
      if (auto st = request_upgrade("batonctl", request.binary, timeout()); !st) {
        session.send(control::error_reply(st.error().message));
        return;
      }
      // It hears "spawned" once the new process exists (on_upgrade_progress).
      attempt_.wait(session.id());
      return;
    }
    case Command::Restart:
      restart_app("batonctl", &session);
      return;
    case Command::Metrics:
      session.send(metrics_reply());
      return;
    case Command::History:
      session.send(history_reply());
      return;
    case Command::Stop: {
      auto reply = control::ok_reply();
      reply["pid"] = ::getpid();
      reply["connections"] = registry_.size();
      reply["already_draining"] = drain_->active();
      session.send(reply);
      // The session stays open: batonctl learns the exit from its EOF.
      note_stop_requested("batonctl stop");
      stop_accepting_and_drain("batonctl stop", timeout());
      return;
    }
  }
}

nlohmann::json Daemon::status() const {
  auto j = control::ok_reply();
  j["pid"] = ::getpid();
  j["generation"] = context_.generation;
  j["version"] = kVersion;
  j["uptime_s"] = ms_since(context_.started) / 1000.0;
  j["state"] = drain_->active() ? "draining" : "serving";
  nlohmann::json listeners = nlohmann::json::array();
  for (const auto& l : listeners_)
    listeners.push_back({{"name", l->name()}, {"address", l->bound().to_string()},
                         {"configured", l->configured().to_string()}, {"inherited", l->inherited()}});
  j["listeners"] = listeners;
  j["connections"] = {{"open", registry_.size()},
                      {"accepted", registry_.accepted_total()},
                      {"adopted", adopted_connections_},
                      {"handed_over", drain_counts_.handed_over}};
  j["upgrade"] = {{"state", handoff::to_string(predecessor_->state())},
                  {"probation_ms", options_.upgrade_probation.count()},
                  {"last", attempt_.last().is_null() ? nlohmann::json(nullptr) : attempt_.last()}};
  if (predecessor_->state() == handoff::UpgradeState::Probation) {
    j["upgrade"]["successor_pid"] = predecessor_->successor_pid();
    // null while the successor has not reported SERVING yet: the window has not started.
    const auto left = predecessor_->probation_left();
    j["upgrade"]["probation_left_ms"] = left ? nlohmann::json(left->count()) : nlohmann::json(nullptr);
  }
  if (drain_->active()) j["drain"] = {{"cause", drain_->cause()}, {"connections_at_start", drain_->started_with()}};
  nlohmann::json older = nlohmann::json::array();
  for (const auto& g : older_generations_)
    older.push_back({{"pid", g.pid}, {"generation", g.generation}, {"connections", g.connections},
                     {"probation_left_ms", g.probation_left_ms ? nlohmann::json(g.probation_left_ms) : nlohmann::json(nullptr)}});
  j["draining_generations"] = older;
  j["mode"] = options_.exec_mode() ? "exec" : "echo";
  j.update(observability_status());
  if (app_) j["app"] = app_->status();
  return j;
}

}  // namespace baton::daemon
