// The --pid-file way: no control socket, only the pid file and signals.
// Less is known this way (no progress, no reason for a failure), so the
// outcome is read from what can be observed: which pid the file names, and
// whether that process is alive and holds sockets.

#include <signal.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "commands.h"

namespace baton::cli {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::optional<int> read_pid(const std::string& pid_file) {
  std::ifstream in(pid_file);
  int pid = 0;
  if (in >> pid && pid > 0) return pid;
  return std::nullopt;
}

bool holds_a_socket(int pid) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec)) {
    std::error_code ec2;
    if (std::filesystem::read_symlink(e.path(), ec2).string().rfind("socket:", 0) == 0) return true;
  }
  return false;
}

// Sets `pid` to the live process the file names; otherwise reports and
// returns the exit code to use.
int find_live_pid(const std::string& pid_file, int& pid) {
  auto named = read_pid(pid_file);
  if (!named) return fail(kUnreachable, "no pid in " + pid_file);
  if (!pid_alive(*named)) return fail(kUnreachable, "pid " + std::to_string(*named) + " from " + pid_file + " is not running");
  pid = *named;
  return kDone;
}

}  // namespace

bool pid_alive(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  if (!std::getline(in, content)) return false;
  auto rparen = content.rfind(')');
  return rparen != std::string::npos && rparen + 2 < content.size() && content[rparen + 2] != 'Z';
}

int status_with_signals(const std::string& pid_file, bool json) {
  int pid = 0;
  if (int code = find_live_pid(pid_file, pid); code != kDone) return code;
  if (json) std::cout << nlohmann::json{{"ok", true}, {"pid", pid}, {"running", true}}.dump(2) << "\n";
  else std::cout << "pid          " << pid << "\nstate        running (details need the control socket)\n";
  return kDone;
}

int upgrade_with_signals(const std::string& pid_file, std::optional<double> timeout_s) {
  int old_pid = 0;
  if (int code = find_live_pid(pid_file, old_pid); code != kDone) return code;
  if (::kill(old_pid, SIGUSR2) != 0) return fail(kFailed, "kill -USR2 " + std::to_string(old_pid) + ": " + std::strerror(errno));
  std::cout << "upgrade: sent SIGUSR2 to pid " << old_pid << std::endl;
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<long long>(timeout_s.value_or(10) * 1000)) + 5s;
  while (Clock::now() < deadline) {
    // The old generation rewrites the file once the new one is READY.
    auto now_named = read_pid(pid_file);
    if (now_named && *now_named != old_pid && pid_alive(*now_named) && holds_a_socket(*now_named)) {
      std::cout << "upgrade: done; pid " << *now_named << " serves (was " << old_pid << ")" << std::endl;
      return kDone;
    }
    std::this_thread::sleep_for(10ms);
  }
  return fail(kFailed, "no new generation in " + pid_file + " in time: the upgrade failed or is still running "
                       "(batond's log says which)");
}

int stop_with_signals(const std::string& pid_file, std::optional<double> timeout_s) {
  int pid = 0;
  if (int code = find_live_pid(pid_file, pid); code != kDone) return code;
  if (::kill(pid, SIGTERM) != 0) return fail(kFailed, "kill -TERM " + std::to_string(pid) + ": " + std::strerror(errno));
  std::cout << "stop: sent SIGTERM to pid " << pid << std::endl;
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<long long>(timeout_s.value_or(30) * 1000)) + 15s;
  while (pid_alive(pid)) {
    if (Clock::now() > deadline) return fail(kFailed, "pid " + std::to_string(pid) + " did not exit in time");
    std::this_thread::sleep_for(10ms);
  }
  std::cout << "stop: pid " << pid << " exited" << std::endl;
  return kDone;
}

}  // namespace baton::cli
