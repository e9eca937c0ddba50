#include "baton/upgrader.h"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>

#include <spdlog/spdlog.h>

#include "baton/handoff/executable_path.h"
#include "baton/handoff/listener_socket.h"
#include "baton/handoff/systemd_notify.h"

extern char** environ;

namespace baton {
namespace {

constexpr const char* kChannelVariable = "BATON_HANDOFF_FD";
constexpr const char* kGenerationVariable = "BATON_GENERATION";

unsigned generation_from_environment() {
  const char* v = std::getenv(kGenerationVariable);
  unsigned g = 0;
  if (!v) return 1;
  auto [end, ec] = std::from_chars(v, v + std::char_traits<char>::length(v), g);
  return ec == std::errc() && *end == '\0' && g > 0 ? g : 1;
}

Result<UniqueFd> duplicate(int fd) {
  int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) return handoff::errno_error("fcntl(F_DUPFD_CLOEXEC)");
  return UniqueFd(copy);
}

}  // namespace

Upgrader::Upgrader(uv_loop_t* loop, UpgraderEvents events, UpgraderOptions options)
    : loop_(loop), events_(std::move(events)), options_(std::move(options)), generation_(generation_from_environment()) {}

Upgrader::~Upgrader() = default;

Result<std::unique_ptr<Upgrader>> Upgrader::create(uv_loop_t* loop, int argc, char** argv, UpgraderEvents events,
                                                   UpgraderOptions options) {
  if (!events.stop_accepting || !events.upgraded || !events.failed)
    return Error{"baton::Upgrader: the stop_accepting, upgraded and failed callbacks are required"};
  std::string binary_error;
  if (options.binary.empty()) {
    // A server that cannot find itself still serves; its upgrades say why they cannot start.
    auto binary = argc >= 1 && argv && argv[0] ? handoff::resolve_executable(argv[0])
                                               : Result<std::string>(Error{"no argv[0] to find the binary by"});
    if (binary) options.binary = std::move(binary).value();
    else binary_error = binary.error().message;
  }
  if (!options.args) options.args = std::vector<std::string>(argv + std::min(argc, 1), argv + argc);
  std::unique_ptr<Upgrader> up(new Upgrader(loop, std::move(events), std::move(options)));
  up->binary_error_ = std::move(binary_error);

  // The signal first: one that comes while we take over must not kill us.
  if (up->options_.upgrade_signal != 0) {
    if (int rc = up->signal_.init(uv_signal_init, loop, up.get()); rc != 0)
      return Error{std::string("uv_signal_init: ") + uv_strerror(rc)};
    if (int rc = uv_signal_start(up->signal_.get(), &Upgrader::on_signal, up->options_.upgrade_signal); rc != 0)
      return Error{std::string("uv_signal_start: ") + uv_strerror(rc)};
  }
  auto successor = handoff::Successor::from_environment(kChannelVariable);
  if (!successor) return handoff::with_context("hand-off", successor.error());
  if (successor.value()) {
    up->successor_ = std::move(successor).value();
    // Our parent is the predecessor, alive: it is about to answer our HELLO.
    up->predecessor_process_ = handoff::ProcessHandle::open(::getppid());
    auto got = up->successor_->take_listeners(up->options_.ready_timeout);
    if (!got) return handoff::with_context("hand-off", got.error());
    up->inherited_ = std::move(got).value();
    spdlog::info("hand-off: pid {} generation {} received {} listener(s)", ::getpid(), up->generation_,
                 up->inherited_.size());
  }
  up->predecessor_ = std::make_unique<handoff::Predecessor>(
      loop, handoff::PredecessorEvents{
                .before_commit = [self = up.get()](pid_t pid) { return self->before_commit(pid); },
                .committed = [self = up.get()](pid_t pid) { self->on_committed(pid); },
                .outcome = [self = up.get()](const handoff::UpgradeOutcome& o) { self->on_outcome(o); },
                .successor_exit = [self = up.get()](pid_t pid, bool clean, bool superseded,
                                                    const std::string& how) {
                  self->on_successor_exit(pid, clean, superseded, how);
                },
                .succeeded =
                    [self = up.get()](pid_t pid) {
                      // Every older generation must know every newer one.
                      if (self->link_)
                        if (auto st = self->link_->relay_succeeded(pid); !st)
                          spdlog::warn("hand-off: could not tell the previous generation of pid {}: {}", pid,
                                       st.error().message);
                    },
                .progress = {},
                .successor_state = {},
            });
  return up;
}

Result<UniqueFd> Upgrader::listener(const std::string& name, const std::string& address) {
  if (state_ == State::Closed) return Error{"listener '" + name + "': the upgrader is closed"};
  if (auto st = handoff::validate_listener_name(name); !st) return st.error();
  auto configured = handoff::ListenAddress::parse(address);
  if (!configured) return handoff::with_context("listener '" + name + "'", configured.error());
  for (auto& l : listeners_) {
    if (l.name != name) continue;
    if (l.configured != *configured)
      return Error{"listener '" + name + "' is open at " + l.configured.to_string() + ", not " + address};
    return duplicate(l.fd.get());
  }
  if (state_ != State::Starting) return Error{"listener '" + name + "': new listeners only before ready()"};
  OwnListener own{name, *configured, {}, {}};
  for (auto& in : inherited_) {
    if (in.fd && in.name == name && in.configured == *configured) {
      own.bound = in.bound;
      own.fd = std::move(in.fd);
      own.inherited = true;
      break;
    }
  }
  if (!own.fd) {
    auto fd = handoff::bind_listener(*configured, options_.backlog);
    if (!fd) return handoff::with_context("listener '" + name + "'", fd.error());
    auto bound = handoff::local_address(fd->get());
    if (!bound) return handoff::with_context("listener '" + name + "'", bound.error());
    own.fd = std::move(fd).value();
    own.bound = std::move(bound).value();
  } else if (int flags = ::fcntl(own.fd.get(), F_GETFL); flags < 0 || ::fcntl(own.fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return handoff::with_context("listener '" + name + "'", handoff::errno_error("fcntl(O_NONBLOCK)"));
  }
  auto copy = duplicate(own.fd.get());
  if (!copy) return copy;
  spdlog::info("listening name={} addr={} inherited={} pid={} generation={}", name, own.bound.endpoint(),
               own.inherited ? "yes" : "no", ::getpid(), generation_);
  listeners_.push_back(std::move(own));
  return copy;
}

Result<handoff::ListenAddress> Upgrader::bound_address(const std::string& name) const {
  for (const auto& l : listeners_)
    if (l.name == name) return l.bound;
  return Error{"no listener named '" + name + "'"};
}

Status Upgrader::ready() {
  if (state_ != State::Starting) return Error{state_ == State::Closed ? "the upgrader is closed" : "ready() was called already"};
  if (successor_) {
    for (auto& in : inherited_)
      if (in.fd) spdlog::info("listener {} ({}) was not asked for; closed it", in.name, in.bound.to_string());
    inherited_.clear();
    // After COMMIT the predecessor accepts no more: only then may we.
    if (auto st = successor_->confirm_ready(options_.ready_timeout); !st) return handoff::with_context("hand-off", st.error());
    const uint16_t version = successor_->version();
    link_ = std::make_unique<handoff::PredecessorLink>(
        loop_, successor_->take_channel(), version, [](const std::vector<handoff::GenerationReport>&) {},
        [this](const handoff::ConnectionEntry& entry, UniqueFd fd) {
          return state_ != State::Closed && events_.adopt && events_.adopt(std::move(fd), entry.kind);
        },
        [](const std::string& why) {
          if (why != "closed") spdlog::warn("hand-off: link to the previous generation: {}", why);
        });
    successor_.reset();
    if (auto st = link_->notify_serving(); !st)
      spdlog::warn("hand-off: could not tell the previous generation we serve: {}", st.error().message);
  }
  state_ = State::Serving;
  notify("READY=1\nMAINPID=" + std::to_string(::getpid()) + "\nSTATUS=serving as generation " +
                 std::to_string(generation_));
  spdlog::info("serving pid={} generation={}", ::getpid(), generation_);
  return {};
}

Status Upgrader::upgrade() {
  auto refuse = [](const std::string& why) -> Status {
    spdlog::warn("upgrade refused: {}", why);
    return Error{why};
  };
  switch (state_) {
    case State::Starting: return refuse("not ready yet");
    case State::Upgrading:
    case State::Probation: return refuse("an upgrade is in flight");
    case State::Upgraded: return refuse("this generation was upgraded already");
    case State::Closed: return refuse("the upgrader is closed");
    case State::Serving: break;
  }
  if (predecessor_->state() != handoff::UpgradeState::Idle)
    return refuse(std::string("busy: ") + handoff::to_string(predecessor_->state()));
  if (options_.binary.empty()) return refuse("no binary to start: " + binary_error_);
  handoff::SpawnSpec spec;
  spec.binary = options_.binary;
  spec.args = *options_.args;
  spec.channel_variable = kChannelVariable;
  const std::string gen_prefix = std::string(kGenerationVariable) + "=";
  for (char** e = environ; *e; ++e)
    if (!std::string_view(*e).starts_with(gen_prefix)) spec.env.emplace_back(*e);
  spec.env.push_back(gen_prefix + std::to_string(generation_ + 1));
  std::vector<handoff::ListenerOffer> offers;
  for (const auto& l : listeners_)
    offers.push_back({l.name, l.configured.to_string(), l.bound.to_string(), l.fd.get()});
  spdlog::info("upgrade: pid {} generation {} starts {} as generation {}", ::getpid(), generation_, spec.binary,
               generation_ + 1);
  if (auto st = predecessor_->start(spec, std::move(offers), {options_.ready_timeout, options_.probation}); !st) {
    spdlog::error("upgrade failed, nothing started, still serving: {}", st.error().message);
    return st;
  }
  state_ = State::Upgrading;
  return {};
}

Status Upgrader::before_commit(pid_t pid) {
  // Told before COMMIT, not after: should we die between the two, our
  // predecessor must not resume beside a generation that may be serving.
  if (link_ && predecessor_process_.alive()) {
    if (link_->broken())
      return Error{"the previous generation (pid " + std::to_string(predecessor_process_.pid()) +
                   ") lives, but its hand-off channel is closed: it could resume beside the new generation"};
    return link_->notify_succeeded(pid);
  }
  return {};
}

void Upgrader::on_committed(pid_t pid) {
  state_ = State::Probation;
  // Before this process exits: systemd must follow the main pid to the new one.
  notify("MAINPID=" + std::to_string(pid) + "\nSTATUS=handed off to pid " + std::to_string(pid));
  spdlog::info("upgrade: pid {} accepts as generation {}; pid {} stops accepting", pid, generation_ + 1, ::getpid());
  events_.stop_accepting();
}

void Upgrader::on_outcome(const handoff::UpgradeOutcome& outcome) {
  if (state_ == State::Closed) return;
  if (!outcome.ok) {
    spdlog::error("upgrade to pid {} failed{}, pid {} generation {} serves on: {}", outcome.pid,
                  outcome.committed ? " in its probation" : "", ::getpid(), generation_, outcome.reason);
    return serve_again(outcome.reason, outcome.committed);
  }
  state_ = State::Upgraded;
  spdlog::info("upgrade: pid {} serves as generation {}; pid {} finishes", outcome.pid, generation_ + 1, ::getpid());
  events_.upgraded();
}

void Upgrader::on_successor_exit(pid_t pid, bool clean, bool superseded, const std::string& how) {
  if (superseded) {
    // What it adopted from us it may have passed on: close our copies only.
    // (Settling the hand-off lets a close() in waiting go on.)
    if (connection_handoff_) connection_handoff_->abandon_unknown();
    return;
  }
  if (clean || state_ == State::Closed) {
    // What it never answered for, it cannot be serving: ours again. Closing,
    // we do not listen again, but serve those to their end.
    connection_handoff_.reset();
    if (state_ == State::Closed) schedule_teardown();
    return;
  }
  spdlog::critical("successor pid {} died with {} after taking over; pid {} generation {} serves again", pid, how,
                   ::getpid(), generation_);
  if (auto st = predecessor_->resume(); !st) spdlog::error("resume: {}", st.error().message);
  serve_again("successor pid " + std::to_string(pid) + " died with " + how, true);
}

void Upgrader::serve_again(const std::string& why, bool listen_again) {
  state_ = State::Serving;
  // systemd follows the main pid back (it had been told the successor's at COMMIT).
  notify((listen_again ? "MAINPID=" + std::to_string(::getpid()) + "\n" : std::string()) +
         "STATUS=upgrade failed, serving on: " + why);
  // Told first: the connections given back next (cancel_handoff) are served
  // by a process that serves again, not one that finishes.
  events_.failed(why, listen_again);
  // Every connection not handed off yet, those of unknown fate included, is
  // ours alone again: the successor is dead. (A close() from `failed` or from
  // a cancel_handoff settles nothing more: the teardown follows.)
  connection_handoff_.reset();
  if (state_ == State::Closed) schedule_teardown();
}

Status Upgrader::hand_off(const std::vector<HandoffConnection*>& connections) {
  if (state_ != State::Upgraded) return Error{"hand_off: only after `upgraded`"};
  if (connection_handoff_) return Error{"hand_off: once per upgrade"};
  auto* link = predecessor_->successor();
  if (!link) return Error{"hand_off: the successor is gone"};
  connection_handoff_ = std::make_unique<handoff::ConnectionHandoff>(loop_, *link, options_.flush_bound);
  connection_handoff_->start(connections);
  return {};
}

pid_t Upgrader::successor_pid() const { return predecessor_ ? predecessor_->successor_pid() : 0; }

void Upgrader::on_signal(uv_signal_t* handle, int) {
  auto* self = static_cast<Upgrader*>(handle->data);
  if (self->state_ == State::Closed) return spdlog::info("upgrade signal ignored: pid {} is closing", ::getpid());
  (void)self->upgrade();  // refusals and failures are logged
}

void Upgrader::close() {
  if (state_ == State::Closed) return;
  const bool uncommitted = state_ == State::Upgrading;
  state_ = State::Closed;
  // Kept, but no longer keeping the loop alive: closing it would give the
  // signal back its default action, and a late SIGUSR2 would kill a process
  // that is still finishing its connections. It goes with the Upgrader.
  if (signal_) uv_unref(signal_.handle());
  // Killed (SIGKILL), and no callback of it runs any more: it cannot commit now.
  if (uncommitted) predecessor_->close();
  // Tearing a hand-off down now would serve here again connections the
  // successor may hold already: it settles first.
  if (connection_handoff_ && !connection_handoff_->settled()) {
    connection_handoff_->on_settled([this] { schedule_teardown(); });
    return;
  }
  schedule_teardown();
}

void Upgrader::schedule_teardown() {
  // Not from inside a callback of what is being destroyed: on a later turn.
  if (close_timer_) return;
  if (close_timer_.init(uv_timer_init, loop_, this) == 0)
    uv_timer_start(close_timer_.get(), &Upgrader::on_close_timer, 0, 0);
}

void Upgrader::notify(const std::string& message) const {
  if (options_.notify_systemd) handoff::notify_systemd(message);
}

void Upgrader::on_close_timer(uv_timer_t* timer) {
  auto* self = static_cast<Upgrader*>(timer->data);
  self->connection_handoff_.reset();
  self->predecessor_.reset();
  self->link_.reset();
  self->successor_.reset();
  self->listeners_.clear();
  self->close_timer_.close();
}

}  // namespace baton
