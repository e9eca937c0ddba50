#include "pid_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>

#include <spdlog/spdlog.h>

#include "baton/handoff/unique_fd.h"
#include "text_file.h"

namespace baton::daemon {
namespace {

// The pid the file at `path` names, if it holds one.
std::optional<pid_t> named_pid(const std::string& path) {
  auto text = read_text_file(path);
  std::istringstream in(text ? text.value() : std::string());
  pid_t named = 0;
  if (in >> named) return named;
  return std::nullopt;
}

handoff::Status write_pid(const std::string& path, pid_t pid) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  // Never through a link someone planted under the predictable name: remove
  // whatever is there and create the file afresh.
  ::unlink(tmp.c_str());
  handoff::UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd) return handoff::errno_error("open " + tmp);
  const std::string text = std::to_string(pid) + "\n";
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    auto err = handoff::errno_error("write " + tmp);
    ::unlink(tmp.c_str());
    return err;
  }
  fd.reset();
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    auto err = handoff::errno_error("rename " + tmp + " to " + path);
    ::unlink(tmp.c_str());
    return err;
  }
  return {};
}

}  // namespace

struct PidFile::Shared {
  struct Job {
    pid_t pid;
    Replace replace;
  };
  explicit Shared(std::string p) : path(std::move(p)) {}
  const std::string path;
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<Job> pending;     // asked, not yet taken by the writer, in order
  bool writing = false;        // the writer is making one
  bool stopping = false;

  bool idle() const { return pending.empty() && !writing; }
  bool wait_idle() {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, kSettleBound, [&] { return idle(); });
  }

  handoff::Status make(const Job& job) {
    // Not a successor's own, nor one removed meanwhile (a generation that
    // stopped): not ours to replace.
    if (job.replace == Replace::IfOurs && named_pid(path) != ::getpid()) return {};
    return write_pid(path, job.pid);
  }

  static void run(const std::shared_ptr<Shared>& self) {
    std::unique_lock lock(self->mutex);
    for (;;) {
      self->changed.wait(lock, [&] { return !self->pending.empty() || self->stopping; });
      if (self->pending.empty()) return;  // stopping, nothing left to write
      const Job job = self->pending.front();
      self->pending.pop_front();
      self->writing = true;
      lock.unlock();
      std::string error;
      try {
        if (auto st = self->make(job); !st) error = st.error().message;
      } catch (const std::exception& e) {
        error = e.what();
      }
      lock.lock();
      // Not once the owner gave up waiting (it may be exiting: the logger may be gone).
      if (!error.empty() && !self->stopping) spdlog::error("pid file: {}", error);
      self->writing = false;
      self->changed.notify_all();
    }
  }
};

PidFile::PidFile(std::string path) : path_(std::move(path)), shared_(std::make_shared<Shared>(path_)) {}

PidFile::~PidFile() {
  if (!writer_.joinable()) return;
  const bool settled = shared_->wait_idle();
  {
    std::lock_guard lock(shared_->mutex);
    shared_->stopping = true;
  }
  shared_->changed.notify_all();
  if (settled) {
    writer_.join();
  } else {
    spdlog::warn("pid file {}: a write has not finished after {} s (a hung file system?); exiting without it",
                 path_, kSettleBound.count());
    writer_.detach();  // it holds `shared_` itself
  }
}

handoff::Status PidFile::write(pid_t pid) {
  if (!enabled()) return {};
  settle();
  auto st = write_pid(path_, pid);
  // Started here, at start-up: starting a thread costs about 0.1 ms, which
  // the loop turn of the next COMMIT would otherwise pay.
  start_writer();
  return st;
}

void PidFile::start_writer() {
  if (writer_.joinable()) return;
  // Signals are the loop's (uv_signal): the writer takes none of them.
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  try {
    writer_ = std::thread(&Shared::run, shared_);
  } catch (const std::system_error& e) {
    spdlog::warn("pid file: no writer thread ({}): it will be written on the event loop", e.what());
  }
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
}

void PidFile::write_soon(pid_t pid, Replace replace) {
  if (!enabled()) return;
  start_writer();
  if (!writer_.joinable()) {
    if (auto st = shared_->make({pid, replace}); !st) spdlog::error("pid file: {}", st.error().message);
    return;
  }
  {
    std::lock_guard lock(shared_->mutex);
    shared_->pending.push_back({pid, replace});
  }
  shared_->changed.notify_all();
}

bool PidFile::settle() { return !writer_.joinable() || shared_->wait_idle(); }

void PidFile::remove_if_names(pid_t pid) {
  if (!enabled()) return;
  if (!settle()) {
    spdlog::warn("pid file {}: a write has not finished after {} s; not removed", path_, kSettleBound.count());
    return;
  }
  if (named_pid(path_) == pid) ::unlink(path_.c_str());
}

}  // namespace baton::daemon
