#pragma once
// Supervisor mode: one app, run on batond's listeners, replaced without a
// refused connection. The listeners never close while batond runs, so while
// no instance accepts, clients wait in the kernel's backlog.
//
// A restart:  launch the new instance -> ready (READY=1, or a delay)
//             -> probation (it must live) -> the old one gets its stop
//             signal, and SIGKILL with its group at the drain timeout.
// A new instance that exits, or is not ready in time, is killed with its
// group and the old one serves on; the restart is reported failed with the
// cause and the new one's last stderr lines. An instance that dies on its own
// is replaced with backoff.
//
// Across a batond upgrade the instances stay: the old batond hands the notify
// socket and a pidfd plus the output pipes of each instance over (state()),
// pauses, and resumes only if the new batond fails.

#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "app_instance.h"
#include "baton/handoff/protocol.h"
#include "baton/handoff/result.h"
#include "baton/handoff/uv_handle.h"
#include "notify_socket.h"
#include "options.h"

namespace baton::daemon {

struct RestartOutcome {
  bool ok = false;
  pid_t pid = 0;      // the new instance
  pid_t old_pid = 0;  // the one it replaced (0: none was serving)
  std::string reason;  // why it failed
  double ms = 0;       // since the request
};

struct AppEvents {
  // A restart's progress, for whoever asked: "spawned" {pid}, "ready" {pid, ms}.
  std::function<void(const nlohmann::json& event)> progress;
  // Once per restart() that returned ok.
  std::function<void(const RestartOutcome&)> outcome;
  // After stop(): every instance has exited.
  std::function<void()> stopped;
  // An instance became the one that serves (ready, or past its probation).
  std::function<void(pid_t pid)> serving;
};

inline constexpr const char* kAppStateKey = "app";

class AppSupervisor {
 public:
  // `listeners`: name and fd, in the order the app gets them (fd 3..); the
  // fds stay the caller's and must stay open while this lives.
  AppSupervisor(uv_loop_t* loop, AppOptions options, std::vector<std::pair<std::string, int>> listeners,
                AppEvents events);
  ~AppSupervisor();
  AppSupervisor(const AppSupervisor&) = delete;
  AppSupervisor& operator=(const AppSupervisor&) = delete;

  // A fresh start: a new notify socket and the first instance.
  handoff::Status start();
  // After a batond hand-off: what the older generation ran (its state()).
  // Paused: supervised from resume() on, once this generation has COMMIT.
  handoff::Status adopt(const std::string& data, std::vector<handoff::UniqueFd> fds);

  // Replaces the serving instance; the outcome comes later through the events.
  handoff::Status restart(const std::string& trigger);
  bool restart_in_progress() const { return candidate_ != nullptr; }
  // Stops every instance (stop signal, then SIGKILL at the drain timeout);
  // `stopped` follows once all are gone. force(): SIGKILL now.
  void stop();
  void force();
  bool stopped() const { return mode_ == Mode::Stopping && !any_alive(); }

  // batond's own upgrade: what the next generation needs, then pause (it
  // supervises from its COMMIT on), and resume should it fail.
  handoff::Result<handoff::StateOffer> state() const;
  void pause();
  void resume();

  // batond exits: lets go of every handle (the loop can end), kills nothing.
  void close();

  // While the previous batond generation lives (on probation, it could
  // resume with the app as it handed it over), nothing here changes the app:
  // restarts are refused and a crashed instance is replaced only on release.
  void set_held(bool held);
  bool held() const { return held_; }

  void set_options(AppOptions options) { options_ = std::move(options); }
  nlohmann::json status() const;
  pid_t serving_pid() const { return current_ ? current_->pid() : 0; }

 private:
  enum class Mode { Running, Paused, Stopping };

  handoff::Result<std::unique_ptr<AppInstance>> launch(const std::vector<std::string>& command);
  void watch_readiness(AppInstance& instance);
  void on_notify(pid_t sender, const NotifyFields& fields);
  AppInstance* instance_of(pid_t sender);
  void on_ready(AppInstance& instance);
  void on_probation_passed();
  void on_exit(AppInstance& instance, const std::string& how);
  void fail_restart(const std::string& reason);
  void retire(std::unique_ptr<AppInstance> instance, const std::string& why);
  void bury(std::unique_ptr<AppInstance> instance);
  void start_replacement(std::chrono::milliseconds after, const std::string& why);
  void on_replacement_due();
  bool any_alive() const;
  void check_stopped();
  std::vector<AppInstance*> instances() const;

  uv_loop_t* loop_;
  AppOptions options_;
  std::vector<std::pair<std::string, int>> listeners_;
  AppEvents events_;
  Mode mode_ = Mode::Running;
  bool held_ = false;
  bool stopped_reported_ = false;
  NotifySocket notify_;
  std::unique_ptr<AppInstance> current_;    // serves (null while none does)
  std::unique_ptr<AppInstance> candidate_;  // a restart's new instance, until it passes or fails
  std::vector<std::unique_ptr<AppInstance>> retiring_;  // told to stop
  std::vector<std::unique_ptr<AppInstance>> dead_;      // exited; freed on the next loop turn
  handoff::UvHandle<uv_timer_t> reaper_;
  handoff::UvHandle<uv_timer_t> replacement_;  // backoff before replacing an instance that died
  std::vector<std::string> last_good_;         // the command of the last instance that became ready
  std::chrono::milliseconds backoff_{0};
  std::string candidate_failure_;  // set when we kill the candidate: the reason to report
  std::string restart_trigger_;
  std::chrono::steady_clock::time_point restart_started_{};
  uint64_t next_number_ = 1;
  uint64_t restarts_ = 0;   // replacements that passed
  uint64_t failures_ = 0;   // replacements that failed
  uint64_t crashes_ = 0;    // instances that died on their own
  nlohmann::json last_restart_;
};

}  // namespace baton::daemon
