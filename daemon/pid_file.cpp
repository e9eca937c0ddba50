#include "pid_file.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <sstream>
#include <string>

#include <spdlog/spdlog.h>

#include "baton/handoff/unique_fd.h"
#include "text_file.h"

namespace baton::daemon {

PidFile::~PidFile() {
  {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !pending_ && !writing_; });
    stopping_ = true;
  }
  changed_.notify_all();
  if (writer_.joinable()) writer_.join();
}

handoff::Status PidFile::write(pid_t pid) {
  if (!enabled()) return {};
  settle();
  auto st = write_now(pid);
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
    writer_ = std::thread(&PidFile::run_writer, this);
  } catch (const std::system_error& e) {
    spdlog::warn("pid file: no writer thread ({}): it will be written on the event loop", e.what());
  }
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
}

void PidFile::write_soon(pid_t pid) {
  if (!enabled()) return;
  start_writer();
  if (!writer_.joinable()) {
    if (auto st = write_now(pid); !st) spdlog::error("pid file: {}", st.error().message);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    pending_ = pid;
  }
  changed_.notify_all();
}

void PidFile::run_writer() {
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return pending_ || stopping_; });
    if (!pending_) return;  // stopping, nothing left to write
    const pid_t pid = *std::exchange(pending_, std::nullopt);
    writing_ = true;
    lock.unlock();
    auto st = write_now(pid);
    if (!st) spdlog::error("pid file: {}", st.error().message);
    lock.lock();
    writing_ = false;
    changed_.notify_all();
  }
}

void PidFile::settle() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return !pending_ && !writing_; });
}

handoff::Status PidFile::write_now(pid_t pid) const {
  const std::string tmp = path_ + ".tmp." + std::to_string(::getpid());
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
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    auto err = handoff::errno_error("rename " + tmp + " to " + path_);
    ::unlink(tmp.c_str());
    return err;
  }
  return {};
}

void PidFile::remove_if_names(pid_t pid) {
  if (!enabled()) return;
  settle();
  auto text = read_text_file(path_);
  std::istringstream in(text ? text.value() : std::string());
  pid_t named = 0;
  if (in >> named && named == pid) ::unlink(path_.c_str());
}

}  // namespace baton::daemon
