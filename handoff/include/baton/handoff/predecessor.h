#pragma once
// The side that hands over: one upgrade attempt, from the spawn to its
// outcome. Runs inside the caller's libuv loop, so the old process keeps
// serving while the new one starts:
//
//   spawn(binary, channel end as fd 3)
//        <- HELLO {pid, version}
//   LISTENERS + fds (batches of <= 253), STATE + fds (protocol 3), LISTENERS_END ->
//        <- READY {pid}
//   [STATE_UPDATE ->]              (protocol 4: the caller's, from before_commit)
//   ---- from here the channel is the SuccessorLink's (successor_link.h) ----
//   COMMIT ->                      committed: the new process accepts, the caller stops
//        <- SERVING                (protocol 2; a version 1 successor is taken as serving at COMMIT)
//   probation window passes        outcome: ok
//
// Two lifetimes, two objects: this one runs the attempt and owns the new
// process (its exit is judged here, after reading what it said last);
// successor() is the link to it after COMMIT, for as long as it lives.
// Every failure before COMMIT (spawn error, exit, crash, closed channel,
// malformed or unexpected message, no READY within the timeout) kills the new
// process if it still runs, reaps it, and reports one outcome naming the
// first fault; the caller's listeners were never touched. A failure after
// COMMIT (no SERVING within the timeout, or the new process dies inside the
// probation window) reports an outcome with `committed` set: the caller
// resumes accepting on the listeners it kept.
//
// Every send is non-blocking (ChannelLink): a new process that stops reading
// never stalls the loop.

#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "baton/handoff/channel_link.h"
#include "baton/handoff/child_process.h"
#include "baton/handoff/process_handle.h"
#include "baton/handoff/protocol.h"
#include "baton/handoff/result.h"
#include "baton/handoff/successor_link.h"
#include "baton/handoff/upgrade_state.h"
#include "baton/handoff/uv_handle.h"

namespace baton::handoff {

struct SpawnSpec {
  std::string binary;             // an absolute path, resolved by the caller
  std::vector<std::string> args;  // argv[1..]
  std::vector<std::string> env;   // the child's whole environment ("K=V")
  std::string channel_variable = "BATON_HANDOFF_FD";
};

struct UpgradeTimeouts {
  std::chrono::milliseconds ready{10000};    // spawn -> READY, and COMMIT -> SERVING
  std::chrono::milliseconds probation{1000};  // SERVING -> handed over
};

struct UpgradeOutcome {
  bool ok = false;
  pid_t pid = 0;       // the new process (0 if it never started)
  std::string reason;  // why it failed
  std::chrono::microseconds elapsed{0};
  // COMMIT was sent. A failure with this set came in the probation: the
  // caller had stopped accepting and must resume.
  bool committed = false;
};

// What the caller hears. Every callback is optional but `outcome`.
struct PredecessorEvents {
  // READY arrived; an error here rolls the upgrade back instead of committing.
  std::function<Status(pid_t pid)> before_commit;
  // COMMIT is sent: the new process accepts from now on. Stop accepting
  // (keep the listeners open: a failed probation resumes on them).
  std::function<void(pid_t pid)> committed;
  // Once per started upgrade: ok after the probation, or why it failed.
  std::function<void(const UpgradeOutcome&)> outcome;
  // The new process exited after probation; `how` is "exit status 0",
  // "signal 9 (Killed)", ... `superseded`: a newer generation it committed
  // to (directly or further down the line) is still alive, and serves.
  std::function<void(pid_t pid, bool clean, bool superseded, const std::string& how)> successor_exit;
  // The successor told us (SUCCEEDED) that a newer generation `pid` is taking
  // over from it or from one of its own successors (0: a version 1 successor
  // named none). A caller that has a predecessor of its own passes it on
  // (PredecessorLink::notify_succeeded): every older generation must know
  // every newer one, or it could resume beside it once the ones between die.
  std::function<void(pid_t pid)> succeeded;
  // A step of the exchange, when it happens: "spawned" (the new process has
  // exec'd: successor_pid() names it), "hello" (a valid HELLO came),
  // "listeners_sent", "ready" (before before_commit), "commit_sent" (just
  // before COMMIT goes), "serving" (SERVING
  // came: the probation window starts). For timelines; nothing may be
  // changed from it.
  std::function<void(const char* step)> progress;
  // Protocol 4: the successor's live state (STATE_UPDATE after COMMIT), read
  // before its exit is acted on, so a resuming caller knows what it last said.
  std::function<void(const StateUpdate& update)> successor_state;
};

class Predecessor {
 public:
  Predecessor(uv_loop_t* loop, PredecessorEvents events);
  ~Predecessor();  // close()
  // Kills a new process that has not taken over yet, and lets go of every
  // handle; no callback runs after this. Safe to call from a callback.
  void close();
  Predecessor(const Predecessor&) = delete;
  Predecessor& operator=(const Predecessor&) = delete;

  // Starts an upgrade. Fails at once ("busy", no channel) without calling
  // the outcome callback; otherwise the callback runs exactly once, later.
  // The new process is spawned off the loop thread: its pid is known at the
  // "spawned" progress step, and a binary that cannot be executed (missing,
  // not executable, a bad format) is an outcome (ok = false, pid 0), not an
  // error from here. A spawn that has not returned by the READY deadline (or
  // a cancel) fails the upgrade at once; the child is killed when it appears.
  // `caller_state` goes with the listeners (protocol 3; a successor that speaks an
  // older version is refused, not served without it).
  Status start(const SpawnSpec& spec, std::vector<ListenerOffer> listeners, UpgradeTimeouts timeouts,
               std::vector<StateOffer> caller_state = {});
  // Abandons an upgrade before COMMIT (the outcome reports `reason`). No-op otherwise.
  void cancel(const std::string& reason);

  // Protocol 4, inside `before_commit` only: the caller's live state (say,
  // counters that must not restart from zero), in the socket ahead of COMMIT,
  // so the new process has it before it serves. After COMMIT it goes over
  // successor()->send_state_update. With a successor below version 4 it does
  // nothing: there is nobody to tell.
  Status send_state_update(const std::string& key, const std::string& data);

  // From COMMIT until the upgrade fails in the probation or resume(): the
  // committed successor's end of the channel (DRAINING reports, state
  // updates, with `drain = handoff` the connections once the probation has
  // passed); nullptr otherwise. The object stays valid until the next
  // attempt's COMMIT or this Predecessor's destruction.
  SuccessorLink* successor() {
    return (state() == UpgradeState::Probation || state() == UpgradeState::HandedOver) ? successor_.get() : nullptr;
  }

  // The successor died after taking over: this process serves again, and
  // may start a new upgrade later. Only in HandedOver once it has exited.
  Status resume();
  UpgradeState state() const { return machine_.state(); }
  pid_t successor_pid() const { return pid_; }
  // The protocol version agreed with the current successor (0 before HELLO).
  uint16_t protocol_version() const { return version_; }
  // Time left in the probation window; nullopt outside it (not in
  // probation, or the successor has not reported SERVING yet).
  std::optional<std::chrono::milliseconds> probation_left() const;

 private:
  static void on_deadline(uv_timer_t* timer);
  void on_spawned(Result<pid_t> pid);
  void on_exit(int64_t exit_status, int term_signal);

  void handle_message(Message& m);
  // The attempt's link (spawn to COMMIT) closed.
  void on_link_closed(const std::string& why);
  // After READY, just before COMMIT: the channel becomes the SuccessorLink's.
  Status open_successor_link();
  void on_serving();
  void on_successor_link_closed(const std::string& why);
  Status send_listeners_now();
  void commit();
  void start_probation_window();
  void hand_over();
  void fail(const std::string& reason, bool let_it_exit = false);
  void kill_successor();
  void finish_rollback(const std::string& how_it_ended);
  void report(UpgradeOutcome outcome);
  void arm_deadline(std::chrono::milliseconds after);
  bool newer_generation_alive() const { return successor_ && successor_->newer_generation_alive(); }

  uv_loop_t* loop_;
  PredecessorEvents events_;
  UpgradeStateMachine machine_;
  ChannelLink link_;  // spawn to COMMIT; then successor_
  std::unique_ptr<SuccessorLink> successor_;
  UvHandle<uv_timer_t> deadline_;
  ChildProcess process_;
  std::optional<HandoffChannel> channel_;  // our end, until the new process exists (then the link's)
  std::string binary_;
  std::vector<ListenerOffer> offers_;
  std::vector<StateOffer> state_;
  UpgradeTimeouts timeouts_;
  std::chrono::steady_clock::time_point probation_ends_{};  // set once SERVING arrived
  pid_t pid_ = 0;
  uint16_t version_ = 0;
  bool exited_ = false;
  bool killed_ = false;
  bool failed_after_commit_ = false;
  bool in_before_commit_ = false;  // READY arrived, COMMIT not yet sent: state updates may go
  std::string failure_;
};

// "exit status 1", "signal 11 (Segmentation fault)".
std::string describe_exit(int64_t exit_status, int term_signal);

}  // namespace baton::handoff
