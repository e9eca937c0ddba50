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

Predecessor::LinkSubscription& Predecessor::LinkSubscription::operator=(LinkSubscription&& o) noexcept {
  if (this != &o) {
    if (p_) p_->link_handlers_ = {};
    p_ = std::exchange(o.p_, nullptr);
  }
  return *this;
}

Predecessor::LinkSubscription::~LinkSubscription() {
  if (p_) p_->link_handlers_ = {};
}

Predecessor::Predecessor(uv_loop_t* loop, PredecessorEvents events)
    : loop_(loop),
      events_(std::move(events)),
      link_(
          loop, [this](Message& m) { handle_message(m); }, [this](const std::string& why) { on_link_closed(why); }),
      process_(loop) {
  link_.on_writable([this] {
    if (link_handlers_.writable) link_handlers_.writable();
  });
}

Predecessor::~Predecessor() { close(); }

void Predecessor::close() {
  // A new process that has not committed must not outlive the attempt; one
  // that has is the service now (or about to be) and is left alone.
  const bool committed = state() == UpgradeState::Probation || state() == UpgradeState::HandedOver;
  events_ = {};
  link_handlers_ = {};
  link_.close();
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
  newer_.clear();
  newer_unnamed_ = false;
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
  const std::string what = "hand-off channel: " + why;
  switch (state()) {
    case UpgradeState::Spawning:
    case UpgradeState::AwaitingReady:
      // A closed channel usually means the new process is exiting: give it a
      // moment, so the outcome can name its exit status rather than the EOF.
      return fail(what, /*let_it_exit=*/true);
    case UpgradeState::Probation:
      // Before SERVING it has accepted nothing and may be killed; after, it
      // serves: the probation runs its course and its exit decides.
      if (probation_ends_ == Clock::time_point{}) return fail(what, /*let_it_exit=*/true);
      spdlog::warn("upgrade: link to successor pid {} closed during probation ({})", pid_, why);
      return;
    case UpgradeState::HandedOver:
      spdlog::info("upgrade: link to successor pid {} closed ({})", pid_, why);
      if (link_handlers_.lost) link_handlers_.lost(why);
      return;
    case UpgradeState::Idle:
    case UpgradeState::RollingBack:
      return;
  }
}

void Predecessor::handle_message(Message& m) {
  if (!m.fds.empty()) {
    const std::string what = std::string(to_string(m.type)) + " from the new process carries unexpected fds";
    if (state() == UpgradeState::HandedOver || state() == UpgradeState::Probation) {
      link_.close();
      return on_link_closed(what);
    }
    return fail(what);
  }
  if (state() == UpgradeState::Probation || state() == UpgradeState::HandedOver) return handle_link_message(m);
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
  if (events_.progress) events_.progress("commit_sent");
  auto sent = link_.send_now(MessageType::Commit, {});
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
  machine_.transition(UpgradeState::HandedOver, "successor pid " + std::to_string(pid_) + " passed probation");
  report(UpgradeOutcome{true, pid_, {}, elapsed, true});
}

void Predecessor::handle_link_message(Message& m) {
  if (m.type == MessageType::Serving && version_ >= 2 && m.payload.empty()) {
    if (state() == UpgradeState::Probation && probation_ends_ == Clock::time_point{}) {
      if (events_.progress) events_.progress("serving");
      start_probation_window();
    }
    return;
  }
  if (m.type == MessageType::Succeeded) return take_succeeded(m);
  if (m.type == MessageType::StateUpdate && version_ >= 4) {
    auto update = decode_state_update(m.payload);
    if (!update) {
      link_.close();
      return on_link_closed(update.error().message);
    }
    if (events_.successor_state) events_.successor_state(update.value());
    return;
  }
  if (m.type == MessageType::ConnectionsAck && state() == UpgradeState::HandedOver) {
    auto acks = decode_connections_ack(m.payload);
    if (!acks) {
      link_.close();
      return on_link_closed("bad CONNECTIONS_ACK: " + acks.error().message);
    }
    if (link_handlers_.acks) link_handlers_.acks(acks.value());
    return;
  }
  link_.close();
  on_link_closed(std::string("unexpected ") + to_string(m.type) + " from the successor in state " + to_string(state()));
}

void Predecessor::take_succeeded(Message& m) {
  auto s = decode_succeeded(m.payload);
  if (!s) {
    link_.close();
    return on_link_closed("bad SUCCEEDED: " + s.error().message);
  }
  const auto pid = static_cast<pid_t>(s->pid);
  if (pid == 0) {
    newer_unnamed_ = true;
  } else {
    // Taken now, while the newer process certainly lives (it just sent READY
    // to its predecessor, or was relayed while it did): no pid-reuse accident.
    newer_.push_back(ProcessHandle::open(pid));
  }
  spdlog::info("upgrade: successor pid {} commits to a newer generation{}", pid_,
               pid ? " (pid " + std::to_string(pid) + ")" : std::string());
  if (events_.succeeded) events_.succeeded(pid);
}

bool Predecessor::newer_generation_alive() const {
  if (newer_unnamed_) return true;  // a version 1 SUCCEEDED: assume so, as that version did
  return std::any_of(newer_.begin(), newer_.end(), [](const ProcessHandle& h) { return h.alive(); });
}

void Predecessor::on_deadline(uv_timer_t* timer) {
  auto* self = static_cast<Predecessor*>(timer->data);
  switch (self->state()) {
    case UpgradeState::RollingBack:
      return self->kill_successor();
    case UpgradeState::Probation:
      if (self->probation_ends_ != Clock::time_point{}) return self->hand_over();
      // SERVING may sit unread in the channel, behind this timer in the same loop turn.
      self->link_.read_pending();
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
  if (state() == UpgradeState::Probation || state() == UpgradeState::HandedOver) {
    link_.read_pending();
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
        // probation had passed: no resume beside it.
        machine_.transition(UpgradeState::HandedOver, "successor pid " + std::to_string(pid) +
                                                                " exited inside its probation, superseded");
        report(UpgradeOutcome{true, pid, {}, elapsed, true});
        spdlog::info("upgrade: successor pid {} exited with {}, a newer generation serves", pid, how);
        if (events_.successor_exit) events_.successor_exit(pid, false, true, how);
        break;
      }
      // Dead inside the window: whatever it accepted is gone with it, and the
      // listeners it shared with us never closed. We serve again.
      link_.close();
      const std::string reason = "new process " + pid_text(pid) + " exited during probation with " + how;
      machine_.transition(UpgradeState::Idle, reason + "; serving again");
      report(UpgradeOutcome{false, pid, reason, elapsed, true});
      break;
    }
    case UpgradeState::HandedOver: {
      const bool superseded = newer_generation_alive();
      spdlog::info("upgrade: successor pid {} exited with {}", pid, how);
      if (successor_superseded() && !superseded)
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

Predecessor::LinkSubscription Predecessor::subscribe_link(LinkHandlers handlers) {
  link_handlers_ = std::move(handlers);
  return LinkSubscription(this);
}

Result<bool> Predecessor::send_connections(const std::vector<ConnectionOffer>& batch) {
  if (state() != UpgradeState::HandedOver || !link_.is_open()) return Error{"no successor to hand connections to"};
  std::vector<ConnectionEntry> entries;
  std::vector<int> fds;
  for (const auto& o : batch) {
    entries.push_back({o.id, o.kind});
    fds.push_back(o.fd);
  }
  return link_.send_now(MessageType::Connections, encode(entries), fds);
}

Status Predecessor::resume() {
  if (state() != UpgradeState::HandedOver || !exited_) return Error{"no dead successor to resume from"};
  link_.close();
  machine_.transition(UpgradeState::Idle, "successor pid " + std::to_string(pid_) + " died; serving again");
  newer_.clear();
  newer_unnamed_ = false;
  return {};
}

Status Predecessor::send_state_update(const std::string& key, const std::string& data) {
  const bool after_commit = state() == UpgradeState::Probation || state() == UpgradeState::HandedOver;
  if (!in_before_commit_ && !after_commit) return Error{"no successor between READY and its end to send state to"};
  if (version_ < 4) return {};
  if (!link_.is_open()) return Error{"the link to the successor is closed"};
  auto payload = encode_state(key, data);
  if (payload.size() > kMaxPayload) return Error{"STATE_UPDATE '" + key + "' is larger than one message"};
  // Before COMMIT, the update must be in the socket ahead of COMMIT, which
  // goes with send_now: queued behind a full channel, it would come after.
  if (in_before_commit_) {
    auto sent = link_.send_now(MessageType::StateUpdate, payload);
    if (!sent) return sent.error();
    if (!sent.value()) return Error{"sendmsg STATE_UPDATE: the new process is not reading"};
    return {};
  }
  return link_.send(MessageType::StateUpdate, payload);
}

Status Predecessor::report_draining(const std::vector<GenerationReport>& reports) {
  if ((state() != UpgradeState::HandedOver && state() != UpgradeState::Probation) || !link_.is_open())
    return Error{"no successor to report to"};
  return link_.send(MessageType::Draining, encode(reports, version_));
}

}  // namespace baton::handoff
