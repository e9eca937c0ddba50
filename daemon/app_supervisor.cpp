#include "app_supervisor.h"

#include <signal.h>

#include <spdlog/spdlog.h>

#include <algorithm>

#include <sstream>

#include "elapsed.h"
#include "inherited_fds.h"
#include "text_file.h"

namespace baton::daemon {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kFirstBackoff{100};
constexpr milliseconds kMaxBackoff{10000};
// An instance that served this long before dying starts the backoff afresh.
constexpr milliseconds kStableAfter{10000};
// How far up the process tree a notification's sender may be from an instance.
constexpr int kMaxDepth = 32;

std::string seconds(milliseconds ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g s", static_cast<double>(ms.count()) / 1000.0);
  return buf;
}

// The pid a pidfd refers to, from /proc/self/fdinfo (0 if unknown, -1 if it has exited).
pid_t pid_of_pidfd(int fd) {
  auto text = read_text_file("/proc/self/fdinfo/" + std::to_string(fd));
  std::istringstream info(text ? text.value() : std::string());
  for (std::string line; std::getline(info, line);)
    if (line.starts_with("Pid:")) return static_cast<pid_t>(std::atol(line.c_str() + 4));
  return 0;
}

// The parent of `pid` from /proc (0 if it is gone).
pid_t parent_of(pid_t pid) {
  auto read = read_text_file("/proc/" + std::to_string(pid) + "/stat");
  if (!read || read->empty()) return 0;
  const std::string& text = read.value();
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
  const auto close = text.rfind(')');
  if (close == std::string::npos) return 0;
  char state = 0;
  long ppid = 0;
  if (std::sscanf(text.c_str() + close + 1, " %c %ld", &state, &ppid) != 2) return 0;
  return static_cast<pid_t>(ppid);
}

std::string with_tail(std::string reason, const AppInstance& instance) {
  const auto tail = instance.stderr_tail();
  if (!tail.empty()) reason += "; its last stderr lines:\n" + tail;
  return reason;
}

}  // namespace

AppSupervisor::AppSupervisor(uv_loop_t* loop, AppOptions options, std::vector<std::pair<std::string, int>> listeners,
                             AppEvents events)
    : loop_(loop), options_(std::move(options)), listeners_(std::move(listeners)), events_(std::move(events)) {}

AppSupervisor::~AppSupervisor() {
  // The instances live on: a batond that exits after handing over leaves the
  // app to its successor; one that stops has stopped them first.
  notify_.stop();
}

handoff::Status AppSupervisor::start() {
  auto notify = NotifySocket::create();
  if (!notify) return notify.error();
  notify_ = std::move(notify).value();
  if (auto st = notify_.start(loop_, [this](pid_t p, const NotifyFields& f) { on_notify(p, f); }); !st) return st;
  auto first = launch(options_.command);
  if (!first) {
    spdlog::error("app: could not start: {}; retrying with backoff", first.error().message);
    start_replacement(kFirstBackoff, "the first start failed");
    return {};
  }
  current_ = std::move(first).value();
  return {};
}

handoff::Result<std::unique_ptr<AppInstance>> AppSupervisor::launch(const std::vector<std::string>& command) {
  LaunchSpec spec{command, listeners_, notify_.address(), original_fd_limit()};
  auto instance = AppInstance::launch(loop_, spec, next_number_,
                                      [this](AppInstance& i, const std::string& how) { on_exit(i, how); });
  if (!instance) return instance.error();
  ++next_number_;
  std::string cmd;
  for (const auto& a : command) cmd += (cmd.empty() ? "" : " ") + a;
  spdlog::info("app: started pid {} (instance {}): {}; waiting for it to be ready ({})", instance.value()->pid(),
               instance.value()->number(), cmd,
               options_.ready_delay ? "delay " + std::to_string(options_.ready_delay->count()) + " ms" : "READY=1");
  watch_readiness(*instance.value());
  return instance;
}

void AppSupervisor::watch_readiness(AppInstance& instance) {
  if (options_.ready_delay) {
    instance.arm(*options_.ready_delay, [this, &instance] { on_ready(instance); });
    return;
  }
  instance.arm(options_.ready_timeout, [this, &instance] {
    const std::string why = "not ready within " + seconds(options_.ready_timeout);
    spdlog::error("app: pid {} {}: killing its process group", instance.pid(), why);
    if (&instance == candidate_.get()) candidate_failure_ = why;
    instance.kill_group();  // its exit follows, and decides what next
  });
}

AppInstance* AppSupervisor::instance_of(pid_t sender) {
  const auto all = instances();
  for (pid_t p = sender, depth = 0; p > 1 && depth < kMaxDepth; p = parent_of(p), ++depth)
    for (auto* i : all)
      if (i->pid() == p && !i->exited()) return i;
  return nullptr;
}

void AppSupervisor::on_notify(pid_t sender, const NotifyFields& fields) {
  auto* instance = instance_of(sender);
  if (!instance) {
    spdlog::warn("app: notification from pid {}, which is no instance of the app (nor under one): ignored", sender);
    return;
  }
  if (auto it = fields.find("STATUS"); it != fields.end()) instance->set_status_text(it->second);
  if (fields.count("STOPPING")) spdlog::info("app: pid {} says it is stopping", instance->pid());
  if (auto it = fields.find("READY"); it != fields.end() && it->second == "1" && !options_.ready_delay &&
                                      instance->state() == AppState::Starting)
    on_ready(*instance);
}

void AppSupervisor::on_ready(AppInstance& instance) {
  // Stopping: a late READY must not promote an instance told to stop (nor
  // cancel the deadline that kills it).
  if (mode_ != Mode::Running) return;
  instance.disarm();
  const double ms = ms_since(instance.started());
  if (&instance == candidate_.get()) {
    instance.set_state(AppState::Probation);
    spdlog::info("app: new pid {} ready after {:.1f} ms; probation {} before pid {} is stopped", instance.pid(), ms,
                 seconds(options_.probation), serving_pid());
    if (events_.progress) {
      auto e = nlohmann::json{{"v", 1}, {"event", "ready"}, {"pid", instance.pid()}, {"ms", ms}};
      events_.progress(e);
    }
    if (options_.probation.count() == 0) return on_probation_passed();
    instance.arm(options_.probation, [this] { on_probation_passed(); });
    return;
  }
  if (&instance == current_.get() && instance.state() == AppState::Starting) {
    instance.set_state(AppState::Serving);
    last_good_ = instance.command();
    spdlog::info("app: pid {} ready after {:.1f} ms; serving", instance.pid(), ms);
    if (events_.serving) events_.serving(instance.pid());
  }
}

void AppSupervisor::on_probation_passed() {
  auto next = std::move(candidate_);
  next->set_state(AppState::Serving);
  last_good_ = next->command();
  backoff_ = milliseconds(0);
  ++restarts_;
  auto old = std::move(current_);
  current_ = std::move(next);
  RestartOutcome outcome{true, current_->pid(), old ? old->pid() : 0, {}, ms_since(restart_started_)};
  spdlog::info("app: restart ({}) done after {:.1f} ms: pid {} passed its probation and serves", restart_trigger_,
               outcome.ms, outcome.pid);
  if (old) retire(std::move(old), "replaced by pid " + std::to_string(outcome.pid));
  if (events_.serving) events_.serving(outcome.pid);
  last_restart_ = {{"ok", true}, {"trigger", restart_trigger_}, {"pid", outcome.pid}, {"old_pid", outcome.old_pid},
                   {"ms", outcome.ms}};
  if (events_.outcome) events_.outcome(outcome);
}

void AppSupervisor::on_exit(AppInstance& instance, const std::string& how) {
  if (&instance == candidate_.get()) {
    auto failed = std::move(candidate_);
    std::string reason = candidate_failure_;
    if (reason.empty())
      reason = (failed->state() == AppState::Starting ? "exited before it was ready: " : "exited in probation: ") + how;
    else
      reason += " (" + how + ")";
    reason = "new pid " + std::to_string(failed->pid()) + " " + with_tail(reason, *failed);
    bury(std::move(failed));
    return fail_restart(reason);
  }
  if (&instance == current_.get()) {
    auto gone = std::move(current_);
    const bool stable = Clock::now() - gone->started() >= kStableAfter;
    bury(std::move(gone));
    if (mode_ == Mode::Stopping) return check_stopped();
    ++crashes_;
    if (stable) backoff_ = milliseconds(0);
    spdlog::error("app: pid {} exited on its own ({}); the listeners stay open, clients wait in the backlog",
                  instance.pid(), with_tail(how, instance));
    if (candidate_) {
      spdlog::info("app: the restart in progress (pid {}) replaces it", candidate_->pid());
      return;
    }
    const auto delay = backoff_;
    backoff_ = std::clamp(backoff_ * 2, kFirstBackoff, kMaxBackoff);
    return start_replacement(delay, "pid " + std::to_string(instance.pid()) + " exited");
  }
  for (auto it = retiring_.begin(); it != retiring_.end(); ++it) {
    if (it->get() != &instance) continue;
    spdlog::info("app: old pid {} exited ({})", instance.pid(), how);
    auto gone = std::move(*it);
    retiring_.erase(it);
    bury(std::move(gone));
    return check_stopped();
  }
}

void AppSupervisor::fail_restart(const std::string& reason) {
  ++failures_;
  const pid_t serving = serving_pid();
  spdlog::error("app: restart ({}) failed after {:.1f} ms: {}; {}", restart_trigger_, ms_since(restart_started_),
                reason, serving ? "pid " + std::to_string(serving) + " serves on" : std::string("no instance serves"));
  RestartOutcome outcome{false, 0, serving, reason, ms_since(restart_started_)};
  last_restart_ = {{"ok", false}, {"trigger", restart_trigger_}, {"error", reason}, {"ms", outcome.ms}};
  candidate_failure_.clear();
  if (events_.outcome) events_.outcome(outcome);
  if (mode_ == Mode::Stopping) return check_stopped();
  // The old one died meanwhile: the last good command, at once.
  if (mode_ == Mode::Running && !current_ && !candidate_) start_replacement(milliseconds(0), "the restart failed");
}

void AppSupervisor::retire(std::unique_ptr<AppInstance> instance, const std::string& why) {
  instance->set_state(AppState::Stopping);
  spdlog::info("app: stopping pid {} with {} ({}); its process group is killed in {} if it lingers", instance->pid(),
               signal_to_string(options_.stop_signal), why, seconds(options_.drain_timeout));
  if (!instance->signal(options_.stop_signal)) instance->kill_group();
  AppInstance* raw = instance.get();
  instance->arm(options_.drain_timeout, [raw] {
    spdlog::warn("app: pid {} still runs at the drain timeout: SIGKILL to its process group", raw->pid());
    raw->kill_group();
  });
  retiring_.push_back(std::move(instance));
}

void AppSupervisor::bury(std::unique_ptr<AppInstance> instance) {
  // Not destroyed here: we are inside one of its callbacks.
  dead_.push_back(std::move(instance));
  if (!reaper_ && reaper_.init(uv_timer_init, loop_, this) != 0) return;
  uv_timer_start(reaper_.get(), [](uv_timer_t* t) { static_cast<AppSupervisor*>(t->data)->dead_.clear(); }, 0, 0);
}

void AppSupervisor::set_held(bool held) {
  if (held_ == held) return;
  held_ = held;
  if (!held_ && mode_ == Mode::Running && !current_ && !candidate_)
    start_replacement(milliseconds(0), "the previous batond generation has exited");
}

void AppSupervisor::start_replacement(milliseconds after, const std::string& why) {
  if (mode_ != Mode::Running) return;
  if (held_) {
    spdlog::warn("app: no instance serves ({}); a new one starts once the previous batond generation has exited", why);
    return;
  }
  spdlog::info("app: starting a new instance in {} ms ({})", after.count(), why);
  if (!replacement_ && replacement_.init(uv_timer_init, loop_, this) != 0) return;
  uv_timer_start(replacement_.get(), [](uv_timer_t* t) { static_cast<AppSupervisor*>(t->data)->on_replacement_due(); },
                 static_cast<uint64_t>(after.count()), 0);
}

void AppSupervisor::on_replacement_due() {
  if (mode_ != Mode::Running || held_ || current_ || candidate_) return;
  auto instance = launch(last_good_.empty() ? options_.command : last_good_);
  if (!instance) {
    const auto delay = std::clamp(backoff_, kFirstBackoff, kMaxBackoff);
    backoff_ = std::clamp(backoff_ * 2, kFirstBackoff, kMaxBackoff);
    spdlog::error("app: could not start: {}", instance.error().message);
    return start_replacement(delay, "the start failed");
  }
  current_ = std::move(instance).value();
}

handoff::Status AppSupervisor::restart(const std::string& trigger) {
  auto refuse = [&](const std::string& why) -> handoff::Status {
    spdlog::warn("app: restart ({}) refused: {}", trigger, why);
    return handoff::Error{why};
  };
  if (mode_ == Mode::Paused) return refuse("this batond generation handed over to a newer one");
  if (mode_ == Mode::Stopping) return refuse("batond is stopping");
  if (held_) return refuse("the previous batond generation is still on probation (it could resume); restart once it has exited");
  if (candidate_) return refuse("a restart is in progress already (new pid " + std::to_string(candidate_->pid()) + ")");
  restart_trigger_ = trigger;
  restart_started_ = Clock::now();
  candidate_failure_.clear();
  auto instance = launch(options_.command);
  if (!instance) {
    ++failures_;
    last_restart_ = {{"ok", false}, {"trigger", trigger}, {"error", instance.error().message}, {"ms", 0}};
    return refuse("starting the new instance: " + instance.error().message);
  }
  if (replacement_) uv_timer_stop(replacement_.get());  // the restart replaces whatever died
  candidate_ = std::move(instance).value();
  if (events_.progress) {
    events_.progress({{"v", 1},
                      {"event", "spawned"},
                      {"pid", candidate_->pid()},
                      {"timeout_ms", (options_.ready_delay.value_or(options_.ready_timeout) + options_.probation).count()}});
  }
  return {};
}

void AppSupervisor::stop() {
  if (mode_ == Mode::Stopping) return;
  const bool paused = mode_ == Mode::Paused;
  mode_ = Mode::Stopping;
  if (replacement_) uv_timer_stop(replacement_.get());
  // Paused for a hand-off that failed: watched again, so that their exits count.
  if (paused)
    for (auto* i : instances()) i->resume();
  if (candidate_) {
    candidate_failure_ = "was told to stop: batond is stopping";
    candidate_->signal(options_.stop_signal);
    AppInstance* raw = candidate_.get();
    candidate_->arm(options_.drain_timeout, [raw] { raw->kill_group(); });
  }
  if (current_) retire(std::move(current_), "batond is stopping");
  check_stopped();
}

void AppSupervisor::force() {
  for (auto* i : instances()) i->kill_group();
}

void AppSupervisor::check_stopped() {
  if (mode_ != Mode::Stopping || any_alive() || stopped_reported_) return;
  stopped_reported_ = true;
  if (events_.stopped) events_.stopped();
}

bool AppSupervisor::any_alive() const { return current_ || candidate_ || !retiring_.empty(); }

std::vector<AppInstance*> AppSupervisor::instances() const {
  std::vector<AppInstance*> all;
  if (current_) all.push_back(current_.get());
  if (candidate_) all.push_back(candidate_.get());
  for (const auto& r : retiring_) all.push_back(r.get());
  return all;
}

void AppSupervisor::close() {
  notify_.stop();
  replacement_.close();
  reaper_.close();
  for (auto* i : instances()) i->close();
  for (auto& i : dead_) i->close();
}

void AppSupervisor::pause() {
  if (mode_ != Mode::Running) return;
  mode_ = Mode::Paused;
  notify_.stop();
  if (replacement_) uv_timer_stop(replacement_.get());
  for (auto* i : instances()) i->pause();
}

void AppSupervisor::resume() {
  if (mode_ != Mode::Paused) return;
  mode_ = Mode::Running;
  if (auto st = notify_.start(loop_, [this](pid_t p, const NotifyFields& f) { on_notify(p, f); }); !st)
    spdlog::error("app: {}; readiness notifications are lost", st.error().message);
  // An exit seen while paused is handled now (it may bury the instance:
  // the pointers stay valid until the next loop turn).
  for (auto* i : instances()) i->resume();
  if (mode_ == Mode::Running && !current_ && !candidate_) start_replacement(milliseconds(0), "none serves after resuming");
}

handoff::Result<handoff::StateOffer> AppSupervisor::state() const {
  if (candidate_) return handoff::Error{"an app restart is in progress (new pid " + std::to_string(candidate_->pid()) + ")"};
  // The new batond could not tell when it is ready: it would have to time
  // its readiness without knowing when it started.
  if (current_ && current_->state() == AppState::Starting)
    return handoff::Error{"the app's instance pid " + std::to_string(current_->pid()) + " is not ready yet"};
  handoff::StateOffer offer{kAppStateKey, {}, {notify_.fd()}};
  nlohmann::json instances = nlohmann::json::array();
  auto index_of = [&offer](int fd) -> int {
    if (fd < 0) return -1;
    offer.fds.push_back(fd);
    return static_cast<int>(offer.fds.size()) - 1;
  };
  std::vector<AppInstance*> handed;
  if (current_) handed.push_back(current_.get());
  for (const auto& r : retiring_) handed.push_back(r.get());
  for (auto* i : handed) {
    const auto fds = i->fds();
    const auto left = i->deadline_left();
    instances.push_back({{"pid", i->pid()},
                         {"number", i->number()},
                         {"state", to_string(i->state())},
                         {"status", i->status_text()},
                         {"command", i->command()},
                         {"deadline_left_ms", left ? left->count() : -1},
                         {"uptime_ms", static_cast<long long>(ms_since(i->started()))},
                         {"pidfd", index_of(fds[0])},
                         {"stdout", index_of(fds[1])},
                         {"stderr", index_of(fds[2])}});
  }
  nlohmann::json j{{"v", 1},           {"notify", 0},          {"instances", instances},
                   {"next_number", next_number_}, {"restarts", restarts_}, {"failures", failures_},
                   {"crashes", crashes_}, {"last_good", last_good_}};
  offer.data = j.dump();
  if (offer.fds.size() > handoff::kMaxFdsPerMessage) return handoff::Error{"too many app instances to hand over"};
  return offer;
}

handoff::Status AppSupervisor::adopt(const std::string& data, std::vector<handoff::UniqueFd> fds) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(data);
  } catch (const nlohmann::json::exception& e) {
    return handoff::Error{std::string("app state: invalid JSON: ") + e.what()};
  }
  auto take = [&fds](const nlohmann::json& index, const char* what) -> handoff::Result<handoff::UniqueFd> {
    if (!index.is_number_integer()) return handoff::Error{std::string("app state: '") + what + "' is not an fd index"};
    const auto i = index.get<long long>();
    if (i == -1) return handoff::UniqueFd{};
    if (i < 0 || static_cast<size_t>(i) >= fds.size() || !fds[i])
      return handoff::Error{std::string("app state: '") + what + "' names fd index " + std::to_string(i) +
                            ", which is missing or used twice"};
    return std::move(fds[i]);
  };
  try {
    if (j.value("v", 0) != 1) return handoff::Error{"app state: unknown version"};
    auto notify_fd = take(j.at("notify"), "notify");
    if (!notify_fd) return notify_fd.error();
    auto notify = NotifySocket::adopt(std::move(notify_fd).value());
    if (!notify) return handoff::Error{"app state: notify socket: " + notify.error().message};
    notify_ = std::move(notify).value();
    next_number_ = j.at("next_number").get<uint64_t>();
    restarts_ = j.at("restarts").get<uint64_t>();
    failures_ = j.at("failures").get<uint64_t>();
    crashes_ = j.at("crashes").get<uint64_t>();
    last_good_ = j.at("last_good").get<std::vector<std::string>>();
    for (const auto& e : j.at("instances")) {
      AppInstance::Handed h;
      h.pid = e.at("pid").get<pid_t>();
      if (h.pid <= 1) return handoff::Error{"app state: instance pid " + std::to_string(h.pid) + " is not an app's"};
      h.uptime_ms = e.value("uptime_ms", 0LL);
      h.number = e.at("number").get<uint64_t>();
      const auto state = e.at("state").get<std::string>();
      if (state != "serving" && state != "stopping")
        return handoff::Error{"app state: instance " + std::to_string(h.pid) + " in state '" + state + "'"};
      h.state = state == "serving" ? AppState::Serving : AppState::Stopping;
      if (h.state == AppState::Serving && current_) return handoff::Error{"app state: two serving instances"};
      h.status = e.at("status").get<std::string>();
      h.command = e.at("command").get<std::vector<std::string>>();
      auto pidfd = take(e.at("pidfd"), "pidfd");
      auto out = take(e.at("stdout"), "stdout");
      auto err = take(e.at("stderr"), "stderr");
      if (!pidfd) return pidfd.error();
      if (!out) return out.error();
      if (!err) return err.error();
      if (!pidfd.value()) return handoff::Error{"app state: instance " + std::to_string(h.pid) + " has no pidfd"};
      // (-1: it has exited since; its exit is seen at once.)
      if (const pid_t of = pid_of_pidfd(pidfd.value().get()); of != h.pid && of != -1)
        return handoff::Error{"app state: instance " + std::to_string(h.pid) + " comes with the pidfd of pid " +
                              std::to_string(of)};
      h.pidfd = std::move(pidfd).value();
      h.out = std::move(out).value();
      h.err = std::move(err).value();
      const long long left = e.at("deadline_left_ms").get<long long>();
      auto instance = AppInstance::adopt(loop_, std::move(h), [this](AppInstance& i, const std::string& how) { on_exit(i, how); });
      if (!instance) return instance.error();
      if (instance.value()->state() == AppState::Serving) {
        current_ = std::move(instance).value();
      } else {
        AppInstance* raw = instance.value().get();
        raw->arm(milliseconds(std::max(0LL, left)), [raw] {
          spdlog::warn("app: pid {} still runs at the drain timeout: SIGKILL to its process group", raw->pid());
          raw->kill_group();
        });
        retiring_.push_back(std::move(instance).value());
      }
    }
  } catch (const nlohmann::json::exception& e) {
    return handoff::Error{std::string("app state: ") + e.what()};
  }
  // Paused until this generation has COMMIT (resume()): the old one
  // supervises until then, and two supervisors would replace a crashed
  // instance twice.
  mode_ = Mode::Paused;
  for (auto* i : instances()) i->pause();
  spdlog::info("app: took over {} instance(s) from the previous batond; pid {} serves", instances().size(),
               serving_pid());
  return {};
}

nlohmann::json AppSupervisor::status() const {
  nlohmann::json list = nlohmann::json::array();
  for (auto* i : instances()) {
    const auto left = i->deadline_left();
    list.push_back({{"pid", i->pid()},
                    {"instance", i->number()},
                    {"state", to_string(i->state())},
                    {"status", i->status_text()},
                    {"uptime_s", ms_since(i->started()) / 1000.0},
                    {"deadline_left_ms", left ? nlohmann::json(left->count()) : nlohmann::json(nullptr)}});
  }
  nlohmann::json j{{"command", options_.command},
                   {"pid", current_ ? nlohmann::json(current_->pid()) : nlohmann::json(nullptr)},
                   {"state", current_ ? to_string(current_->state()) : (mode_ == Mode::Stopping ? "stopped" : "down")},
                   {"ready", current_ && current_->state() == AppState::Serving},
                   {"status", current_ ? current_->status_text() : std::string()},
                   {"restarts", restarts_},
                   {"failed_restarts", failures_},
                   {"crashes", crashes_},
                   {"restart_in_progress", candidate_ != nullptr},
                   {"supervising", mode_ != Mode::Paused},
                   {"instances", list},
                   {"ready_mode", options_.ready_delay ? "delay=" + std::to_string(options_.ready_delay->count())
                                                       : std::string("notify")},
                   {"probation_ms", options_.probation.count()},
                   {"last_restart", last_restart_.is_null() ? nlohmann::json(nullptr) : last_restart_}};
  return j;
}

}  // namespace baton::daemon
