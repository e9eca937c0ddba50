#include "app_instance.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include <spdlog/spdlog.h>

#include "baton/handoff/predecessor.h"

namespace baton::daemon {
namespace {

constexpr size_t kMaxLine = 8192;
constexpr size_t kTailLines = 10;

}  // namespace

const char* to_string(AppState s) {
  switch (s) {
    case AppState::Starting: return "starting";
    case AppState::Probation: return "probation";
    case AppState::Serving: return "serving";
    case AppState::Stopping: return "stopping";
  }
  return "unknown";
}

AppInstance::AppInstance(uv_loop_t* loop, pid_t pid, handoff::UniqueFd pidfd, uint64_t number, bool child,
                         ExitHandler on_exit)
    : loop_(loop),
      process_(handoff::ProcessHandle::adopt(pid, std::move(pidfd))),
      number_(number),
      child_(child),
      on_exit_(std::move(on_exit)) {}

AppInstance::~AppInstance() {
  // Destroyed with batond, or after its exit: never killed from here (a
  // batond that hands over leaves the app serving). A child not reaped yet
  // is reaped by whoever inherits it.
  deadline_.close();
  exit_poll_.close();
}

handoff::Result<std::unique_ptr<AppInstance>> AppInstance::launch(uv_loop_t* loop, const LaunchSpec& spec,
                                                                  uint64_t number, ExitHandler on_exit) {
  auto launched = launch_app(spec);
  if (!launched) return launched.error();
  std::unique_ptr<AppInstance> instance(
      new AppInstance(loop, launched->pid, std::move(launched->pidfd), number, /*child=*/true, std::move(on_exit)));
  instance->command_ = spec.argv;
  if (auto st = instance->watch(std::move(launched->out), std::move(launched->err)); !st) {
    instance->kill_group();
    ::waitpid(instance->pid(), nullptr, 0);  // our child: not left a zombie
    return st.error();
  }
  return instance;
}

handoff::Result<std::unique_ptr<AppInstance>> AppInstance::adopt(uv_loop_t* loop, Handed handed, ExitHandler on_exit) {
  std::unique_ptr<AppInstance> instance(
      new AppInstance(loop, handed.pid, std::move(handed.pidfd), handed.number, /*child=*/false, std::move(on_exit)));
  instance->state_ = handed.state;
  instance->started_ = std::chrono::steady_clock::now() - std::chrono::milliseconds(std::max(0LL, handed.uptime_ms));
  instance->status_ = std::move(handed.status);
  instance->command_ = std::move(handed.command);
  if (auto st = instance->watch(std::move(handed.out), std::move(handed.err)); !st) return st.error();
  return instance;
}

handoff::Status AppInstance::watch(handoff::UniqueFd out, handoff::UniqueFd err) {
  if (auto st = open_stream(out_, "stdout", std::move(out)); !st) return st;
  if (auto st = open_stream(err_, "stderr", std::move(err)); !st) return st;
  if (int rc = exit_poll_.init(uv_poll_init, loop_, this, process_.fd()); rc != 0)
    return handoff::Error{std::string("uv_poll_init (pidfd of pid ") + std::to_string(pid()) + "): " + uv_strerror(rc)};
  if (int rc = uv_poll_start(exit_poll_.get(), UV_READABLE, &AppInstance::on_exit_poll); rc != 0)
    return handoff::Error{std::string("uv_poll_start (pidfd): ") + uv_strerror(rc)};
  return {};
}

handoff::Status AppInstance::open_stream(Stream& s, const char* name, handoff::UniqueFd fd) {
  s.owner = this;
  s.name = name;
  if (int rc = s.pipe.init(uv_pipe_init, loop_, &s, 0); rc != 0)
    return handoff::Error{std::string("uv_pipe_init (app ") + name + "): " + uv_strerror(rc)};
  if (int rc = uv_pipe_open(s.pipe.get(), fd.get()); rc != 0)
    return handoff::Error{std::string("uv_pipe_open (app ") + name + "): " + uv_strerror(rc)};
  fd.release();  // the pipe handle owns it now
  start_reading(s);
  return {};
}

void AppInstance::start_reading(Stream& s) {
  if (!s.pipe) return;
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(s.pipe.get()),
      [](uv_handle_t*, size_t, uv_buf_t* buf) {
        static thread_local char storage[16384];
        *buf = uv_buf_init(storage, sizeof storage);
      },
      &AppInstance::on_read);
}

void AppInstance::on_read(uv_stream_t* stream, ssize_t n, const uv_buf_t* buf) {
  auto& s = *static_cast<Stream*>(stream->data);
  if (n < 0) {
    // EOF: the app (and everything it forked) closed it. Flush what is left.
    if (!s.partial.empty()) s.owner->take_line(s, std::move(s.partial));
    s.partial.clear();
    s.pipe.close();
    return;
  }
  s.owner->take_bytes(s, buf->base, static_cast<size_t>(n));
}

void AppInstance::take_bytes(Stream& s, const char* data, size_t n) {
  s.partial.append(data, n);
  size_t start = 0;
  for (size_t nl; (nl = s.partial.find('\n', start)) != std::string::npos; start = nl + 1)
    take_line(s, s.partial.substr(start, nl - start));
  s.partial.erase(0, start);
  if (s.partial.size() > kMaxLine) {
    take_line(s, std::move(s.partial));
    s.partial.clear();
  }
}

void AppInstance::read_what_is_left(Stream& s) {
  uv_os_fd_t fd = -1;
  if (!s.pipe || uv_fileno(s.pipe.handle(), &fd) != 0) return;
  char buf[16384];
  // Non-blocking (libuv made it so); bounded, in case something still writes.
  for (int i = 0; i < 64; ++i) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    take_bytes(s, buf, static_cast<size_t>(n));
  }
}

void AppInstance::take_line(Stream& s, std::string line) {
  if (!line.empty() && line.back() == '\r') line.pop_back();
  spdlog::info("app pid={} {}: {}", pid(), s.name, line);
  if (&s == &err_) {
    stderr_tail_.push_back(std::move(line));
    if (stderr_tail_.size() > kTailLines) stderr_tail_.pop_front();
  }
}

std::string AppInstance::stderr_tail() const {
  std::string out;
  for (const auto& l : stderr_tail_) out += (out.empty() ? "" : "\n") + l;
  return out;
}

void AppInstance::arm(std::chrono::milliseconds after, std::function<void()> fire) {
  if (!deadline_ && deadline_.init(uv_timer_init, loop_, this) != 0) {
    spdlog::error("app pid={}: uv_timer_init failed; the deadline fires now", pid());
    fire();
    return;
  }
  fire_ = std::move(fire);
  uv_update_time(loop_);  // the loop's clock may be stale (an adoption runs before the loop does)
  uv_timer_start(deadline_.get(), &AppInstance::on_deadline, static_cast<uint64_t>(std::max<long long>(0, after.count())), 0);
}

void AppInstance::disarm() {
  if (deadline_) uv_timer_stop(deadline_.get());
  fire_ = nullptr;
}

std::optional<std::chrono::milliseconds> AppInstance::deadline_left() const {
  if (!deadline_ || !uv_is_active(deadline_.handle())) return std::nullopt;
  return std::chrono::milliseconds(uv_timer_get_due_in(deadline_.get()));
}

void AppInstance::on_deadline(uv_timer_t* timer) {
  auto* self = static_cast<AppInstance*>(timer->data);
  auto fire = std::move(self->fire_);
  self->fire_ = nullptr;
  if (fire) fire();  // may destroy self
}

void AppInstance::kill_group() const {
  if (pid() <= 1) return;  // kill(-1) or kill(-0) would reach far more than the app
  if (exited_) return;     // reaped, maybe: its pid could be someone else's by now
  // Its own group (it leads it from birth); ESRCH once everything in it is gone.
  if (::kill(-pid(), SIGKILL) != 0 && errno != ESRCH)
    spdlog::warn("app pid={}: kill(-{}, SIGKILL): {}", pid(), pid(), std::strerror(errno));
  process_.signal(SIGKILL);  // should it have left its group
}

void AppInstance::pause() {
  paused_ = true;
  for (Stream* s : {&out_, &err_})
    if (s->pipe) uv_read_stop(reinterpret_cast<uv_stream_t*>(s->pipe.get()));
  paused_left_ = deadline_left();
  if (deadline_) uv_timer_stop(deadline_.get());
}

void AppInstance::resume() {
  paused_ = false;
  if (paused_left_ && fire_) {
    uv_update_time(loop_);
    uv_timer_start(deadline_.get(), &AppInstance::on_deadline, static_cast<uint64_t>(paused_left_->count()), 0);
  }
  paused_left_.reset();
  start_reading(out_);
  start_reading(err_);
  if (exited_) return note_exit();  // may destroy this
}

void AppInstance::close() {
  paused_ = true;  // no exit is reported any more
  deadline_.close();
  exit_poll_.close();
  out_.pipe.close();
  err_.pipe.close();
}

std::vector<int> AppInstance::fds() const {
  auto fileno = [](const Stream& s) {
    uv_os_fd_t fd = -1;
    if (!s.pipe || uv_fileno(s.pipe.handle(), &fd) != 0) return -1;
    return fd;
  };
  return {process_.fd(), fileno(out_), fileno(err_)};
}

void AppInstance::on_exit_poll(uv_poll_t* poll, int, int) {
  auto* self = static_cast<AppInstance*>(poll->data);
  self->exit_poll_.close();
  if (self->child_) {
    // What it forked and left behind goes with it, now: as a zombie not yet
    // reaped its pid (and so its group's id) cannot be anyone else's.
    self->kill_group();
    self->exited_ = true;
    int status = 0;
    const pid_t r = ::waitpid(self->pid(), &status, WNOHANG);
    if (r == self->pid())
      self->how_ = WIFEXITED(status) ? handoff::describe_exit(WEXITSTATUS(status), 0)
                                     : handoff::describe_exit(0, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    else
      self->how_ = "exited";
  } else {
    // Not ours to reap, nor (once it may have been reaped) to signal: its
    // group is left alone.
    self->exited_ = true;
    self->how_ = "exited (its status went to the batond generation that started it)";
  }
  if (!self->paused_) self->note_exit();
}

void AppInstance::note_exit() {
  if (exit_reported_) return;
  exit_reported_ = true;
  disarm();
  // Its last words (a traceback, say) may still sit in the pipes: read
  // before the exit is reported, so that the reason can quote them.
  read_what_is_left(out_);
  read_what_is_left(err_);
  on_exit_(*this, how_);  // may destroy this
}

}  // namespace baton::daemon
