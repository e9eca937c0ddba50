#include "batond.h"

#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <algorithm>
#include <cstring>

#include <sstream>
#include <stdexcept>

#include "client.h"

namespace baton::test {
namespace {

constexpr const char* kUpgradeOk = "upgrade: pid ";  // "... upgrade: pid N is serving as generation G"
constexpr const char* kUpgradeFailed = "upgrade failed";

}  // namespace

// A pid from the log may have been reused since: kill only what is still one
// of the binaries a test starts as a daemon generation.
bool is_ours(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string argv0;
  std::getline(in, argv0, '\0');
  return argv0 == batond_path() || argv0.find("fake-successor") != std::string::npos ||
         argv0.find("slow-batond") != std::string::npos || argv0.find("/bin/sh") != std::string::npos;
}

std::string pid_tag(pid_t pid) { return "pid=" + std::to_string(pid) + " "; }

std::string add_private_control(std::vector<std::string>& args, const TempDir& dir) {
  // Options only: after "--" comes an app's command line (--exec).
  const auto end = std::find(args.begin(), args.end(), "--");
  for (auto it = args.begin(); it != end && it + 1 != end; ++it)
    if (*it == "--control") return *(it + 1);
  const std::string path = dir.file("control.sock");
  args.insert(args.begin(), {"--control", path});
  return path;
}

BatondProcess BatondProcess::launch(std::vector<std::string> args, TestProcess::Options options) {
  auto dir = std::make_unique<TempDir>();
  std::string control = add_private_control(args, *dir);
  args.insert(args.begin(), batond_path());
  return BatondProcess(TestProcess::start(std::move(args), std::move(options)), std::move(dir), std::move(control));
}

BatondProcess BatondProcess::start(std::vector<std::string> args, TestProcess::Options options) {
  auto b = launch(std::move(args), std::move(options));
  if (!b.wait_for_line(b.first_pid(), "serving: generation"))
    throw std::runtime_error("batond did not start serving; log:\n" + b.log());
  return b;
}

BatondProcess::~BatondProcess() {
  if (proc_.pid() <= 0) return;  // moved from
  std::istringstream in(proc_.log());
  for (std::string line; std::getline(in, line);) {
    for (const char* key : {"pid=", "as pid ", "fake-successor: pid "}) {
      for (auto pos = line.find(key); pos != std::string::npos; pos = line.find(key, pos + 1)) {
        const char* digits = line.c_str() + pos + std::strlen(key);
        pid_t pid = static_cast<pid_t>(std::atol(digits));
        if (pid > 0 && pid != proc_.pid() && is_ours(pid)) proc_.track_descendant(pid);
      }
    }
  }
}

std::string BatondProcess::address(const std::string& listener) const {
  auto line = wait_for_line(serving_, "listening name=" + listener + " ");
  return line ? field(*line, "addr") : std::string();
}

int BatondProcess::count_lines(pid_t pid, const std::string& needle) const {
  std::istringstream in(proc_.log());
  int n = 0;
  const std::string tag = pid_tag(pid);
  for (std::string line; std::getline(in, line);)
    n += line.find(tag) != std::string::npos && line.find(needle) != std::string::npos;
  return n;
}

std::optional<std::string> BatondProcess::wait_for_match(pid_t pid, const std::function<bool(const std::string&)>& match,
                                                         std::chrono::milliseconds timeout, int skip) const {
  std::optional<std::string> found;
  const std::string tag = pid_tag(pid);
  eventually(
      [&] {
        std::istringstream in(proc_.log());
        int seen = 0;
        for (std::string line; std::getline(in, line);) {
          if (line.find(tag) != std::string::npos && match(line) && seen++ == skip) {
            found = line;
            return true;
          }
        }
        return false;
      },
      timeout);
  return found;
}

std::optional<std::string> BatondProcess::wait_for_line(pid_t pid, const std::string& needle,
                                                        std::chrono::milliseconds timeout, int skip) const {
  return wait_for_match(
      pid, [&](const std::string& line) { return line.find(needle) != std::string::npos; }, timeout, skip);
}

int BatondProcess::upgrade_outcomes(pid_t from) const {
  return count_lines(from, kUpgradeOk) + count_lines(from, kUpgradeFailed);
}

namespace {

bool is_success(const std::string& line) {
  return line.find(kUpgradeOk) != std::string::npos && line.find("is serving") != std::string::npos;
}

}  // namespace

BatondProcess::UpgradeResult BatondProcess::wait_upgrade_outcome(pid_t from, int skip,
                                                                  std::chrono::milliseconds timeout) {
  UpgradeResult r;
  auto line = wait_for_match(
      from, [](const std::string& l) { return is_success(l) || l.find(kUpgradeFailed) != std::string::npos; }, timeout,
      skip);
  if (!line) return r;
  r.line = *line;
  r.ok = is_success(r.line);
  if (r.ok) {
    auto pos = r.line.find(kUpgradeOk) + std::string(kUpgradeOk).size();
    r.new_pid = static_cast<pid_t>(std::stol(r.line.substr(pos)));
    proc_.track_descendant(r.new_pid);
    serving_ = r.new_pid;
  }
  return r;
}

pid_t BatondProcess::wait_commit(pid_t from, std::chrono::milliseconds timeout, int skip) {
  auto line = wait_for_line(from, "upgrade: committed; successor=", timeout, skip);
  if (!line) return 0;
  const pid_t pid = static_cast<pid_t>(std::stol(field(*line, "successor")));
  proc_.track_descendant(pid);
  return pid;
}

BatondProcess::UpgradeResult BatondProcess::upgrade(std::chrono::milliseconds timeout) {
  const pid_t from = serving_;
  const int before = upgrade_outcomes(from);
  ::kill(from, SIGUSR2);
  return wait_upgrade_outcome(from, before, timeout);
}

void BatondProcess::signal_serving(int signo) const { ::kill(serving_, signo); }

bool BatondProcess::wait_gone(pid_t pid, std::chrono::milliseconds timeout) {
  if (pid == proc_.pid()) return proc_.wait_exit(timeout).has_value();
  return wait_pid_gone(pid, timeout);
}

}  // namespace baton::test
