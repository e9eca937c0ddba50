#include "daemon.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cstring>

#include "baton/handoff/listener_set.h"
#include "baton/handoff/successor.h"
#include "signal_mask.h"
#include "socket_activation.h"
#include "config_file.h"
#include "executable_path.h"
#include "version.h"

extern char** environ;

namespace baton::daemon {
namespace {

// Creates the control socket's directory (and its parents) owner-only, if missing.
handoff::Status ensure_private_dir(const std::string& socket_path) {
  auto slash = socket_path.rfind('/');
  if (slash == std::string::npos || slash == 0) return {};
  std::string dir = socket_path.substr(0, slash);
  for (size_t pos = 1; pos != std::string::npos;) {
    pos = dir.find('/', pos + 1);
    std::string prefix = dir.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) return handoff::errno_error("mkdir " + prefix);
  }
  return {};
}

// How long a connection being handed over may take to write back what it owes.
constexpr std::chrono::milliseconds kHandoverFlushBound{1000};

// How often a draining generation tells its successor how far it has got.
constexpr uint64_t kDrainReportIntervalMs = 200;

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

const char* signal_name(int signo) {
  switch (signo) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR2: return "SIGUSR2";
    case SIGHUP: return "SIGHUP";
    default: return "signal";
  }
}

}  // namespace

Daemon::Daemon(DaemonOptions options, StartupContext context)
    : options_(std::move(options)), context_(std::move(context)), pid_file_(options_.pid_file) {}

Daemon::~Daemon() {
  if (!loop_ready_) return;
  close_everything();
  // Let libuv run the close callbacks (they free the handles), then check
  // that nothing was left behind.
  uv_run(&loop_, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop_) != 0) spdlog::error("event loop still has open handles at exit");
}

int Daemon::run() {
  if (int rc = uv_loop_init(&loop_); rc != 0) {
    spdlog::critical("uv_loop_init: {}", uv_strerror(rc));
    return 1;
  }
  loop_ready_ = true;
  drain_ = std::make_unique<Drain>(&loop_, registry_, drain_counts_, [this] { on_drained(); });
  predecessor_ = std::make_unique<handoff::Predecessor>(
      &loop_, [this](const handoff::UpgradeOutcome& o) { on_upgrade_outcome(o); },
      [this](pid_t pid, bool clean, bool superseded, const std::string& how) {
        on_successor_exit(pid, clean, superseded, how);
      });
  predecessor_->on_superseded([this] {
    // A newer generation serves now; ours will never be needed again.
    for (auto& l : listeners_) l->close(/*unlink_path=*/false);
  });

  // Signals first: a new generation must not die of a SIGTERM or SIGUSR2
  // that arrives while it is still taking over.
  if (auto st = install_signals(); !st) {
    spdlog::critical("{}", st.error().message);
    return 1;
  }
  if (auto st = open_listeners(); !st) {
    spdlog::critical("start-up failed: {}", st.error().message);
    return 1;
  }
  if (auto st = start_accepting(); !st) {
    spdlog::critical("start-up failed: {}", st.error().message);
    return 1;
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  return exit_code_;
}

handoff::Status Daemon::install_signals() {
  ::signal(SIGPIPE, SIG_IGN);  // a client gone mid-write is an error value, not a death
  for (int signo : {SIGTERM, SIGINT, SIGUSR2, SIGHUP}) {
    handoff::UvHandle<uv_signal_t> h;
    if (int rc = h.init(uv_signal_init, &loop_, this); rc != 0)
      return handoff::Error{std::string("uv_signal_init: ") + uv_strerror(rc)};
    if (int rc = uv_signal_start(h.get(), &Daemon::on_signal, signo); rc != 0)
      return handoff::Error{std::string("uv_signal_start ") + signal_name(signo) + ": " + uv_strerror(rc)};
    signals_.push_back(std::move(h));
  }
  unblock_handled_signals();  // blocked since main(): anything pending is delivered to the handlers now
  return {};
}

handoff::Status Daemon::open_listeners() {
  auto successor = handoff::Successor::from_environment(kHandoffFdVariable);
  if (!successor) return handoff::with_context("hand-off", successor.error());

  std::vector<handoff::ListenerRequest> requests;
  for (const auto& spec : options_.listeners) requests.push_back({spec.name, spec.address});
  // The control socket is a listener like the others: handed over, so its
  // path never disappears. Owner-only; peers are checked again at accept.
  if (auto st = ensure_private_dir(options_.control_path); !st) return handoff::with_context("control socket", st.error());
  requests.push_back({kControlListenerName, *handoff::ListenAddress::parse("unix:" + options_.control_path), 0600});

  std::vector<handoff::InheritedListener> inherited;
  if (!successor.value()) {
    inherited = match_activated(std::move(context_.activated), requests);
    // systemd owns these sockets (and their files) across restarts of the
    // service; every later generation learns their names from the environment.
    std::string names;
    for (const auto& l : inherited) names += (names.empty() ? "" : ",") + l.name;
    if (!names.empty()) ::setenv(kSystemdSocketsVariable, names.c_str(), 1);
  }
  if (successor.value()) {
    spdlog::info("hand-off: taking over as generation {}", context_.generation);
    auto got = successor.value()->take_listeners(options_.upgrade_timeout);
    if (!got) return handoff::with_context("hand-off", got.error());
    inherited = std::move(got).value();
    spdlog::info("hand-off: received {} listener(s), all valid, after {:.1f} ms", inherited.size(),
                 ms_since(context_.started));
  }

  auto opened = handoff::open_listeners(requests, std::move(inherited), options_.backlog);
  if (!opened) return opened.error();
  for (const auto& d : opened->dropped) spdlog::info("listener {} is no longer configured; closed it", d);

  for (auto& l : opened->listeners) {
    const bool control = l.name == kControlListenerName;
    listeners_.push_back(std::make_unique<Listener>(
        &loop_, std::move(l),
        [this, control](handoff::UniqueFd fd, Listener& from) {
          if (control) accept_control(std::move(fd));
          else accept_echo(std::move(fd), from);
        },
        [this](const std::string& reason) { fatal(reason); }));
  }

  if (successor.value()) {
    // READY, then COMMIT: only once the old generation has committed to the
    // hand-over may this one accept, so a rollback never kills a process that
    // holds client connections.
    if (auto st = successor.value()->confirm_ready(options_.upgrade_timeout); !st)
      return handoff::with_context("hand-off", st.error());
    predecessor_link_ = std::make_unique<handoff::PredecessorLink>(
        &loop_, successor.value()->take_channel(),
        [this](const std::vector<handoff::GenerationReport>& reports) { older_generations_ = reports; },
        [this](const handoff::ConnectionEntry& e, handoff::UniqueFd fd) { return adopt_connection(e, std::move(fd)); },
        [this](const std::string& why) {
          if (why == "closed") spdlog::info("previous generations: all have exited");
          else spdlog::warn("previous generations: lost track of them: {}", why);
          older_generations_.clear();
        });
  }
  return {};
}

handoff::Status Daemon::start_accepting() {
  for (auto& l : listeners_) {
    if (auto st = l->start(); !st) return st;
    spdlog::info("listening name={} addr={} inherited={}", l->name(), l->bound().endpoint(),
                 l->inherited() ? "yes" : "no");
  }
  committed_ = true;
  if (context_.generation == 1) {
    // A successor's pid file is written by its predecessor, once the hand-over stands.
    if (auto st = pid_file_.write(::getpid()); !st) return st;
  }
  spdlog::info("serving: generation {} ready {:.1f} ms after start; {} listener(s), max {} connections",
               context_.generation, ms_since(context_.started), listeners_.size(), options_.max_connections);
  notifier_.ready("serving: generation " + std::to_string(context_.generation) + ", pid " + std::to_string(::getpid()));
  return {};
}

void Daemon::on_signal(uv_signal_t* handle, int signo) { static_cast<Daemon*>(handle->data)->handle_signal(signo); }

void Daemon::handle_signal(int signo) {
  switch (signo) {
    case SIGTERM:
    case SIGINT:
      if (++stop_signals_ == 1 && !drain_->active()) {
        stop_accepting_and_drain(std::string(signal_name(signo)) + ": graceful stop", false);
      } else if (stop_signals_ == 1) {
        spdlog::info("{}: already draining ({}); send it again to close every connection now", signal_name(signo),
                     drain_->cause());
      } else {
        drain_->force(std::string("second stop signal (") + signal_name(signo) + ")");
      }
      break;
    case SIGUSR2:
      (void)request_upgrade("SIGUSR2");  // the outcome is logged either way
      break;
    case SIGHUP:
      (void)reload("SIGHUP");  // logged either way
      break;
  }
}

void Daemon::accept_echo(handoff::UniqueFd fd, Listener& from) {
  if (registry_.size() >= options_.max_connections) {
    if (auto n = max_connections_log_.allow())
      spdlog::warn("max-connections {} reached: closed {} new connection(s) at accept (listener {})",
                   options_.max_connections, *n, from.name());
    return;  // `fd` closes here
  }
  registry_.count_accept();
  EchoConnection::start(&loop_, std::move(fd), from.is_unix() ? EchoConnection::Kind::Unix : EchoConnection::Kind::Tcp,
                        registry_, *read_buffer_, drain_counts_, WaterMarks{});
}

bool Daemon::adopt_connection(const handoff::ConnectionEntry& entry, handoff::UniqueFd fd) {
  // Not counted against --max-connections: these clients are already served,
  // refusing one would only leave it with the old generation.
  const auto kind = entry.kind == handoff::ConnectionKind::Unix ? EchoConnection::Kind::Unix : EchoConnection::Kind::Tcp;
  if (!EchoConnection::start(&loop_, std::move(fd), kind, registry_, *read_buffer_, drain_counts_, WaterMarks{}))
    return false;
  registry_.count_accept();
  ++adopted_connections_;
  return true;
}

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
  if (drain_->active() && !handed_over_) {
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
  stop_accepting_and_drain("handed over to pid " + std::to_string(outcome.pid), true);
}

void Daemon::on_successor_exit(pid_t pid, bool clean, bool superseded, const std::string& how) {
  if (finished_) return;
  if (clean || superseded) {
    spdlog::info("successor pid {} exited with {}{}", pid, how, superseded ? " after handing over in turn" : "");
    for (auto& l : listeners_) l->close(/*unlink_path=*/false);
    return;
  }
  spdlog::critical("successor pid {} died with {} after taking over; resuming", pid, how);
  if (auto st = predecessor_->resume(); !st) spdlog::error("resume: {}", st.error().message);
  handover_.reset();  // connections still here stay here
  report_timer_.close();
  last_report_sent_.clear();
  drain_->cancel();
  handed_over_ = false;
  stop_signals_ = 0;
  for (auto& l : listeners_) {
    if (auto st = l->start(); !st) return fatal("resuming: " + st.error().message);
    spdlog::info("listening name={} addr={} resumed=yes", l->name(), l->bound().endpoint());
  }
  if (auto st = pid_file_.write(::getpid()); !st) spdlog::error("pid file: {}", st.error().message);
  notifier_.main_pid(::getpid(), "successor pid " + std::to_string(pid) + " died; serving again");
  spdlog::critical("generation {} (pid {}) resumes serving: its successor died", context_.generation, ::getpid());
}

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
  if (next.drain_mode != options_.drain_mode)
    applied.push_back(std::string("drain.mode=") + (next.drain_mode == DaemonOptions::DrainMode::Handoff ? "handoff" : "wait"));
  auto names = [](const DaemonOptions& o) {
    std::string s;
    for (const auto& l : o.listeners) s += l.name + "=" + l.address.to_string() + " ";
    return s;
  };
  if (names(next) != names(options_)) at_next_upgrade.push_back("listeners");
  if (next.pid_file != options_.pid_file) at_next_upgrade.push_back("pid_file");
  if (next.control_path != options_.control_path) at_next_upgrade.push_back("control");
  if (next.backlog != options_.backlog) at_next_upgrade.push_back("backlog");
  if (next.binary != options_.binary) {
    // What the next upgrade starts: takes effect for that very upgrade.
    auto resolved = next.binary.empty() ? handoff::Result<std::string>(context_.binary) : resolve_executable(next.binary);
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
  next.control_path = options_.control_path;
  next.backlog = options_.backlog;
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
      auto spawned = control::event("spawned");
      spawned["pid"] = predecessor_->successor_pid();
      spawned["timeout_ms"] = timeout().value_or(options_.upgrade_timeout).count();
      session.send(spawned);
      upgrade_waiters_.push_back(session.id());
      return;
    }
    case Command::Stop: {
      auto reply = control::ok_reply();
      reply["pid"] = ::getpid();
      reply["connections"] = registry_.size();
      reply["already_draining"] = drain_->active();
      session.send(reply);
      // The session stays open: batonctl learns the exit from its EOF.
      stop_accepting_and_drain("batonctl stop", false, timeout());
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
                  {"last", last_upgrade_.is_null() ? nlohmann::json(nullptr) : last_upgrade_}};
  if (drain_->active()) j["drain"] = {{"cause", drain_->cause()}, {"connections_at_start", drain_->started_with()}};
  nlohmann::json older = nlohmann::json::array();
  for (const auto& g : older_generations_)
    older.push_back({{"pid", g.pid}, {"generation", g.generation}, {"connections", g.connections}});
  j["draining_generations"] = older;
  return j;
}

void Daemon::stop_accepting_and_drain(const std::string& cause, bool handed_over,
                                      std::optional<std::chrono::milliseconds> deadline) {
  if (drain_->active()) return;
  handed_over_ = handed_over;
  predecessor_->cancel("stopping: " + cause);
  if (!handed_over_) notifier_.stopping("stopping: " + cause);
  if (handed_over_) {
    // The successor holds the same sockets. Ours stay open but idle until we
    // exit: should it die, we resume on them and nothing queued is lost.
    for (auto& l : listeners_) l->stop();
  } else {
    close_listeners();
  }
  spdlog::info("stopped accepting on {} listener(s) ({})", listeners_.size(), cause);
  drain_->start(cause, deadline.value_or(options_.drain_timeout));
  if (handed_over_ && options_.drain_mode == DaemonOptions::DrainMode::Handoff && !registry_.empty()) {
    handover_ = std::make_unique<ConnectionHandover>(&loop_, registry_, *predecessor_, kHandoverFlushBound);
    handover_->start();
  }
}

bool Daemon::owned_by_systemd(const std::string& listener) {
  const char* names = std::getenv(kSystemdSocketsVariable);
  if (!names) return false;
  std::string list = std::string(",") + names + ",";
  return list.find("," + listener + ",") != std::string::npos;
}

void Daemon::close_listeners() {
  for (auto& l : listeners_) {
    // A Unix socket's file belongs to whoever serves it: not to a generation
    // that handed over, nor to a new one that never got COMMIT (the old one
    // still serves on those paths).
    const bool ours = !handed_over_ && (committed_ || !l->inherited()) && !owned_by_systemd(l->name());
    l->close(/*unlink_path=*/ours);
  }
}

void Daemon::on_drained() {
  // An upgrade still in flight (a stop came during it) is seen out first, so
  // the new process is reaped and its outcome logged before we exit.
  const auto state = predecessor_->state();
  if (state == handoff::UpgradeState::Spawning || state == handoff::UpgradeState::AwaitingReady ||
      state == handoff::UpgradeState::RollingBack) {
    exit_after_upgrade_ = true;
    return;
  }
  spdlog::info("exiting with status {}", exit_code_);
  close_everything();
}

void Daemon::fatal(const std::string& reason) {
  spdlog::critical("fatal: {}; stopping every service", reason);
  exit_code_ = 1;
  predecessor_->cancel("fatal error");
  close_listeners();
  registry_.for_each([](EchoConnection& c) { c.close_now(EchoConnection::EndReason::Forced); });
  close_everything();
}

void Daemon::close_everything() {
  if (finished_) return;
  finished_ = true;
  if (!handed_over_) pid_file_.remove_if_names(::getpid());
  close_listeners();
  signals_.clear();
  exit_timer_.close();
  handover_.reset();  // before the connections close: it settles their state
  report_timer_.close();
  predecessor_link_.reset();
  if (drain_) drain_->stop_timers();
  control_sessions_.finish_all();
  // A successor that took over lives on; one still starting is killed. The
  // object itself lives until the destructor: we may be inside its callback.
  predecessor_->close();
  registry_.for_each([](EchoConnection& c) { c.close_now(EchoConnection::EndReason::Forced); });
}

}  // namespace baton::daemon
