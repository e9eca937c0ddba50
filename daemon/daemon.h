#pragma once
// batond: the echo service, its listeners and the upgrade, in one libuv loop.
//
// Start-up: signals first, then listeners (taken over from the previous
// generation when BATON_HANDOFF_FD is set, else bound), then accept.
// Stop (SIGTERM/SIGINT) and a successful upgrade end the same way: stop
// accepting, then Drain. A fatal error in any service stops them all.

#include <uv.h>

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "baton/handoff/connection_handoff.h"
#include "baton/handoff/predecessor_link.h"
#include "baton/handoff/predecessor.h"
#include "baton/handoff/process_handle.h"
#include "baton/handoff/uv_handle.h"
#include "app_supervisor.h"
#include "connection_registry.h"
#include "control_session.h"
#include "counters.h"
#include "drain.h"
#include "echo_connection.h"
#include "flight_recorder.h"
#include "listener.h"
#include "loop_lag.h"
#include "metrics_exposition.h"
#include "metrics_http.h"
#include "options.h"
#include "outgoing_handoff.h"
#include "pid_file.h"
#include "rate_limited_log.h"
#include "settings.h"
#include "upgrade_attempt.h"
#include "socket_activation.h"
#include "systemd_notify.h"

namespace baton::daemon {

// What a generation knows about how it was started.
struct StartupContext {
  std::vector<std::string> args;  // argv[1..], handed unchanged to the next generation
  std::string binary;             // what an upgrade starts, resolved at start-up
  std::string binary_error;       // why `binary` could not be resolved
  unsigned generation = 1;
  std::string config_path;                            // --config, re-read on reload
  std::shared_ptr<const SettingsLayer> command_line;  // flags, which override the file again on reload
  std::vector<ActivatedFd> activated;                 // from systemd (socket activation), fresh start only
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

inline constexpr const char* kHandoffFdVariable = "BATON_HANDOFF_FD";
inline constexpr const char* kGenerationVariable = "BATON_GENERATION";
// Names of the listeners systemd passed by socket activation: their socket
// files are never unlinked by any generation.
inline constexpr const char* kSystemdSocketsVariable = "BATON_SYSTEMD_SOCKETS";

class Daemon {
 public:
  Daemon(DaemonOptions options, StartupContext context);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Runs until stopped; returns the process exit status.
  int run();

 private:
  handoff::Status install_signals();
  handoff::Status open_listeners();
  handoff::Status start_accepting();

  static void on_signal(uv_signal_t* handle, int signo);
  void handle_signal(int signo);
  void accept_echo(handoff::UniqueFd fd, Listener& from);
  bool adopt_connection(const handoff::ConnectionEntry& entry, handoff::UniqueFd fd);
  bool may_adopt() const;
  // The drain deadline after COMMIT with drain = handoff: connections stay
  // ours through the probation, so it counts from its end.
  std::chrono::milliseconds handoff_drain_deadline() const;
  void accept_control(handoff::UniqueFd fd);
  void handle_control(ControlSession& session, const control::Request& request);
  nlohmann::json status() const;

  // The one way an upgrade starts, whether from SIGUSR2 or batonctl.
  // `binary` and `timeout` override the start-up defaults when given.
  handoff::Status request_upgrade(const std::string& trigger, const std::string& binary = {},
                                  std::optional<std::chrono::milliseconds> timeout = {});
  // COMMIT is sent: the successor accepts now, this generation stops and
  // keeps its listeners idle through the probation.
  void on_committed(pid_t pid);
  void on_upgrade_outcome(const handoff::UpgradeOutcome& outcome);
  // Before COMMIT to our own successor: our predecessor must learn first
  // that it may no longer resume (SUCCEEDED), or not at all.
  handoff::Status before_commit(pid_t pid);
  // Re-reads --config: what can change live changes now, listener changes
  // wait for the next upgrade (whose new generation reads the same file).
  handoff::Result<nlohmann::json> reload(const std::string& trigger);
  // The successor exited. If it died abnormally before handing over in turn,
  // this generation serves again: its listeners never closed, and whatever
  // connected meanwhile waits in their backlog.
  void on_successor_exit(pid_t pid, bool clean, bool superseded, const std::string& how);
  // Back to serving after a successor failed (in probation or later): the
  // listeners never closed, whatever connected meanwhile waits in their
  // backlog. Unless a stop was asked of this generation meanwhile: then it
  // stops instead, as asked (and as `systemctl stop`, which signals every
  // process of the unit, means).
  void resume_serving(const std::string& why);
  // SIGTERM, SIGINT or batonctl stop: never resume after it, and tell the
  // previous generation, if it lives, to stop as well.
  void note_stop_requested(const std::string& by);
  // Our successor told us of a newer generation: our predecessor must know it too.
  void relay_succeeded(pid_t pid);
  // on_drained came while the upgrade was in flight: exit now it is over.
  void exit_after_drained_upgrade();
  // on_drained again, on the next loop turn (not from inside a callback of
  // what it may destroy).
  void drained_next_turn();
  // The upgrade's loop-lag window ends (if open): logged, and kept for status.
  // The upgrade's loop-lag window ends after this turn (`now`: at once, we exit).
  void end_loop_window(bool now = false);
  void on_loop_window_ended();  // logs it
  void warm_history();          // serialises the history ahead, on idle turns
  // The hand-off is over (settled, or dropped): what it cost each connection.
  void note_handoff_stops();
  // The connection hand-off is over, settled or not (its window with it).
  void drop_connection_handoff();
  // It settled: its window ends, its stops are noted, the successor hears "done".
  void on_outgoing_settled();
  // Our predecessor can send nothing more (its link closed, or it said so),
  // or we take nothing more (a stop, our drain deadline): our hand-off may
  // settle, and we may exit.
  void end_handoff_source();
  // Our hand-off waits for what our predecessor may still send: we do not exit.
  bool holding_for_predecessor() const { return outgoing_.holding(); }
  // A drain that was done waited for the hold (on_drained): it is over, so
  // on_drained runs again, on the next turn.
  void after_hold();
  // What we tell our successor (STATE_UPDATE connection_offers): from COMMIT
  // with drain = handoff until our own hand-off has settled.
  bool will_offer_connections() const;
  handoff::SpawnSpec spawn_spec(const std::string& binary) const;

  // Stop accepting, then drain: for a stop and after a hand-off alike.
  // After a successful upgrade (handed_over()) the listeners stay open, idle.
  void stop_accepting_and_drain(const std::string& cause,
                                std::optional<std::chrono::milliseconds> deadline = {});
  void on_drained();
  // Who may remove the Unix socket files when the listeners close: only the
  // last generation standing, on its way out (see may_remove_socket_files).
  enum class SocketFiles { Keep, RemoveIfLast };
  void close_listeners(SocketFiles files);
  bool may_remove_socket_files(const Listener& l) const;
  // A successor took over (in probation or past it); this one only drains.
  bool handed_over() const {
    return predecessor_ && (predecessor_->state() == handoff::UpgradeState::HandedOver ||
                            predecessor_->state() == handoff::UpgradeState::Probation);
  }
  // An older generation lives and could resume should we die. The process,
  // not the link: a link closed on a bad message leaves it alive.
  bool predecessor_alive() const { return predecessor_process_.alive(); }
  static bool owned_by_systemd(const std::string& listener);
  // After a hand-off: tell the successor what still drains here and before.
  static void on_report_timer(uv_timer_t* timer);
  void report_draining();
  void fatal(const std::string& reason);
  void close_everything();

  // Supervisor mode (daemon_app.cpp). The app gets every listener but the
  // control socket; batond accepts on none of them itself.
  bool serves_itself(const Listener& l) const { return !options_.exec_mode() || is_batond_listener(l.name()); }
  // Before READY: the app an older generation ran, adopted (and paused until COMMIT).
  handoff::Status adopt_app(std::vector<handoff::InheritedState> state);
  // At start: a fresh app, or the adopted one supervised from now on.
  handoff::Status start_app();
  void make_app_supervisor();
  void on_app_progress(const nlohmann::json& event);
  void on_app_restart_outcome(const RestartOutcome& outcome);
  void on_app_stopped();
  void on_app_serving(pid_t pid);
  void restart_app(const std::string& trigger, ControlSession* session);
  // Watches the predecessor's pidfd (its exit ends the hold on an adopted
  // app, and goes into the flight recorder); false if it is gone or cannot
  // be watched. Once is enough: a second call says whether it watches.
  bool watch_predecessor_exit();

  // Metrics and the flight recorder (daemon_metrics.cpp).
  Counters own_counters() const;     // what this generation counted itself
  Counters counter_totals() const;   // the service's: what older generations reported, plus ours
  std::string metrics_text() const;  // the Prometheus exposition
  // The exposition for a scraper: first told to our predecessor, which
  // could serve again should we die, so that its totals never fall below
  // what anyone saw from us.
  std::string serve_metrics();
  // Our successor's totals, as it last showed them.
  void take_successor_state(const handoff::StateUpdate& update);
  // Resuming after our successor died: what it counted is lost with it, but
  // the totals it showed are a floor for ours.
  void keep_successor_totals();
  // Totals (ours, or our successor's) to our predecessor, unless it has them.
  void tell_predecessor_totals(const std::string& data);
  nlohmann::json observability_status() const;
  // The loop's cost of the last upgrade this generation ran, with its pid
  // and generation; null before one ended.
  nlohmann::json upgrade_loop_window() const;
  nlohmann::json metrics_reply();
  nlohmann::json history_reply() const;
  // The predecessor's STATE_UPDATE: its counters, its timelines.
  void apply_state_update(const handoff::StateUpdate& update);
  // A step of our own take-over (exec, listeners, READY, COMMIT, first
  // accept, the predecessor's exit), for the record our predecessor began.
  void note_takeover_step(const std::string& step,
                          std::chrono::steady_clock::time_point at = std::chrono::steady_clock::now());
  void attach_takeover_steps();
  // A step of the upgrade this generation started.
  void record_upgrade_step(const std::string& step, const std::string& detail = {});
  // A step of the upgrade (PredecessorEvents::progress): history, and
  // "spawned" for batonctl.
  void on_upgrade_progress(const char* step);
  void count_upgrade_outcome(bool ok, const std::string& error = {});
  // To our successor: our totals and timelines, if they changed since last
  // sent (always, with `force`: at READY, and on the way out).
  // Returns whether the totals went (or had gone, unchanged).
  bool send_state_updates(bool force);

  DaemonOptions options_;
  StartupContext context_;
  PidFile pid_file_;
  SystemdNotifier notifier_;
  uv_loop_t loop_{};
  bool loop_ready_ = false;

  std::vector<handoff::UvHandle<uv_signal_t>> signals_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::unique_ptr<SharedReadBuffer> read_buffer_ = std::make_unique<SharedReadBuffer>();
  ConnectionRegistry registry_;
  DrainCounts drain_counts_;
  std::unique_ptr<Drain> drain_;
  std::unique_ptr<handoff::Predecessor> predecessor_;
  std::unique_ptr<handoff::PredecessorLink> predecessor_link_;  // reports and connections from the old generation
  handoff::ProcessHandle predecessor_process_;                  // that generation's process
  bool predecessor_offers_ = false;            // it said "pending", not yet "done"
  std::optional<bool> offers_told_;            // what we last told our successor (will_offer_connections)
  handoff::UvHandle<uv_idle_t> history_warmer_;  // while warm_history has records to serialise
  std::unique_ptr<AppSupervisor> app_;                          // supervisor mode only
  bool app_adopted_ = false;                                    // app_ came from the previous generation
  std::vector<uint64_t> restart_waiters_;                       // control sessions waiting for a restart's outcome
  handoff::UvHandle<uv_poll_t> predecessor_exit_;               // its pidfd, while an adopted app is held for it
  std::vector<handoff::GenerationReport> older_generations_;  // as last reported
  std::vector<handoff::GenerationReport> last_report_sent_;
  handoff::UvHandle<uv_timer_t> report_timer_;
  handoff::UvHandle<uv_timer_t> exit_timer_;
  RateLimiter max_connections_log_;
  ControlSessions control_sessions_;
  UpgradeAttempt attempt_{control_sessions_};  // the latest upgrade we started, for batonctl and status

  // Metrics and the flight recorder.
  Counters inherited_counters_;  // the totals older generations reported, each series at its highest
  Counters own_events_;          // our upgrades' outcomes and durations
  Counters counters_sent_;       // what our successor last got
  Counters successor_totals_;    // what our successor last showed (it tells us before each scrape)
  Counters resumed_offset_;      // what successors that died had counted themselves, as they showed it
  // From COMMIT until we serve again: what a scrape still answered here (its
  // connection accepted before COMMIT) shows, the totals the successor had
  // before COMMIT. Ours keep growing while we drain, and the successor hears
  // of that only every 200 ms: showing them could put a total above what the
  // successor shows next, and Prometheus would read the drop as a reset.
  std::optional<Counters> shown_after_commit_;
  std::optional<Counters> commit_totals_;  // sent in before_commit, for shown_after_commit_ at COMMIT
  std::string totals_told_up_;   // the totals our predecessor last got from us
  FlightRecorder history_;
  uint64_t history_sent_ = 0;    // history_.version() our successor last got
  std::string upgrade_record_;   // the record of the upgrade this generation started last
  std::string takeover_record_;  // the record of the upgrade that started this generation
  std::string restart_record_;   // the record of the app restart in flight ("" when none)
  std::vector<TimelineEvent> takeover_steps_;  // ours, until that record arrives
  bool first_accept_noted_ = false;
  LoopLag loop_lag_;
  // Ours, to the generation we committed to (drain = handoff), with what
  // our predecessor still hands us (outgoing_handoff.h). After predecessor_
  // (its link must outlive it) and loop_lag_.
  OutgoingHandoff outgoing_{&loop_, registry_, loop_lag_,
                            {.settled = [this] { on_outgoing_settled(); }, .hold_ended = [this] { after_hold(); }}};
  nlohmann::json inherited_loop_window_;  // the upgrade that started us, as its old generation measured it
  // The last connection hand-off, each connection's stop (handoff_stops.h):
  // ours once we handed off, else the one that started us.
  nlohmann::json handoff_stops_, inherited_handoff_stops_;
  bool handoff_stops_sent_ = true;
  const void* handoff_stops_noted_for_ = nullptr;  // the ConnectionHandoff they were taken from
  uint64_t loop_windows_sent_ = 0;        // loop_lag_.windows_ended() our successor last got
  MetricsHttpConnections metrics_http_{[this] { return serve_metrics(); }};

  uint64_t adopted_connections_ = 0;  // handed to us by the previous generation
  int stop_signals_ = 0;
  std::chrono::steady_clock::time_point first_stop_{};
  static constexpr std::chrono::milliseconds kForceAfter{1000};
  // This generation's life. A generation that handed over is still Serving
  // (it drains, and resumes should its successor die) until a stop.
  enum class Life {
    Starting,  // taking its listeners (a new generation: until COMMIT); accepts nothing yet
    Serving,   // accepting since a fresh start or COMMIT, or drained of it by a successor
    Stopping,  // SIGTERM, SIGINT, batonctl stop, or our successor's clean stop: never resume after it
    Finished,  // close_everything ran; the loop winds down
  };
  Life life_ = Life::Starting;
  bool stop_requested() const { return life_ == Life::Stopping || life_ == Life::Finished; }
  bool finished() const { return life_ == Life::Finished; }
  // Drained, and what this generation still waits for before it exits.
  enum class DrainedWait {
    Nothing,
    Upgrade,  // the upgrade in flight to end (a stop came during it)
    App,      // the app's instances to exit (supervisor mode)
  };
  DrainedWait drained_wait_ = DrainedWait::Nothing;
  int exit_code_ = 0;
  int startup_exit_code_ = 1;  // 2 when the listeners given contradict the sockets systemd passed
};

}  // namespace baton::daemon
