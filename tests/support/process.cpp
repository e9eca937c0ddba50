#include "process.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <utility>

extern char** environ;

namespace baton::test {
namespace {

// Make this test binary the reaper of its orphaned descendants, so a daemon's
// new generation, re-parented when the old one exits, is ours to kill and reap.
[[maybe_unused]] const bool kSubreaper = [] {
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  return true;
}();

// Pids started through this helper: their exit status belongs to their owner,
// so reap_zombies() must never collect them.
std::mutex g_roots_mutex;
std::set<pid_t> g_roots;

void add_root(pid_t pid) {
  std::lock_guard lock(g_roots_mutex);
  g_roots.insert(pid);
}
void remove_root(pid_t pid) {
  std::lock_guard lock(g_roots_mutex);
  g_roots.erase(pid);
}
bool is_root(pid_t pid) {
  std::lock_guard lock(g_roots_mutex);
  return g_roots.count(pid) != 0;
}

// Calls fn(pid, state, ppid) for every process in /proc.
template <class F>
void for_each_process(F&& fn) {
  DIR* d = ::opendir("/proc");
  if (!d) return;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/stat");
    std::string content;
    if (!std::getline(in, content)) continue;
    auto rparen = content.rfind(')');
    if (rparen == std::string::npos || rparen + 2 >= content.size()) continue;
    std::istringstream rest(content.substr(rparen + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    fn(static_cast<pid_t>(std::atoi(e->d_name)), state, ppid);
  }
  ::closedir(d);
}

std::string make_temp_dir() {
  std::string tmpl = (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp");
  tmpl += "/baton-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  return buf.data();
}

std::vector<std::string> merged_env(const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    std::string_view kv(*e);
    bool overridden = false;
    for (const auto& x : extra) {
      auto eq = x.find('=');
      if (kv.substr(0, kv.find('=')) == std::string_view(x).substr(0, eq)) overridden = true;
    }
    if (!overridden) env.emplace_back(kv);
  }
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

ExitStatus decode_status(int status) {
  ExitStatus s;
  if (WIFEXITED(status)) {
    s.exited = true;
    s.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    s.code = WTERMSIG(status);
  }
  return s;
}

// fork + exec with stdin from /dev/null and stdout/stderr to the given fds.
pid_t spawn(std::vector<std::string> argv, const std::vector<std::string>& extra_env, int out_fd,
            int err_fd, int fd3 = -1, bool listen_pid = false, int fd4 = -1) {
  auto env = merged_env(extra_env);
  // The child's pid is known only after fork: reserve room, fill it in there.
  if (listen_pid) env.push_back("LISTEN_PID=" + std::string(20, '\0'));
  auto c_argv = c_strings(argv);
  auto c_env = c_strings(env);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    ::dup2(devnull, 0);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    // Out of the way first (a source may sit at the other's target), then in
    // place; dup2 clears close-on-exec on the copy.
    const int hi3 = fd3 >= 0 ? ::fcntl(fd3, F_DUPFD_CLOEXEC, 100) : -1;
    const int hi4 = fd4 >= 0 ? ::fcntl(fd4, F_DUPFD_CLOEXEC, 100) : -1;
    if (hi3 >= 0) ::dup2(hi3, 3);
    if (hi4 >= 0) ::dup2(hi4, 4);
    if (listen_pid) std::snprintf(c_env[c_env.size() - 2] + 11, 20, "%d", ::getpid());
    // Start the child with default signal dispositions and an empty mask.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    ::execve(c_argv[0], c_argv.data(), c_env.data());
    dprintf(2, "exec %s: %s\n", c_argv[0], std::strerror(errno));
    ::_exit(127);
  }
  add_root(pid);
  return pid;
}

}  // namespace

std::string batond_path() { return BATON_BATOND_PATH; }
std::string batonctl_path() { return BATON_BATONCTL_PATH; }
std::string build_path(const std::string& relative) { return std::string(BATON_BUILD_DIR) + "/" + relative; }
std::string tool_path(const std::string& name) { return build_path("tests/load/" + name); }

TempDir::TempDir() : path_(make_temp_dir()) {}
TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string ExitStatus::describe() const {
  return exited ? "exit status " + std::to_string(code) : "killed by signal " + std::to_string(code);
}

TestProcess TestProcess::start(std::vector<std::string> argv, Options options) {
  TestProcess p;
  if (options.log_path.empty()) {
    p.owned_dir_ = make_temp_dir();
    options.log_path = p.owned_dir_ + "/process.log";
  }
  p.log_path_ = options.log_path;
  int fd = ::open(p.log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("open " + p.log_path_ + ": " + std::strerror(errno));
  try {
    p.pid_ = spawn(std::move(argv), options.extra_env, fd, fd, options.fd3, options.listen_pid, options.fd4);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return p;
}

TestProcess::TestProcess(TestProcess&& o) noexcept { *this = std::move(o); }

TestProcess& TestProcess::operator=(TestProcess&& o) noexcept {
  if (this != &o) {
    kill_all();
    pid_ = std::exchange(o.pid_, -1);
    reaped_ = std::exchange(o.reaped_, true);
    log_path_ = std::move(o.log_path_);
    owned_dir_ = std::exchange(o.owned_dir_, {});
    descendants_ = std::move(o.descendants_);
    exit_status_ = std::exchange(o.exit_status_, std::nullopt);
  }
  return *this;
}

TestProcess::~TestProcess() {
  kill_all();
  if (!owned_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(owned_dir_, ec);
  }
}

void TestProcess::kill_all() noexcept {
  // Descendants first: killing the parent first would re-parent them mid-way.
  for (pid_t d : descendants_) {
    ::kill(d, SIGKILL);
    int st;
    ::waitpid(d, &st, 0);  // ECHILD when its own parent reaped it: fine
  }
  descendants_.clear();
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    int st;
    ::waitpid(pid_, &st, 0);
    reaped_ = true;
    remove_root(pid_);
  }
  reap_zombies();  // grandchildren re-parented to us while we were killing
}

std::string TestProcess::log() const {
  std::ifstream in(log_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::optional<std::string> TestProcess::wait_for_line(const std::string& needle,
                                                      std::chrono::milliseconds timeout,
                                                      int skip) const {
  std::optional<std::string> found;
  eventually(
      [&] {
        std::istringstream in(log());
        int seen = 0;
        for (std::string line; std::getline(in, line);) {
          if (line.find(needle) != std::string::npos && seen++ == skip) {
            found = line;
            return true;
          }
        }
        return false;
      },
      timeout);
  return found;
}

int TestProcess::count_lines(const std::string& needle) const {
  std::istringstream in(log());
  int n = 0;
  for (std::string line; std::getline(in, line);) n += line.find(needle) != std::string::npos;
  return n;
}

void TestProcess::signal(int signo) const {
  if (pid_ > 0 && !reaped_) ::kill(pid_, signo);
}

std::optional<ExitStatus> TestProcess::wait_exit(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return std::nullopt;
  if (exit_status_) return exit_status_;  // reaped before: the same answer
  std::optional<ExitStatus> result;
  eventually(
      [&] {
        int st = 0;
        pid_t r = ::waitpid(pid_, &st, WNOHANG);
        if (r == pid_) {
          reaped_ = true;
          remove_root(pid_);
          result = decode_status(st);
          exit_status_ = result;
          return true;
        }
        return false;
      },
      timeout);
  return result;
}

bool TestProcess::running() const {
  if (reaped_ || pid_ <= 0) return false;
  return pid_alive(pid_);
}

void TestProcess::track_descendant(pid_t pid) {
  for (pid_t d : descendants_)
    if (d == pid) return;
  descendants_.push_back(pid);
}

bool pid_alive(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  if (!std::getline(in, content)) return false;
  auto rparen = content.rfind(')');
  if (rparen == std::string::npos || rparen + 2 >= content.size()) return false;
  char state = content[rparen + 2];
  return state != 'Z' && state != 'X';
}

bool wait_pid_gone(pid_t pid, std::chrono::milliseconds timeout) {
  return eventually(
      [&] {
        reap_zombies();
        return !pid_alive(pid);
      },
      timeout);
}

int reap_zombies() {
  int n = 0;
  const pid_t self = ::getpid();
  for_each_process([&](pid_t pid, char state, pid_t ppid) {
    int st;
    if (ppid == self && state == 'Z' && !is_root(pid) && ::waitpid(pid, &st, WNOHANG) == pid) ++n;
  });
  return n;
}

int zombie_children_of(pid_t parent) {
  int n = 0;
  for_each_process([&](pid_t, char state, pid_t ppid) { n += (ppid == parent && state == 'Z'); });
  return n;
}

std::vector<std::string> open_fds(pid_t pid) {
  std::vector<std::string> out;
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::error_code ec2;
    auto target = std::filesystem::read_symlink(entry.path(), ec2);
    if (!ec2) out.push_back(target.string());
  }
  return out;
}

long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

pid_t read_pid_file(const std::string& path) {
  std::ifstream in(path);
  pid_t pid = 0;
  in >> pid;
  return pid;
}

CommandResult run_command(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                          const std::vector<std::string>& extra_env) {
  TempDir dir;
  int out = ::open(dir.file("out").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  int err = ::open(dir.file("err").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  pid_t pid = spawn(argv, extra_env, out, err);
  ::close(out);
  ::close(err);
  CommandResult result;
  int st = 0;
  bool done = eventually([&] { return ::waitpid(pid, &st, WNOHANG) == pid; }, timeout);
  if (!done) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &st, 0);
    remove_root(pid);
    throw std::runtime_error("command timed out: " + argv[0]);
  }
  remove_root(pid);
  result.status = decode_status(st);
  auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  result.out = slurp(dir.file("out"));
  result.err = slurp(dir.file("err"));
  return result;
}

}  // namespace baton::test
