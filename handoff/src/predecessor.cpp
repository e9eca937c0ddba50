#include "baton/handoff/predecessor.h"

#include <signal.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "baton/handoff/protocol.h"

namespace baton::handoff {
namespace {

using Clock = std::chrono::steady_clock;

// The fd number the new process finds its end of the channel at.
constexpr int kChildChannelFd = 3;
// How long a new process that closed the channel gets to exit by itself.
constexpr std::chrono::milliseconds kExitGrace{1000};

std::string pid_text(pid_t pid) { return "pid " + std::to_string(pid); }

}  // namespace

std::string describe_exit(int64_t exit_status, int term_signal) {
  if (term_signal != 0) return "signal " + std::to_string(term_signal) + " (" + strsignal(term_signal) + ")";
  return "exit status " + std::to_string(exit_status);
}

Predecessor::Predecessor(uv_loop_t* loop, PredecessorEvents events)
    : loop_(loop),
      events_(std::move(events)),
      link_(
          loop, [this](Message& m) { handle_message(m); }, [this](const std::string& why) { on_link_closed(why); }),
      process_(loop) {}

Predecessor::~Predecessor() { close(); }

void Predecessor::close() {
  // A new process that has not committed must not outlive the attempt; one
  // that has is the service now (or about to be) and is left alone.
  const bool committed = state() == UpgradeState::Probation || state() == UpgradeState::HandedOver;
  events_ = {};
  link_.close();
  if (successor_) successor_->close();
  deadline_.close();
  if (!exited_ && !committed) process_.abandon();  // killed and reaped, even if still being spawned
  else process_.close();
  channel_.reset();
}

Status Predecessor::start(const SpawnSpec& spec, std::vector<ListenerOffer> listeners, UpgradeTimeouts timeouts,
                          std::vector<StateOffer> caller_state) {
  if (state() != UpgradeState::Idle) {
    if (state() == UpgradeState::HandedOver)
      return Error{"busy: this generation already handed over to pid " + std::to_string(pid_)};
    return Error{std::string("busy: an upgrade is already in progress (") + to_string(state()) + ")"};
  }
  auto pair = HandoffChannel::create_pair();
  if (!pair) return pair.error();
  auto [ours, theirs] = std::move(pair).value();

  ChildSpec child;
  child.file = spec.binary;
  child.argv = {spec.binary};
  child.argv.insert(child.argv.end(), spec.args.begin(), spec.args.end());
  const std::string version_prefix = std::string(kVersionVariable) + "=";
  for (const auto& kv : spec.env)
    if (!kv.starts_with(spec.channel_variable + "=") && !kv.starts_with(version_prefix)) child.env.push_back(kv);
  child.env.push_back(spec.channel_variable + "=" + std::to_string(kChildChannelFd));
  child.env.push_back(version_prefix + advertised_version(::getpid()));
  // `theirs` goes with the spawn and is closed once the child has its copy:
  // ours would hide the child's death (no EOF while we hold the other end).
  child.fds.emplace_back(kChildChannelFd, std::move(theirs));

  machine_.transition(UpgradeState::Spawning, "spawning " + spec.binary);
  exited_ = false;
  killed_ = false;
  failed_after_commit_ = false;
  failure_.clear();
  pid_ = 0;
  version_ = 0;
  probation_ends_ = {};
  binary_ = spec.binary;
  auto started = process_.start(
      std::move(child), [this](Result<pid_t> pid) { on_spawned(std::move(pid)); },
      [this](int64_t exit_status, int term_signal) { on_exit(exit_status, term_signal); });
  if (!started) {
    std::string reason = "spawn " + spec.binary + ": " + started.error().message;
    machine_.transition(UpgradeState::RollingBack, reason);
    machine_.transition(UpgradeState::Idle, "nothing to reap");
    return Error{reason};
  }
  channel_ = std::move(ours);
  offers_ = std::move(listeners);
  state_ = std::move(caller_state);
  timeouts_ = timeouts;
  arm_deadline(timeouts.ready);  // a spawn that hangs (an exec on a dead mount) fails too
  return {};
}

void Predecessor::on_spawned(Result<pid_t> pid) {
  if (!pid) {
    // Nothing was started, nothing to reap.
    channel_.reset();
    exited_ = true;
    if (state() == UpgradeState::Spawning) {
      failure_ = pid.error().message;
      link_.close();
      deadline_.close();
      machine_.transition(UpgradeState::RollingBack, failure_);
    }
    finish_rollback("never started");
    return;
  }
  pid_ = pid.value();
  spdlog::info("upgrade: spawned {} as pid {}", binary_, pid_);
  if (events_.progress) events_.progress("spawned");
  // A callback may have closed us, or cancelled the upgrade.
  if (state() != UpgradeState::Spawning || !channel_) return;
  auto channel = std::move(*channel_);
  channel_.reset();
  if (auto st = link_.open(std::move(channel)); !st) fail(st.error().message);
}

void Predecessor::arm_deadline(std::chrono::milliseconds after) {
  if (!deadline_) deadline_.init(uv_timer_init, loop_, this);
  uv_timer_start(deadline_.get(), &Predecessor::on_deadline, static_cast<uint64_t>(after.count()), 0);
}

void Predecessor::cancel(const std::string& reason) {
  if (state() == UpgradeState::Spawning || state() == UpgradeState::AwaitingReady) fail(reason);
}

void Predecessor::on_link_closed(const std::string& why) {
  // A closed channel usually means the new process is exiting: give it a
  // moment, so the outcome can name its exit status rather than the EOF.
  fail("hand-off channel: " + why, /*let_it_exit=*/true);
}

void Predecessor::on_successor_link_closed(const std::string& why) {
  switch (state()) {
    case UpgradeState::Probation:
      // Before SERVING it has accepted nothing and may be killed; after, it
      // serves: the probation runs its course and its exit decides.
      if (probation_ends_ == Clock::time_point{}) return fail("hand-off channel: " + why, /*let_it_exit=*/true);
      spdlog::warn("upgrade: link to successor pid {} closed during probation ({})", pid_, why);
      return;
    case UpgradeState::HandedOver:
      spdlog::info("upgrade: link to successor pid {} closed ({})", pid_, why);
      return;
    default:
      return;
  }
}

void Predecessor::handle_message(Message& m) {
  if (!m.fds.empty()) return fail(std::string(to_string(m.type)) + " from the new process carries unexpected fds");
  if (state() == UpgradeState::Spawning && m.type == MessageType::Hello) {
    auto hello = decode_hello(m.payload);
    if (!hello) return fail("bad HELLO: " + hello.error().message);
    if (hello->version < kMinProtocolVersion || hello->version > kProtocolVersion)
      return fail("HELLO speaks protocol version " + std::to_string(hello->version) + ", this one speaks " +
                  std::to_string(kMinProtocolVersion) + " to " + std::to_string(kProtocolVersion));
    if (static_cast<pid_t>(hello->pid) != pid_)
      return fail("HELLO names pid " + std::to_string(hello->pid) + ", spawned pid " + std::to_string(pid_));
    version_ = hello->version;
    if (events_.progress) events_.progress("hello");
    // A handful of datagrams into an empty socket buffer: if even these do
    // not fit, the new process is not reading and the attempt is over.
    if (auto st = send_listeners_now(); !st) return fail(st.error().message, /*let_it_exit=*/true);
    if (events_.progress) events_.progress("listeners_sent");
    machine_.transition(UpgradeState::AwaitingReady, "HELLO from pid " + std::to_string(pid_) + " (protocol " +
                                                         std::to_string(version_) + "), sent " +
                                                         std::to_string(offers_.size()) + " listeners");
    return;
  }
  if (state() == UpgradeState::AwaitingReady && m.type == MessageType::Ready) {
    auto ready = decode_ready(m.payload);
    if (!ready) return fail("bad READY: " + ready.error().message);
    if (static_cast<pid_t>(ready->pid) != pid_)
      return fail("READY names pid " + std::to_string(ready->pid) + ", spawned pid " + std::to_string(pid_));
    if (events_.progress) events_.progress("ready");
    return commit();
  }
  fail(std::string("unexpected ") + to_string(m.type) + " in state " + to_string(state()));
}

Status Predecessor::send_listeners_now() {
  // State is a version 3 message: an older new process could not take it,
  // and serving without it would be wrong.
  if (!state_.empty() && version_ < 3)
    return Error{"the new process speaks protocol " + std::to_string(version_) + "; handing over '" + state_.front().key +
                 "' needs protocol 3"};
  auto messages = listener_messages(offers_, state_);
  if (!messages) return messages.error();
  for (const auto& batch : messages.value()) {
    auto sent = link_.send_now(batch.type, batch.payload, batch.fds);
    if (!sent) return sent.error();
    if (!sent.value()) return Error{std::string("sendmsg ") + to_string(batch.type) + ": the new process is not reading"};
  }
  return {};
}

void Predecessor::commit() {
  if (events_.before_commit) {
    in_before_commit_ = true;
    auto st = events_.before_commit(pid_);
    in_before_commit_ = false;
    if (!st) return fail("not committing: " + st.error().message);
    if (state() != UpgradeState::AwaitingReady) return;  // the callback closed or cancelled us
  }
  // The link is made before COMMIT goes: should that fail, the new process
  // has accepted nothing and is killed; nothing fails between COMMIT and
  // `committed`.
  if (auto st = open_successor_link(); !st) return fail("not committing: " + st.error().message);
  if (events_.progress) events_.progress("commit_sent");
  auto sent = successor_->send_commit();
  if (!sent || !sent.value())
    return fail("sending COMMIT: " + (sent ? std::string("the new process is not reading") : sent.error().message),
                /*let_it_exit=*/true);
  // The channel stays open: SERVING, DRAINING reports and, with `drain =
  // handoff`, client connections go over it until this process exits.
  machine_.transition(UpgradeState::Probation, "READY from pid " + std::to_string(pid_) + ", COMMIT sent");
  if (events_.committed) events_.committed(pid_);
  if (state() != UpgradeState::Probation) return;  // the callback closed us
  // A version 1 successor never says SERVING: it serves from COMMIT on.
  if (version_ < 2) return start_probation_window();
  arm_deadline(timeouts_.ready);
}

void Predecessor::start_probation_window() {
  probation_ends_ = Clock::now() + timeouts_.probation;
  spdlog::info("upgrade: successor pid {} serves; probation for {} ms", pid_, timeouts_.probation.count());
  arm_deadline(timeouts_.probation);
}

std::optional<std::chrono::milliseconds> Predecessor::probation_left() const {
  if (state() != UpgradeState::Probation || probation_ends_ == Clock::time_point{}) return std::nullopt;
  return std::max(std::chrono::milliseconds(0),
                  std::chrono::duration_cast<std::chrono::milliseconds>(probation_ends_ - Clock::now()));
}

void Predecessor::hand_over() {
  deadline_.close();
  auto elapsed = machine_.since_start();
  if (successor_) successor_->allow_connections();
  machine_.transition(UpgradeState::HandedOver, "successor pid " + std::to_string(pid_) + " passed probation");
  report(UpgradeOutcome{true, pid_, {}, elapsed, true});
}

Status Predecessor::open_successor_link() {
  // The previous attempt's (closed) goes now, not at start(): a hand-off on
  // it may still be winding down (Upgrader: `failed`, then upgrade() at once).
  successor_ = std::make_unique<SuccessorLink>(
      loop_, pid_, version_,
      SuccessorLink::Events{
          .serving = [this] { on_serving(); },
          .succeeded =
              [this](pid_t pid) {
                if (events_.succeeded) events_.succeeded(pid);
              },
          .state =
              [this](const StateUpdate& u) {
                if (events_.successor_state) events_.successor_state(u);
              },
          .closed = [this](const std::string& why) { on_successor_link_closed(why); },
      });
  // Everything before went with send_now: nothing is queued. The successor
  // sends nothing more before COMMIT, and whatever it sends after waits in
  // the socket for the new link.
  auto channel = link_.release();
  if (!channel) return channel.error();
  return successor_->open(std::move(channel).value());
}

void Predecessor::on_serving() {
  if (state() != UpgradeState::Probation || probation_ends_ != Clock::time_point{}) return;
  if (events_.progress) events_.progress("serving");
  start_probation_window();
}

void Predecessor::on_deadline(uv_timer_t* timer) {
  auto* self = static_cast<Predecessor*>(timer->data);
  switch (self->state()) {
    case UpgradeState::RollingBack:
      return self->kill_successor();
    case UpgradeState::Probation:
      if (self->probation_ends_ != Clock::time_point{}) return self->hand_over();
      // SERVING may sit unread in the channel, behind this timer in the same loop turn.
      if (self->successor_) self->successor_->read_pending();
      if (self->state() != UpgradeState::Probation || self->probation_ends_ != Clock::time_point{}) return;
      // It has accepted nothing yet (SERVING comes first): killing it loses nothing.
      return self->fail("pid " + std::to_string(self->pid_) + " took the listeners but did not report SERVING within " +
                        std::to_string(self->timeouts_.ready.count()) + " ms");
    default:
      return self->fail("no READY within " + std::to_string(self->timeouts_.ready.count()) + " ms");
  }
}

void Predecessor::fail(const std::string& reason, bool let_it_exit) {
  const auto s = state();
  if (s != UpgradeState::Spawning && s != UpgradeState::AwaitingReady && s != UpgradeState::Probation) return;
  failure_ = reason;
  failed_after_commit_ = s == UpgradeState::Probation;
  link_.close();
  if (successor_) successor_->close();
  deadline_.close();
  machine_.transition(UpgradeState::RollingBack, reason);
  if (exited_) {
    finish_rollback("already exited");
    return;
  }
  if (process_.state() == ChildProcess::State::Starting) {
    // Still being spawned (an exec that hangs on a dead mount, a child
    // stopped before its exec): nothing to wait for. It is killed, and
    // reaped, whenever it comes to exist.
    process_.abandon();
    channel_.reset();
    exited_ = true;
    finish_rollback("the spawn had not returned; killed as soon as it exists");
    return;
  }
  if (!let_it_exit) {
    kill_successor();
    return;
  }
  arm_deadline(kExitGrace);
}

void Predecessor::kill_successor() {
  // Before SERVING it has accepted no client: killing it loses nothing.
  killed_ = true;
  if (!exited_) process_.kill(SIGKILL);
}

void Predecessor::on_exit(int64_t exit_status, int term_signal) {
  // What it said last (SERVING, SUCCEEDED, ACKs) decides what its exit means:
  // read it before deciding. Before exited_ is set, so that a closed channel
  // found here waits for this very exit to name the cause.
  if (successor_ && (state() == UpgradeState::Probation || state() == UpgradeState::HandedOver)) {
    successor_->read_pending();
    if (process_.state() == ChildProcess::State::Closed) return;  // a callback closed us
  }
  exited_ = true;
  const std::string how = describe_exit(exit_status, term_signal);
  const pid_t pid = pid_;
  switch (state()) {
    case UpgradeState::Spawning:
    case UpgradeState::AwaitingReady:
      fail("new process pid " + std::to_string(pid) + " exited before READY with " + how);
      break;
    case UpgradeState::RollingBack:
      // It died on its own while we waited: its exit status says more than
      // the closed channel did.
      if (!killed_)
        failure_ = "new process " + pid_text(pid) + " exited " +
                         (failed_after_commit_ ? "during probation" : "before READY") + " with " + how;
      finish_rollback(how);
      break;
    case UpgradeState::Probation: {
      deadline_.close();
      auto elapsed = machine_.since_start();
      if (newer_generation_alive()) {
        // It committed to a newer generation inside its own probation, and
        // that one lives: the service is there now. Ours is over, as if the
        // probation had passed: no resume beside it. Its link is over (it
        // read to the EOF above, as a rule): nothing more goes to it.
        if (successor_) successor_->close();
        machine_.transition(UpgradeState::HandedOver, "successor pid " + std::to_string(pid) +
                                                                " exited inside its probation, superseded");
        report(UpgradeOutcome{true, pid, {}, elapsed, true});
        spdlog::info("upgrade: successor pid {} exited with {}, a newer generation serves", pid, how);
        if (events_.successor_exit) events_.successor_exit(pid, false, true, how);
        break;
      }
      // Dead inside the window: whatever it accepted is gone with it, and the
      // listeners it shared with us never closed. We serve again.
      if (successor_) successor_->close();
      const std::string reason = "new process " + pid_text(pid) + " exited during probation with " + how;
      machine_.transition(UpgradeState::Idle, reason + "; serving again");
      report(UpgradeOutcome{false, pid, reason, elapsed, true});
      break;
    }
    case UpgradeState::HandedOver: {
      const bool superseded = newer_generation_alive();
      spdlog::info("upgrade: successor pid {} exited with {}", pid, how);
      if (successor_ && successor_->superseded() && !superseded)
        spdlog::warn("upgrade: every newer generation pid {} committed to is gone too", pid);
      if (events_.successor_exit)
        events_.successor_exit(pid, exit_status == 0 && term_signal == 0, superseded, how);
      break;
    }
    case UpgradeState::Idle:
      break;
  }
}

void Predecessor::finish_rollback(const std::string& how_it_ended) {
  auto elapsed = machine_.since_start();
  machine_.transition(UpgradeState::Idle, (pid_ ? "new process pid " + std::to_string(pid_) + " reaped"
                                                : std::string("no new process to reap")) +
                                               " (" + how_it_ended + ")");
  offers_.clear();
  state_.clear();
  report(UpgradeOutcome{false, pid_, failure_, elapsed, failed_after_commit_});
}

void Predecessor::report(UpgradeOutcome outcome) {
  if (events_.outcome) events_.outcome(outcome);
}

Status Predecessor::resume() {
  if (state() != UpgradeState::HandedOver || !exited_) return Error{"no dead successor to resume from"};
  if (successor_) successor_->close();
  machine_.transition(UpgradeState::Idle, "successor pid " + std::to_string(pid_) + " died; serving again");
  return {};
}

Status Predecessor::send_state_update(const std::string& key, const std::string& data) {
  if (!in_before_commit_) return Error{"state for the successor goes before COMMIT only from before_commit, after it over successor()"};
  if (version_ < 4) return {};
  auto payload = encode_state_update(key, data);
  if (!payload) return payload.error();
  // It must be in the socket ahead of COMMIT, which goes with send_now:
  // queued behind a full channel, it would come after.
  auto sent = link_.send_now(MessageType::StateUpdate, payload.value());
  if (!sent) return sent.error();
  if (!sent.value()) return Error{"sendmsg STATE_UPDATE: the new process is not reading"};
  return {};
}

}  // namespace baton::handoff
