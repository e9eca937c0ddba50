#pragma once
// The side that hands over. Runs inside the caller's libuv loop, so the old
// process keeps serving while the new one starts:
//
//   spawn(binary, channel end as fd 3)
//        <- HELLO {pid, version}
//   LISTENERS + fds (batches of <= 253), LISTENERS_END ->
//        <- READY {pid}
//   COMMIT ->                      outcome: ok
//
// Every failure (spawn error, exit, crash, closed channel, malformed or
// unexpected message, no READY within the timeout) kills the new process if it
// still runs, reaps it, and reports one outcome naming the first fault. After
// the outcome the caller's listeners are untouched: rolling back is simply
// carrying on.

#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "baton/handoff/channel.h"
#include "baton/handoff/protocol.h"
#include "baton/handoff/result.h"
#include "baton/handoff/upgrade_state.h"
#include "baton/handoff/uv_handle.h"

namespace baton::handoff {

struct SpawnSpec {
  std::string binary;             // an absolute path, resolved by the caller
  std::vector<std::string> args;  // argv[1..]
  std::vector<std::string> env;   // the child's whole environment ("K=V")
  std::string channel_variable = "BATON_HANDOFF_FD";
};

struct UpgradeOutcome {
  bool ok = false;
  pid_t pid = 0;       // the new process (0 if it never started)
  std::string reason;  // why it failed
  std::chrono::microseconds elapsed{0};
};

class Predecessor {
 public:
  using OutcomeCallback = std::function<void(const UpgradeOutcome&)>;
  // The new process exited after it took over; `how` is "exit status 0", "signal 9 (Killed)", ...
  // `superseded`: it had itself handed over to a newer generation before.
  using SuccessorExitCallback = std::function<void(pid_t pid, bool clean, bool superseded, const std::string& how)>;

  Predecessor(uv_loop_t* loop, OutcomeCallback on_outcome, SuccessorExitCallback on_successor_exit = {});
  ~Predecessor();  // close()
  // Kills a new process that has not taken over yet, and lets go of every
  // handle; no callback runs after this. Safe to call from a callback.
  void close();
  Predecessor(const Predecessor&) = delete;
  Predecessor& operator=(const Predecessor&) = delete;

  // Starts an upgrade. Fails at once ("busy", spawn errors) without calling
  // the outcome callback; otherwise the callback runs exactly once, later.
  Status start(const SpawnSpec& spec, std::vector<ListenerOffer> listeners, std::chrono::milliseconds timeout);
  // Abandons an upgrade in flight (the outcome reports `reason`). No-op otherwise.
  void cancel(const std::string& reason);

  // After the hand-over: tells the successor which generations still drain
  // (this one first, then the older ones it knows of).
  Status report_draining(const std::vector<GenerationReport>& reports);

  // After the hand-over, with `drain = handoff`: passes client connections to
  // the successor. Its answers arrive through on_acks; if the link breaks
  // first, on_lost runs once and no more answers will come.
  using AckCallback = std::function<void(const std::vector<ConnectionAck>& acks)>;
  using LostCallback = std::function<void(const std::string& why)>;
  void on_link(AckCallback on_acks, LostCallback on_lost);
  Status send_connections(const std::vector<ConnectionOffer>& offers);

  // The successor died after taking over: this process serves again, and
  // may start a new upgrade later. Only in HandedOver once it has exited.
  Status resume();
  // The successor said it handed over to a newer generation in turn.
  bool successor_superseded() const { return superseded_; }
  using SupersededCallback = std::function<void()>;
  void on_superseded(SupersededCallback cb) { on_superseded_ = std::move(cb); }

  UpgradeState state() const { return machine_.state(); }
  pid_t successor_pid() const { return pid_; }

 private:
  static void on_readable(uv_poll_t* poll, int status, int events);
  static void on_deadline(uv_timer_t* timer);
  static void on_exit(uv_process_t* process, int64_t exit_status, int term_signal);

  void handle_message(Message& m);
  void fail(const std::string& reason, bool let_it_exit = false);
  void kill_successor();
  void finish_rollback(const std::string& how_it_ended);
  void stop_channel();
  void handle_link_message(Message& m);
  void lose_link(const std::string& why);

  uv_loop_t* loop_;
  OutcomeCallback on_outcome_;
  SuccessorExitCallback on_successor_exit_;
  AckCallback on_acks_;
  SupersededCallback on_superseded_;
  bool superseded_ = false;
  LostCallback on_lost_;
  UpgradeStateMachine machine_;
  HandoffChannel channel_{UniqueFd()};
  UvHandle<uv_poll_t> poll_;
  UvHandle<uv_timer_t> deadline_;
  UvHandle<uv_process_t> process_;
  std::vector<ListenerOffer> offers_;
  std::chrono::milliseconds timeout_{0};
  pid_t pid_ = 0;
  bool exited_ = false;
  bool killed_ = false;
  std::string failure_;
};

// "exit status 1", "signal 11 (Segmentation fault)".
std::string describe_exit(int64_t exit_status, int term_signal);

}  // namespace baton::handoff
