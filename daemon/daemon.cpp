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
#include "elapsed.h"

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
  // Someone else may have created it first (/tmp/baton-UID): a directory another
  // user owns or may write to would let them replace our socket.
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) return handoff::errno_error("stat " + dir);
  if (!S_ISDIR(st.st_mode)) return handoff::Error{dir + " is not a directory"};
  if ((st.st_uid != ::geteuid() && st.st_uid != 0) || (st.st_mode & 022))
    return handoff::Error{dir + " is not private: owner uid " + std::to_string(st.st_uid) + ", mode " +
                          std::to_string((st.st_mode >> 6) & 7) + std::to_string((st.st_mode >> 3) & 7) +
                          std::to_string(st.st_mode & 7) + "; the control socket needs a directory only its user can write"};
  return {};
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
  app_.reset();  // its handles close with it; nothing runs its callbacks any more
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
  // Each of the upgrade's events is upgrade work on the loop (LoopLag).
  auto upgrade = [this](const char* what, auto fn) {
    return [this, what, fn](auto&&... args) {
      const LoopLag::Work work(loop_lag_, what);
      return fn(std::forward<decltype(args)>(args)...);
    };
  };
  predecessor_ = std::make_unique<handoff::Predecessor>(
      &loop_, handoff::PredecessorEvents{
                  .before_commit = upgrade("before_commit", [this](pid_t pid) { return before_commit(pid); }),
                  .committed = upgrade("committed", [this](pid_t pid) { on_committed(pid); }),
                  .outcome = upgrade("outcome", [this](const handoff::UpgradeOutcome& o) { on_upgrade_outcome(o); }),
                  .successor_exit = upgrade("successor_exit", [this](pid_t pid, bool clean, bool superseded, const std::string& how) {
                    on_successor_exit(pid, clean, superseded, how);
                  }),
                  .succeeded = upgrade("succeeded", [this](pid_t pid) { relay_succeeded(pid); }),
                  .progress = upgrade("progress", [this](const char* step) { on_upgrade_progress(step); }),
                  .successor_state = upgrade("successor_state", [this](const handoff::StateUpdate& u) { take_successor_state(u); }),
              });
  if (int rc = loop_lag_.start(&loop_, [this] { on_loop_window_ended(); }); rc != 0) spdlog::warn("loop lag probes: {}", uv_strerror(rc));

  // Signals first: a new generation must not die of a SIGTERM or SIGUSR2
  // that arrives while it is still taking over.
  if (auto st = install_signals(); !st) {
    spdlog::critical("{}", st.error().message);
    return 1;
  }
  if (auto st = open_listeners(); !st) {
    spdlog::critical("start-up failed: {}", st.error().message);
    return startup_exit_code_;
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
  if (requests.empty() && !successor.value()) {
    // Nothing configured: what systemd passed, or the default.
    if (!context_.activated.empty()) {
      auto activated = requests_for_activated(context_.activated);
      if (!activated) {
        startup_exit_code_ = 2;
        return activated.error();
      }
      requests = std::move(activated).value();
    }
    // Nothing but (maybe) the control socket from systemd: the echo default.
    if (requests.empty()) requests.push_back({kDefaultListen, *handoff::ListenAddress::parse(kDefaultListen)});
  }
  // The control socket is a listener like the others: handed over, so its
  // path never disappears. Owner-only; peers are checked again at accept.
  if (auto st = ensure_private_dir(options_.control_path); !st) return handoff::with_context("control socket", st.error());
  requests.push_back({kControlListenerName, *handoff::ListenAddress::parse("unix:" + options_.control_path), 0600});
  if (options_.metrics) requests.push_back({kMetricsListenerName, *options_.metrics});

  std::vector<handoff::InheritedListener> inherited;
  std::vector<handoff::InheritedState> handed_state;
  if (!successor.value()) {
    auto matched = match_activated(std::move(context_.activated), requests);
    if (!matched) {
      startup_exit_code_ = 2;  // a configuration error, like a bad --listen
      return matched.error();
    }
    inherited = std::move(matched).value();
    // systemd owns these sockets (and their files) across restarts of the
    // service; every later generation learns their names from the environment.
    std::string names;
    for (const auto& l : inherited) names += (names.empty() ? "" : ",") + l.name;
    if (!names.empty()) ::setenv(kSystemdSocketsVariable, names.c_str(), 1);
  }
  if (successor.value()) {
    // Our parent is the predecessor, alive (it is about to answer our HELLO).
    predecessor_process_ = handoff::ProcessHandle::open(::getppid());
    spdlog::info("hand-off: taking over as generation {}", context_.generation);
    note_takeover_step("exec", context_.started);
    auto got = successor.value()->take_listeners(options_.upgrade_timeout);
    if (!got) return handoff::with_context("hand-off", got.error());
    note_takeover_step("listeners_received");
    inherited = std::move(got).value();
    handed_state = successor.value()->take_state();
    spdlog::info("hand-off: received {} listener(s), all valid, after {:.1f} ms", inherited.size(),
                 ms_since(context_.started));
    // Nothing configured: serve every listener the predecessor served, as it was configured.
    if (options_.listeners.empty()) {
      std::vector<handoff::ListenerRequest> handed;
      for (const auto& l : inherited)
        if (!is_batond_listener(l.name)) handed.push_back({l.name, l.configured});
      requests.insert(requests.begin(), handed.begin(), handed.end());
    }
  }

  if (options_.exec_mode())
    for (auto& r : requests) r.blocking = !is_batond_listener(r.name);  // the app's, as systemd would pass them
  auto opened = handoff::open_listeners(requests, std::move(inherited), options_.backlog);
  if (!opened) return opened.error();
  for (const auto& d : opened->dropped) spdlog::info("listener {} is no longer configured; closed it", d);

  for (auto& l : opened->listeners) {
    const bool control = l.name == kControlListenerName, metrics = l.name == kMetricsListenerName;
    listeners_.push_back(std::make_unique<Listener>(
        &loop_, std::move(l),
        [this, control, metrics](handoff::UniqueFd fd, Listener& from) {
          if (control) accept_control(std::move(fd));
          else if (metrics) metrics_http_.start(&loop_, std::move(fd));
          else accept_echo(std::move(fd), from);
        },
        [this](const std::string& reason) { fatal(reason); }));
    // Before READY: what can fail must fail while the old generation still serves.
    // Not the app's: registering with the loop would make them non-blocking
    // (uv_poll_init does), under the app's feet.
    if (!serves_itself(*listeners_.back())) continue;
    if (auto st = listeners_.back()->prepare(); !st) return st;
  }

  // The app an older generation supervises: taken over before READY, so
  // that a state this one cannot take rolls the upgrade back.
  if (auto st = adopt_app(std::move(handed_state)); !st) return handoff::with_context("hand-off", st.error());

  if (successor.value()) {
    // READY, then COMMIT: only once the old generation has committed to the
    // hand-off may this one accept, so a rollback never kills a process that
    // holds client connections.
    note_takeover_step("ready_sent");
    if (auto st = successor.value()->confirm_ready(options_.upgrade_timeout); !st)
      return handoff::with_context("hand-off", st.error());
    // Counters and timelines came with COMMIT: ours start from them, so
    // that no scrape of this generation sees a total go back.
    for (const auto& update : successor.value()->take_state_updates()) apply_state_update(update);
    note_takeover_step("commit_received");
    predecessor_link_ = std::make_unique<handoff::PredecessorLink>(
        &loop_, successor.value()->take_channel(), successor.value()->version(),
        [this](const std::vector<handoff::GenerationReport>& reports) { older_generations_ = reports; },
        [this](const handoff::ConnectionEntry& e, handoff::UniqueFd fd) { return adopt_connection(e, std::move(fd)); },
        [this](const std::string& why) {
          if (why == "closed") spdlog::info("previous generations: all have exited");
          else spdlog::warn("previous generations: lost track of them: {}", why);
          older_generations_.clear();
          // Nothing more can come from it for our own hand-off to pass on.
          predecessor_offers_ = false;
          end_handoff_source();
        });
    predecessor_link_->on_state_update([this](const handoff::StateUpdate& u) { apply_state_update(u); });
  }
  return {};
}

handoff::Status Daemon::start_accepting() {
  for (auto& l : listeners_) {
    if (serves_itself(*l)) {
      if (auto st = l->start(); !st) return st;
    }
    spdlog::info("listening name={} addr={} inherited={}{}", l->name(), l->bound().endpoint(),
                 l->inherited() ? "yes" : "no", serves_itself(*l) ? "" : " (for the app)");
  }
  life_ = Life::Serving;
  if (predecessor_link_) watch_predecessor_exit();
  if (auto st = start_app(); !st) return st;
  // Past COMMIT (or on a fresh start) this process is the one serving. Its
  // predecessor writes the same pid to its own path; writing here too covers
  // a pid_file the configuration moved since. Past COMMIT nothing may stop
  // us serving, least of all a full or read-only /run.
  if (auto st = pid_file_.write(::getpid()); !st)
    spdlog::error("pid file NOT written, serving anyway (it may name an older pid or be missing): {}",
                  st.error().message);
  spdlog::info("serving: generation {} ready {:.1f} ms after start; {} listener(s), max {} connections",
               context_.generation, ms_since(context_.started), listeners_.size(), options_.max_connections);
  // Supervisor mode, fresh start: systemd hears READY once the app is
  // ready (on_app_serving), so that `systemctl start` means it serves.
  if (!options_.exec_mode() || app_adopted_)
    notifier_.ready("serving: generation " + std::to_string(context_.generation) + ", pid " + std::to_string(::getpid()));
  // The loop has not run yet, so nothing is accepted before the predecessor
  // hears this: until then it may kill us without losing a client.
  if (predecessor_link_) {
    if (auto st = predecessor_link_->notify_serving(); !st) spdlog::warn("telling the previous generation: {}", st.error().message);
  }
  return {};
}

void Daemon::on_signal(uv_signal_t* handle, int signo) {
  auto* self = static_cast<Daemon*>(handle->data);
  self->loop_lag_.signal_woke();
  self->handle_signal(signo);
}

void Daemon::handle_signal(int signo) {
  switch (signo) {
    case SIGTERM:
    case SIGINT:
      note_stop_requested(signal_name(signo));
      // One stop often comes twice at once (systemd signals every process of
      // the unit, a terminal the whole group, a newer generation passes its
      // own on): only a second one at least kForceAfter later forces.
      if (stop_signals_ > 0 && std::chrono::steady_clock::now() - first_stop_ < kForceAfter) {
        spdlog::info("{}: stopping already; a second stop signal forces only {} ms after the first",
                     signal_name(signo), kForceAfter.count());
        break;
      }
      if (stop_signals_ == 0) first_stop_ = std::chrono::steady_clock::now();
      if (++stop_signals_ == 1 && !drain_->active()) {
        stop_accepting_and_drain(std::string(signal_name(signo)) + ": graceful stop");
      } else if (stop_signals_ == 1) {
        spdlog::info("{}: already draining ({}); send it again to close every connection now", signal_name(signo),
                     drain_->cause());
      } else {
        drain_->force(std::string("second stop signal (") + signal_name(signo) + ")");
        if (app_ && !handed_over()) app_->force();
      }
      break;
    case SIGUSR2:
      (void)request_upgrade("SIGUSR2");  // the outcome is logged either way
      break;
    case SIGHUP:
    {
      const auto reloaded = reload("SIGHUP");  // logged either way
      // Supervisor mode: a restart of the app on the configuration just read
      // (not when the file was rejected: the old command would run again).
      if (app_ && (reloaded || context_.config_path.empty())) restart_app("SIGHUP", nullptr);
      break;
    }
  }
}

void Daemon::note_stop_requested(const std::string& by) {
  if (stop_requested()) return;
  life_ = Life::Stopping;
  end_handoff_source();  // we take nothing more from our predecessor (may_adopt)
  // A stop is for the service, not for one generation: an older one that
  // still lives (on probation, or draining) would otherwise resume once we
  // exit. It gets the stop too, and passes it on in turn.
  if (!predecessor_alive()) return;
  if (predecessor_process_.signal(SIGTERM))
    spdlog::info("{}: stop passed on to the previous generation pid {}", by, predecessor_process_.pid());
  else
    spdlog::warn("{}: could not pass the stop on to the previous generation pid {} ({}); it may resume when this one "
                 "exits", by, predecessor_process_.pid(), std::strerror(errno));
}

void Daemon::accept_echo(handoff::UniqueFd fd, Listener& from) {
  if (!first_accept_noted_ && predecessor_link_) {
    first_accept_noted_ = true;
    note_takeover_step("first_accept");
  }
  if (registry_.size() >= options_.max_connections) {
    own_events_.add(Counters::series("baton_connections_accepted_total"));
    own_events_.add(Counters::series("baton_connections_closed_total", "reason", "max_connections"));
    if (auto n = max_connections_log_.allow())
      spdlog::warn("max-connections {} reached: closed {} new connection(s) at accept (listener {})",
                   options_.max_connections, *n, from.name());
    return;  // `fd` closes here
  }
  registry_.count_accept();
  EchoConnection::start(&loop_, std::move(fd), from.is_unix() ? EchoConnection::Kind::Unix : EchoConnection::Kind::Tcp,
                        registry_, *read_buffer_, drain_counts_, WaterMarks{});
}

bool Daemon::may_adopt() const {
  if (stop_requested()) return false;
  // Serving: yes, unless a drain (a stop) has begun.
  if (!handed_over()) return !drain_->active();
  // Committed to a newer generation: only while ours can still go to it.
  return outgoing_.passing_on();
}

bool Daemon::adopt_connection(const handoff::ConnectionEntry& entry, handoff::UniqueFd fd) {
  // A generation that is stopping, or that will not pass them on, leaves
  // them with the predecessor, which drains them.
  if (!may_adopt()) return false;
  // Not counted against --max-connections: these clients are already served,
  // refusing one would only leave it with the old generation.
  auto* c = EchoConnection::start(&loop_, std::move(fd), entry.kind, registry_, *read_buffer_, drain_counts_, WaterMarks{});
  if (!c) return false;
  registry_.count_accept();
  ++adopted_connections_;
  outgoing_.adopted(c);
  // Our drain may have been done (we held none): it waits for this one too.
  if (handed_over()) drain_->reopen(handoff_drain_deadline());
  return true;
}

void Daemon::stop_accepting_and_drain(const std::string& cause,
                                      std::optional<std::chrono::milliseconds> deadline) {
  if (drain_->active()) return;
  predecessor_->cancel("stopping: " + cause);
  if (handed_over()) {
    // The successor holds the same sockets. Ours stay open but idle until we
    // exit: should it die, we resume on them and nothing queued is lost.
    for (auto& l : listeners_) l->stop();
  } else {
    notifier_.stopping("stopping: " + cause);
    close_listeners(SocketFiles::RemoveIfLast);
    // The app's instances hold their own copies of the listeners: they
    // finish what they serve, then exit; batond exits after them.
    if (app_) app_->stop();
  }
  spdlog::info("stopped accepting on {} listener(s) ({})", listeners_.size(), cause);
  drain_->start(cause, deadline.value_or(options_.drain_timeout));
}

bool Daemon::owned_by_systemd(const std::string& listener) {
  const char* names = std::getenv(kSystemdSocketsVariable);
  if (!names) return false;
  std::string list = std::string(",") + names + ",";
  return list.find("," + listener + ",") != std::string::npos;
}

// A Unix socket's file belongs to the last generation standing: not to one
// that handed over to a living successor (the caller says Keep), not to one
// whose predecessor lives and could resume on the path, not to a new one that
// never got COMMIT (the old one still serves there), and never to a file
// systemd made.
bool Daemon::may_remove_socket_files(const Listener& l) const {
  return (life_ != Life::Starting || !l.inherited()) && !predecessor_alive() && !owned_by_systemd(l.name());
}

void Daemon::close_listeners(SocketFiles files) {
  for (auto& l : listeners_) l->close(files == SocketFiles::RemoveIfLast && may_remove_socket_files(*l));
}

void Daemon::on_drained() {
  // Connections adopted after the drain was done reopened it: it calls again.
  if (!drain_->done()) return;
  // Our hand-off still takes what our predecessor may send us: we exit once
  // that is over (after_hold calls again), never with such a batch unread.
  if (holding_for_predecessor()) return;
  // An upgrade still in flight (a stop came during it) is seen out first, so
  // the new process is reaped and its outcome logged before we exit.
  const auto state = predecessor_->state();
  if (state == handoff::UpgradeState::Spawning || state == handoff::UpgradeState::AwaitingReady ||
      state == handoff::UpgradeState::Probation || state == handoff::UpgradeState::RollingBack) {
    drained_wait_ = DrainedWait::Upgrade;
    return;
  }
  if (app_ && !handed_over() && !app_->stopped()) {
    drained_wait_ = DrainedWait::App;
    return;
  }
  spdlog::info("exiting with status {}", exit_code_);
  // Our successor's record of this upgrade ends with our exit, and its
  // totals with our last counts.
  if (handed_over()) {
    record_upgrade_step("old_drained");
    end_loop_window(/*now=*/true);  // a hand-off some connection of which never got its answer: over now
    if (outgoing_.current() && !outgoing_.current()->settled()) note_handoff_stops();
    send_state_updates(true);
  }
  close_everything();
}

void Daemon::fatal(const std::string& reason) {
  spdlog::critical("fatal: {}; stopping every service", reason);
  exit_code_ = 1;
  predecessor_->cancel("fatal error");
  // Asked to stop (batond exits now: the drain timeout is not enforced).
  // Not an app adopted from an older generation that lives: it resumes with it.
  if (app_ && !handed_over() && !(app_adopted_ && app_->held())) app_->stop();
  close_listeners(handed_over() ? SocketFiles::Keep : SocketFiles::RemoveIfLast);
  registry_.for_each([](EchoConnection& c) { c.close_now(EchoConnection::EndReason::Forced); });
  close_everything();
}

void Daemon::close_everything() {
  if (finished()) return;
  if (!handed_over()) pid_file_.remove_if_names(::getpid());
  // Before Finished: the files are judged on the life we had (a new process
  // that never got COMMIT, still Starting, leaves them alone).
  close_listeners(handed_over() ? SocketFiles::Keep : SocketFiles::RemoveIfLast);
  life_ = Life::Finished;
  signals_.clear();
  exit_timer_.close();
  predecessor_exit_.close();
  drop_connection_handoff();  // before the connections close: it settles their state
  report_timer_.close();
  history_warmer_.close();
  predecessor_link_.reset();
  if (drain_) drain_->stop_timers();
  control_sessions_.finish_all();
  metrics_http_.close_all();
  loop_lag_.stop();
  if (app_) app_->close();
  // A successor that took over lives on; one still starting is killed. The
  // object itself lives until the destructor: we may be inside its callback.
  predecessor_->close();
  registry_.for_each([](EchoConnection& c) { c.close_now(EchoConnection::EndReason::Forced); });
}

}  // namespace baton::daemon
