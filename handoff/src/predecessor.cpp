#include "baton/handoff/predecessor.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "baton/handoff/protocol.h"

namespace baton::handoff {
namespace {

// The fd number the new process finds its end of the channel at.
constexpr int kChildChannelFd = 3;
// How long a new process that closed the channel gets to exit by itself.
constexpr std::chrono::milliseconds kExitGrace{1000};

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

std::string describe_exit(int64_t exit_status, int term_signal) {
  if (term_signal != 0) return "signal " + std::to_string(term_signal) + " (" + strsignal(term_signal) + ")";
  return "exit status " + std::to_string(exit_status);
}

Predecessor::Predecessor(uv_loop_t* loop, OutcomeCallback on_outcome, SuccessorExitCallback on_successor_exit)
    : loop_(loop), on_outcome_(std::move(on_outcome)), on_successor_exit_(std::move(on_successor_exit)) {}

Predecessor::~Predecessor() { close(); }

void Predecessor::close() {
  // A new process that has not taken over must not outlive the attempt; one
  // that has taken over is the service now and is left alone.
  if (process_ && !exited_ && state() != UpgradeState::HandedOver) uv_process_kill(process_.get(), SIGKILL);
  on_outcome_ = [](const UpgradeOutcome&) {};
  on_successor_exit_ = {};
  on_acks_ = {};
  on_superseded_ = {};
  on_lost_ = {};
  poll_.close();
  deadline_.close();
  process_.close();
  channel_.close();
}

Status Predecessor::start(const SpawnSpec& spec, std::vector<ListenerOffer> listeners,
                          std::chrono::milliseconds timeout) {
  if (state() != UpgradeState::Idle) {
    if (state() == UpgradeState::HandedOver)
      return Error{"busy: this generation already handed over to pid " + std::to_string(pid_)};
    return Error{std::string("busy: an upgrade is already in progress (") + to_string(state()) + ")"};
  }
  auto pair = HandoffChannel::create_pair();
  if (!pair) return pair.error();
  auto [ours, theirs] = std::move(pair).value();

  std::vector<std::string> argv{spec.binary};
  argv.insert(argv.end(), spec.args.begin(), spec.args.end());
  std::vector<std::string> env;
  for (const auto& kv : spec.env)
    if (!kv.starts_with(spec.channel_variable + "=")) env.push_back(kv);
  env.push_back(spec.channel_variable + "=" + std::to_string(kChildChannelFd));
  auto c_argv = c_strings(argv);
  auto c_env = c_strings(env);

  uv_stdio_container_t stdio[kChildChannelFd + 1];
  for (int i = 0; i < kChildChannelFd; ++i) {
    stdio[i].flags = UV_INHERIT_FD;
    stdio[i].data.fd = i;
  }
  stdio[kChildChannelFd].flags = UV_INHERIT_FD;
  stdio[kChildChannelFd].data.fd = theirs.get();

  uv_process_options_t options{};
  options.exit_cb = &Predecessor::on_exit;
  options.file = c_argv[0];
  options.args = c_argv.data();
  options.env = c_env.data();
  options.stdio_count = kChildChannelFd + 1;
  options.stdio = stdio;

  machine_.transition(UpgradeState::Spawning, "spawning " + spec.binary);
  exited_ = false;
  killed_ = false;
  failure_.clear();
  pid_ = 0;
  if (int rc = process_.spawn(loop_, this, &options); rc != 0) {
    process_.close();
    std::string reason = "spawn " + spec.binary + ": " + uv_strerror(rc);
    machine_.transition(UpgradeState::RollingBack, reason);
    machine_.transition(UpgradeState::Idle, "nothing to reap");
    return Error{reason};
  }
  pid_ = process_.get()->pid;
  // `theirs` closes here: the child holds its own copy now, and keeping ours
  // would hide the child's death (no EOF while we hold the other end).
  theirs.reset();
  channel_ = std::move(ours);
  offers_ = std::move(listeners);
  timeout_ = timeout;

  if (int rc = poll_.init(uv_poll_init, loop_, this, channel_.fd()); rc != 0) {
    fail(std::string("uv_poll_init on the hand-off channel: ") + uv_strerror(rc));
    return {};
  }
  uv_poll_start(poll_.get(), UV_READABLE | UV_DISCONNECT, &Predecessor::on_readable);
  deadline_.init(uv_timer_init, loop_, this);
  uv_timer_start(deadline_.get(), &Predecessor::on_deadline, static_cast<uint64_t>(timeout.count()), 0);
  spdlog::info("upgrade: spawned {} as pid {}", spec.binary, pid_);
  return {};
}

void Predecessor::cancel(const std::string& reason) {
  if (state() == UpgradeState::Spawning || state() == UpgradeState::AwaitingReady) fail(reason);
}

void Predecessor::on_readable(uv_poll_t* poll, int status, int) {
  auto* self = static_cast<Predecessor*>(poll->data);
  if (self->state() == UpgradeState::HandedOver) {
    if (status < 0) return self->lose_link(std::string("poll: ") + uv_strerror(status));
    while (self->channel_.open()) {
      auto got = self->channel_.try_receive();
      if (!got) return self->lose_link(got.error().message);
      if (!got.value()) return;
      self->handle_link_message(*got.value());
    }
    return;
  }
  if (status < 0) {
    // libuv reports POLLERR as UV_EBADF: the peer is usually dying; let its
    // exit status name the fault if it comes in time.
    self->fail(std::string("hand-off channel: poll error (") + uv_strerror(status) + ")", /*let_it_exit=*/true);
    return;
  }
  // Drain every queued message: a READY may sit behind a HELLO.
  while (self->channel_.open()) {
    auto got = self->channel_.try_receive();
    if (!got) {
      // A closed channel usually means the new process is exiting: give it a
      // moment, so the outcome can name its exit status rather than the EOF.
      self->fail("hand-off channel: " + got.error().message, /*let_it_exit=*/true);
      return;
    }
    if (!got.value()) return;
    self->handle_message(*got.value());
  }
}

void Predecessor::handle_message(Message& m) {
  if (!m.fds.empty()) {
    fail(std::string(to_string(m.type)) + " from the new process carries unexpected fds");
    return;
  }
  if (state() == UpgradeState::Spawning && m.type == MessageType::Hello) {
    auto hello = decode_hello(m.payload);
    if (!hello) return fail("bad HELLO: " + hello.error().message);
    if (hello->version != kProtocolVersion)
      return fail("HELLO speaks protocol version " + std::to_string(hello->version) + ", this one speaks " +
                  std::to_string(kProtocolVersion));
    if (static_cast<pid_t>(hello->pid) != pid_)
      return fail("HELLO names pid " + std::to_string(hello->pid) + ", spawned pid " + std::to_string(pid_));
    if (auto st = handoff::send_listeners(channel_, offers_); !st) return fail(st.error().message, /*let_it_exit=*/true);
    machine_.transition(UpgradeState::AwaitingReady,
                        "HELLO from pid " + std::to_string(pid_) + ", sent " + std::to_string(offers_.size()) + " listeners");
    return;
  }
  if (state() == UpgradeState::AwaitingReady && m.type == MessageType::Ready) {
    auto ready = decode_ready(m.payload);
    if (!ready) return fail("bad READY: " + ready.error().message);
    if (static_cast<pid_t>(ready->pid) != pid_)
      return fail("READY names pid " + std::to_string(ready->pid) + ", spawned pid " + std::to_string(pid_));
    if (auto st = channel_.send(MessageType::Commit, {}); !st)
      return fail("sending COMMIT: " + st.error().message, /*let_it_exit=*/true);
    auto elapsed = machine_.since_start();
    // The channel stays open: DRAINING reports and, with `drain = handoff`,
    // client connections go over it until this process exits.
    deadline_.close();
    machine_.transition(UpgradeState::HandedOver, "READY from pid " + std::to_string(pid_));
    on_outcome_(UpgradeOutcome{true, pid_, {}, elapsed});
    return;
  }
  fail(std::string("unexpected ") + to_string(m.type) + " in state " + to_string(state()));
}

void Predecessor::on_deadline(uv_timer_t* timer) {
  auto* self = static_cast<Predecessor*>(timer->data);
  if (self->state() == UpgradeState::RollingBack) {
    self->kill_successor();
    return;
  }
  self->fail("no READY within " + std::to_string(self->timeout_.count()) + " ms");
}

void Predecessor::fail(const std::string& reason, bool let_it_exit) {
  if (state() != UpgradeState::Spawning && state() != UpgradeState::AwaitingReady) return;
  failure_ = reason;
  stop_channel();
  machine_.transition(UpgradeState::RollingBack, reason);
  if (exited_) {
    finish_rollback("already exited");
    return;
  }
  if (!let_it_exit) {
    kill_successor();
    return;
  }
  deadline_.init(uv_timer_init, loop_, this);
  uv_timer_start(deadline_.get(), &Predecessor::on_deadline, static_cast<uint64_t>(kExitGrace.count()), 0);
}

void Predecessor::kill_successor() {
  // It never received COMMIT, so it has accepted no client: killing it loses nothing.
  killed_ = true;
  if (process_ && !exited_) uv_process_kill(process_.get(), SIGKILL);
}

void Predecessor::on_exit(uv_process_t* process, int64_t exit_status, int term_signal) {
  auto* self = static_cast<Predecessor*>(process->data);
  self->exited_ = true;
  const std::string how = describe_exit(exit_status, term_signal);
  const pid_t pid = self->pid_;
  self->process_.close();
  switch (self->state()) {
    case UpgradeState::Spawning:
    case UpgradeState::AwaitingReady:
      self->fail("new process pid " + std::to_string(pid) + " exited before READY with " + how);
      break;
    case UpgradeState::RollingBack:
      // It died on its own while we waited: its exit status says more than
      // the closed channel did.
      if (!self->killed_) self->failure_ = "new process pid " + std::to_string(pid) + " exited before READY with " + how;
      self->finish_rollback(how);
      break;
    case UpgradeState::HandedOver:
      spdlog::info("upgrade: successor pid {} exited with {}", pid, how);
      if (self->on_successor_exit_)
        self->on_successor_exit_(pid, exit_status == 0 && term_signal == 0, self->superseded_, how);
      break;
    case UpgradeState::Idle:
      break;
  }
}

void Predecessor::finish_rollback(const std::string& how_it_ended) {
  auto elapsed = machine_.since_start();
  machine_.transition(UpgradeState::Idle, "new process pid " + std::to_string(pid_) + " reaped (" + how_it_ended + ")");
  UpgradeOutcome outcome{false, pid_, failure_, elapsed};
  offers_.clear();
  on_outcome_(outcome);
}

void Predecessor::on_link(AckCallback on_acks, LostCallback on_lost) {
  on_acks_ = std::move(on_acks);
  on_lost_ = std::move(on_lost);
}

Status Predecessor::send_connections(const std::vector<ConnectionOffer>& offers) {
  if (state() != UpgradeState::HandedOver || !channel_.open()) return Error{"no successor to hand connections to"};
  if (auto st = handoff::send_connections(channel_, offers); !st) {
    lose_link(st.error().message);
    return st;
  }
  return {};
}

void Predecessor::handle_link_message(Message& m) {
  if (m.type == MessageType::Succeeded && m.fds.empty() && m.payload.empty()) {
    superseded_ = true;
    spdlog::info("upgrade: successor pid {} has handed over to a newer generation", pid_);
    if (on_superseded_) on_superseded_();
    return;
  }
  if (m.type != MessageType::ConnectionsAck || !m.fds.empty())
    return lose_link(std::string("unexpected ") + to_string(m.type) + " from the successor");
  auto acks = decode_connections_ack(m.payload);
  if (!acks) return lose_link("bad CONNECTIONS_ACK: " + acks.error().message);
  if (on_acks_) on_acks_(acks.value());
}

void Predecessor::lose_link(const std::string& why) {
  if (!channel_.open()) return;
  poll_.close();
  channel_.close();
  spdlog::info("upgrade: link to successor pid {} closed ({})", pid_, why);
  if (on_lost_) on_lost_(why);
}

Status Predecessor::resume() {
  if (state() != UpgradeState::HandedOver || !exited_) return Error{"no dead successor to resume from"};
  poll_.close();
  channel_.close();
  machine_.transition(UpgradeState::Idle, "successor pid " + std::to_string(pid_) + " died; serving again");
  superseded_ = false;
  return {};
}

Status Predecessor::report_draining(const std::vector<GenerationReport>& reports) {
  if (state() != UpgradeState::HandedOver || !channel_.open()) return Error{"no successor to report to"};
  if (auto st = channel_.send(MessageType::Draining, encode(reports)); !st) {
    lose_link(st.error().message);  // the successor is gone; nobody to tell any more
    return st;
  }
  return {};
}

void Predecessor::stop_channel() {
  poll_.close();
  deadline_.close();
  channel_.close();
}

}  // namespace baton::handoff
