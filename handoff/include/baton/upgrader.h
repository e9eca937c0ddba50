#pragma once
// baton::Upgrader: what a libuv server needs to be replaced by a new version
// of itself without refusing, resetting or losing a client connection.
//
//   auto up = baton::Upgrader::create(loop, argc, argv, events);  // a new generation takes over here
//   auto fd = (*up)->listener("http", "tcp://127.0.0.1:8080");    // inherited, or bound now
//   uv_tcp_open(&server, fd->release()); uv_listen(...);
//   (*up)->ready();                                               // the old generation stops accepting
//   uv_run(loop, UV_RUN_DEFAULT);
//
// SIGUSR2 (or upgrade()) starts the binary again; the new process gets the
// listening sockets and says ready; this one is told to stop accepting
// (`stop_accepting`), then, once the new one has served through its
// probation, to finish (`upgraded`), optionally handing its open connections
// over (hand_off). If the new process fails at any step, `failed` says so and
// this one serves on (listening again if it had stopped). See
// docs/embedding.md for the whole contract.
//
// Threading: every call, and every callback, on the loop's thread. Errors
// are values (Result/Status), never exceptions.

#include <signal.h>
#include <sys/types.h>
#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "baton/handoff/connection_handoff.h"
#include "baton/handoff/listen_address.h"
#include "baton/handoff/predecessor.h"
#include "baton/handoff/predecessor_link.h"
#include "baton/handoff/process_handle.h"
#include "baton/handoff/protocol.h"
#include "baton/handoff/result.h"
#include "baton/handoff/successor.h"
#include "baton/handoff/unique_fd.h"
#include "baton/handoff/uv_handle.h"

namespace baton {

using handoff::ConnectionKind;
using handoff::Error;
using handoff::HandoffConnection;
using handoff::Result;
using handoff::Status;
using handoff::UniqueFd;

struct UpgraderOptions {
  // What an upgrade starts. Empty: argv[0] as given to create(), made
  // absolute at once (symlinks kept: a deploy that repoints them is picked up).
  std::string binary;
  // Its arguments; nullopt: argv[1..] as given to create().
  std::optional<std::vector<std::string>> args;
  // The signal that starts an upgrade; 0 for none (upgrade() only).
  int upgrade_signal = SIGUSR2;
  // Start -> READY, and COMMIT -> the new process serving.
  std::chrono::milliseconds ready_timeout{10000};
  // How long the new process must serve (and live) before this one is told
  // `upgraded`; a death inside it makes this one listen again.
  std::chrono::milliseconds probation{1000};
  // hand_off: how long a connection may take to write back what it owes.
  std::chrono::milliseconds flush_bound{1000};
  int backlog = SOMAXCONN;
  // READY=1, MAINPID= and STATUS= to $NOTIFY_SOCKET (when set), so that
  // systemd follows the main pid across upgrades. Off for a server that
  // notifies systemd itself.
  bool notify_systemd = true;
};

// Every callback runs on the loop's thread, from inside the loop, never
// from inside an Upgrader call. None may destroy the Upgrader (call close()).
struct UpgraderEvents {
  // Required. The new generation accepts from now on: stop accepting (close
  // your listening handles; the sockets stay open in the Upgrader) and go
  // on serving your open connections. Do not exit yet: `failed` may still
  // ask you to listen again.
  std::function<void()> stop_accepting;
  // Required. The new generation served through its probation: finish your
  // connections (or hand_off() them), then close() and let the loop end.
  std::function<void()> upgraded;
  // Required. An upgrade failed and this process serves on. `listen_again`:
  // it had stopped accepting (the new process died after COMMIT, in or after
  // its probation): call listener() again for every listener and accept on it.
  std::function<void(const std::string& why, bool listen_again)> failed;
  // A new generation, after ready(): a connection the old one handed off,
  // with nothing owed on it and nothing of the client's read. Return true if
  // it is served here now (the fd is then yours); false leaves it with the
  // old process.
  std::function<bool(UniqueFd fd, ConnectionKind kind)> adopt;
};

class Upgrader {
 public:
  // Call early in main(), before other threads start. A new generation
  // (started by an upgrade) receives its predecessor's listeners here,
  // synchronously; an error then means: exit non-zero, the old process
  // serves on. Installs the upgrade signal's handler on `loop`.
  static Result<std::unique_ptr<Upgrader>> create(uv_loop_t* loop, int argc, char** argv, UpgraderEvents events,
                                                  UpgraderOptions options = {});
  ~Upgrader();
  Upgrader(const Upgrader&) = delete;
  Upgrader& operator=(const Upgrader&) = delete;

  // A listening socket, non-blocking and close-on-exec, yours to give to
  // uv_tcp_open/uv_pipe_open (closing it never closes the listener: it is a
  // duplicate). `address`: "tcp://127.0.0.1:8080", "tcp://[::1]:8080",
  // "unix:/run/app.sock". The predecessor's if it listened under the same
  // name and address, else bound now. Again after ready(): the same socket.
  Result<UniqueFd> listener(const std::string& name, const std::string& address);
  // Where listener `name` is bound (its port, when asked for port 0).
  Result<handoff::ListenAddress> bound_address(const std::string& name) const;

  // Every listener is open: a new generation tells its predecessor and waits
  // (synchronously, up to ready_timeout) for its COMMIT, after which the
  // predecessor no longer accepts. Only then may this process accept. An
  // error means: exit non-zero; the predecessor serves on. Inherited
  // listeners not asked for are closed here. Tells systemd READY=1 (and
  // MAINPID) when NOTIFY_SOCKET is set.
  Status ready();

  // Starts an upgrade, as the signal does. Refused while not ready, while
  // one is in flight, and after `upgraded`. The spawn runs off the loop
  // thread: a binary that cannot be executed is reported by `failed`.
  Status upgrade();

  // After `upgraded`: gives these connections to the new generation, which
  // gets each through `adopt`. Each one is closed here (close_handed_off)
  // once the new process has it, or served here again (cancel_handoff) if
  // it will not flush within flush_bound or the new process cannot take it.
  Status hand_off(const std::vector<HandoffConnection*>& connections);

  // For a stop, or once `upgraded` and your connections are gone: no more
  // upgrades (the signal is ignored from now on, never fatal) and no more
  // callbacks; connections of a hand-off in flight still get
  // close_handed_off or cancel_handoff. A successor that has not committed
  // is killed now. The channels and the listener copies go on a later loop
  // turn, once that hand-off has settled (which may take until the
  // successor exits, if the link to it broke with connections unanswered),
  // so that the loop can end. Safe from a callback.
  void close();

  // 1 for a fresh start, one more at each upgrade (BATON_GENERATION).
  unsigned generation() const { return generation_; }
  // Started by an upgrade (listeners came from a predecessor).
  bool inherited() const { return successor_.has_value() || link_ != nullptr; }
  // The process of the upgrade in flight or last made, 0 if none.
  pid_t successor_pid() const;

 private:
  enum class State {
    Starting,   // create() done, ready() not yet
    Serving,    // accepting; an upgrade may start
    Upgrading,  // the new process is starting; we accept
    Probation,  // COMMIT sent: the new process accepts, we stand by
    Upgraded,   // the new process passed its probation: we finish
    Closed,     // close() called
  };
  struct OwnListener {
    std::string name;
    handoff::ListenAddress configured;
    handoff::ListenAddress bound;
    UniqueFd fd;
    bool inherited = false;
  };

  Upgrader(uv_loop_t* loop, UpgraderEvents events, UpgraderOptions options);
  static void on_signal(uv_signal_t* handle, int signo);
  static void on_close_timer(uv_timer_t* timer);
  void schedule_teardown();
  void notify(const std::string& message) const;
  Status before_commit(pid_t pid);
  void on_committed(pid_t pid);
  void on_outcome(const handoff::UpgradeOutcome& outcome);
  void on_successor_exit(pid_t pid, bool clean, bool superseded, const std::string& how);
  void serve_again(const std::string& why, bool listen_again);

  uv_loop_t* loop_;
  UpgraderEvents events_;
  UpgraderOptions options_;
  std::string binary_error_;  // why there is no binary to upgrade to (upgrade() says it)
  State state_ = State::Starting;
  unsigned generation_ = 1;
  std::vector<OwnListener> listeners_;
  // A new generation, until ready(): the channel and what came over it.
  std::optional<handoff::Successor> successor_;
  std::vector<handoff::InheritedListener> inherited_;
  // After ready(): the link to the predecessor, and its process.
  std::unique_ptr<handoff::PredecessorLink> link_;
  handoff::ProcessHandle predecessor_process_;
  // Our own upgrades.
  std::unique_ptr<handoff::Predecessor> predecessor_;
  std::unique_ptr<handoff::ConnectionHandoff> connection_handoff_;
  handoff::UvHandle<uv_signal_t> signal_;
  handoff::UvHandle<uv_timer_t> close_timer_;
};

}  // namespace baton
