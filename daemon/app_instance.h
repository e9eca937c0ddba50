#pragma once
// One running instance of the supervised app: its process (a pidfd, so a
// reused pid is never signalled), its process group, its stdout and stderr
// (one log line per line it writes, with its pid), and one deadline at a time
// (ready, probation or drain, as its supervisor decides).
//
// An instance batond launched is its child and is reaped here; one adopted
// from an older batond generation is watched through its pidfd only (its
// exit status stays with its parent).

#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <vector>
#include <string>

#include "app_launch.h"
#include "baton/handoff/process_handle.h"
#include "baton/handoff/result.h"
#include "baton/handoff/uv_handle.h"

namespace baton::daemon {

enum class AppState {
  Starting,   // launched, not ready yet
  Probation,  // ready, replacing an older instance that still serves
  Serving,    // the instance that serves
  Stopping,   // told to stop; killed with its group at the deadline
};
const char* to_string(AppState s);

class AppInstance {
 public:
  using ExitHandler = std::function<void(AppInstance& instance, const std::string& how)>;

  // What a hand-off carries of an instance.
  struct Handed {
    pid_t pid = 0;
    uint64_t number = 0;
    AppState state = AppState::Serving;
    long long deadline_left_ms = -1;  // Stopping: when to kill its group
    long long uptime_ms = 0;
    std::string status;
    std::vector<std::string> command;
    handoff::UniqueFd pidfd, out, err;
  };

  static handoff::Result<std::unique_ptr<AppInstance>> launch(uv_loop_t* loop, const LaunchSpec& spec, uint64_t number,
                                                              ExitHandler on_exit);
  static handoff::Result<std::unique_ptr<AppInstance>> adopt(uv_loop_t* loop, Handed handed, ExitHandler on_exit);
  ~AppInstance();
  AppInstance(const AppInstance&) = delete;
  AppInstance& operator=(const AppInstance&) = delete;

  pid_t pid() const { return process_.pid(); }
  const std::vector<std::string>& command() const { return command_; }
  uint64_t number() const { return number_; }  // 1 for the first instance batond started, counting on
  AppState state() const { return state_; }
  void set_state(AppState s) { state_ = s; }
  bool exited() const { return exited_; }
  const std::string& status_text() const { return status_; }
  void set_status_text(std::string s) { status_ = std::move(s); }
  std::chrono::steady_clock::time_point started() const { return started_; }
  // The last lines it wrote to stderr, for the reason of a failed restart.
  std::string stderr_tail() const;

  // One deadline at a time; arming replaces the previous one.
  void arm(std::chrono::milliseconds after, std::function<void()> fire);
  void disarm();
  std::optional<std::chrono::milliseconds> deadline_left() const;

  bool signal(int signo) const { return process_.signal(signo); }
  // SIGKILL to its whole process group: what it forked goes with it. Only
  // while it has not exited (a child's group is killed as it exits, before
  // it is reaped; an adopted one's is left alone once it has exited).
  void kill_group() const;

  // A batond generation that handed over stops reading and timing the
  // instance (the new one does both), but still reaps it; an exit seen in
  // between is reported on resume().
  void pause();
  void resume();
  // batond exits: every handle closes (the process is left alone).
  void close();
  // The fds a hand-off sends: pidfd, stdout, stderr (all stay ours).
  std::vector<int> fds() const;

 private:
  AppInstance(uv_loop_t* loop, pid_t pid, handoff::UniqueFd pidfd, uint64_t number, bool child, ExitHandler on_exit);
  handoff::Status watch(handoff::UniqueFd out, handoff::UniqueFd err);
  struct Stream {
    AppInstance* owner = nullptr;
    const char* name = "";
    handoff::UvHandle<uv_pipe_t> pipe;
    std::string partial;
  };
  handoff::Status open_stream(Stream& s, const char* name, handoff::UniqueFd fd);
  void start_reading(Stream& s);
  static void on_read(uv_stream_t* stream, ssize_t n, const uv_buf_t* buf);
  void take_bytes(Stream& s, const char* data, size_t n);
  void take_line(Stream& s, std::string line);
  void read_what_is_left(Stream& s);
  static void on_exit_poll(uv_poll_t* poll, int status, int events);
  static void on_deadline(uv_timer_t* timer);
  void note_exit();

  uv_loop_t* loop_;
  handoff::ProcessHandle process_;
  uint64_t number_;
  bool child_;
  ExitHandler on_exit_;
  AppState state_ = AppState::Starting;
  std::string status_;
  std::vector<std::string> command_;
  std::optional<std::chrono::milliseconds> paused_left_;  // the deadline left when paused
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  Stream out_, err_;
  std::deque<std::string> stderr_tail_;
  handoff::UvHandle<uv_poll_t> exit_poll_;
  handoff::UvHandle<uv_timer_t> deadline_;
  std::function<void()> fire_;
  bool paused_ = false;
  bool exited_ = false;
  bool exit_reported_ = false;
  std::string how_;
};

}  // namespace baton::daemon
