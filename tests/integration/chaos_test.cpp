// Chaos: a real batond under byte-verifying load (baton-load over TCP and the
// Unix listener, about 20 connections plus churn), upgraded again and again
// while something goes wrong on purpose. Each round picks one disturbance at
// random (seeded; the seed is printed and BATON_CHAOS_SEED replays the choices,
// though not the timing):
//
//   plain                 SIGUSR2 to the serving pid, wait for the outcome
//   storm                 several SIGUSR2 in a row, one more once the new
//                         process exists: one upgrade, the rest refused
//   chain                 the new generation gets SIGUSR2 as soon as it has
//                         COMMIT, while the old one still has it on probation;
//                         half the time that second upgrade is disturbed too
//                         (its new process stopped before READY)
//   stop-before-ready     the new process SIGSTOPped right after it is spawned:
//                         between fork and exec, just after exec, or as it logs
//                         that it took the listeners (READY is microseconds
//                         away: this lands on either side of it)
//   stop-in-probation     SIGSTOP at COMMIT, before or after its SERVING
//   stop-during-handoff   (drain = handoff) SIGSTOP once it reports serving, so
//                         the connections are handed to a stopped process, or
//                         as the hand-off starts
//   stop-after-serving    SIGSTOP once the upgrade is over (and a hand-off done)
//   kill-before-ready     SIGKILL of the new process before READY (same
//                         moments; it is stopped first and killed only if it
//                         has not logged "serving:", after which its loop, the
//                         only place it accepts, would run: no client is lost
//                         by the test's own hand)
//   flip-drain            drain.mode wait <-> handoff in the config file, SIGHUP
//
// Every SIGSTOP is held 2.5 s, longer than any internal timeout, then SIGCONT.
// The new process is found the moment it exists (/proc/PID/task/*/children
// of the serving pid) and signalled through a pidfd (no pid-reuse accident).
// Every wait is on an event: a log line, a process state, the pid file, an
// exit. The only sleep is the deliberate SIGSTOP hold.
//
// After every round: the outcome names the process the test saw spawned; the
// pid file and `batonctl status` name the pid the outcomes say serves, idle;
// a rolled-back process is gone; in handoff mode an old generation that kept
// no connection exits. At the end: baton-load saw no failure and verified
// bytes on both listeners; one batond serves, named by the pid file, answering
// batonctl, echoing on both listeners; every older generation is gone within
// 30 s of its clients leaving (the drain deadline is longer than the run: a
// deadline under a persistent client is a client error by design); no zombie;
// every generation that served and is gone logged "exiting with status 0"; no
// generation died after taking over, none logged a fatal error. A summary goes
// to stdout, also as one JSON line "chaos-summary: {...}".
//
// BATON_CHAOS_SECONDS (default 40), BATON_CHAOS_ROUNDS (default 1000),
// BATON_CHAOS_SEED. scripts/chaos.sh MINUTES runs the long form.

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/batond.h"
#include "support/client.h"
#include "support/load.h"
#include "support/process.h"

namespace baton::test {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kUpgradeTimeoutS = 1;         // --upgrade-timeout
constexpr const char* kProbation = "0.5";  // upgrade.probation, seconds
// Longer than every internal timeout: the upgrade timeout (1 s here, for READY
// and again for SERVING), the hand-off's stall bound (2 s) and flush bound
// (1 s), the successor's blocking start-up send (the upgrade timeout), the
// probation (0.5 s here).
constexpr auto kHold = 2500ms;
constexpr auto kOutcomeTimeout = 60s;  // nothing here should take more than a few seconds
// LoadRun starts baton-load with --duration 300: restarted well before that.
constexpr auto kLoadRunFor = 240s;

long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atol(v) : fallback;
}

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// ---------------------------------------------------------------------------
// The daemon's log (every generation writes to it), read incrementally: a long
// run logs thousands of lines, and re-reading the whole file every few
// milliseconds would take a core from the daemon under test.
class LogTail {
 public:
  explicit LogTail(std::string path) : path_(std::move(path)) {}
  ~LogTail() {
    if (fd_ >= 0) ::close(fd_);
  }
  LogTail(const LogTail&) = delete;
  LogTail& operator=(const LogTail&) = delete;

  size_t size() {
    refresh();
    return lines_.size();
  }
  const std::string& at(size_t i) const { return lines_[i]; }

  // First line at index >= from, written by `pid` (0: by anyone), that contains one of `needles`.
  std::optional<size_t> find(pid_t pid, const std::vector<std::string>& needles, size_t from, size_t* which = nullptr) {
    refresh();
    const std::string tag = pid ? pid_tag(pid) : std::string();
    for (size_t i = from; i < lines_.size(); ++i) {
      const std::string& l = lines_[i];
      if (pid && l.find(tag) == std::string::npos) continue;
      for (size_t n = 0; n < needles.size(); ++n) {
        if (l.find(needles[n]) != std::string::npos) {
          if (which) *which = n;
          return i;
        }
      }
    }
    return std::nullopt;
  }
  // spin: no sleep between looks, for a line that must be acted on within microseconds.
  std::optional<size_t> wait(pid_t pid, const std::vector<std::string>& needles, size_t from,
                             std::chrono::milliseconds timeout, size_t* which = nullptr, bool spin = false) {
    const auto deadline = Clock::now() + timeout;
    size_t scanned = from;
    for (;;) {
      if (auto i = find(pid, needles, scanned, which)) return i;
      scanned = std::max(scanned, lines_.size());
      if (Clock::now() >= deadline) return std::nullopt;
      if (spin)
        ::sched_yield();
      else
        std::this_thread::sleep_for(2ms);
    }
  }
  int count(pid_t pid, const std::string& needle, size_t from = 0) {
    refresh();
    int n = 0;
    for (size_t i = from; i < lines_.size(); ++i) n += find_in(i, pid, needle);
    return n;
  }
  // The last `max` lines from `from` on, for a failure message.
  std::string excerpt(size_t from, size_t max = 150) {
    refresh();
    std::ostringstream out;
    if (lines_.size() > from + max) {
      out << "  [... " << (lines_.size() - from - max) << " line(s) left out ...]\n";
      from = lines_.size() - max;
    }
    for (size_t i = from; i < lines_.size(); ++i) out << "  " << lines_[i] << "\n";
    return out.str();
  }

 private:
  bool find_in(size_t i, pid_t pid, const std::string& needle) const {
    const std::string& l = lines_[i];
    return (!pid || l.find(pid_tag(pid)) != std::string::npos) && l.find(needle) != std::string::npos;
  }
  void refresh() {
    if (fd_ < 0) fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) return;
    char buf[65536];
    for (;;) {
      const ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) break;
      partial_.append(buf, static_cast<size_t>(n));
    }
    size_t start = 0;
    for (size_t nl; (nl = partial_.find('\n', start)) != std::string::npos; start = nl + 1)
      lines_.emplace_back(partial_, start, nl - start);
    partial_.erase(0, start);
  }

  std::string path_;
  int fd_ = -1;
  std::string partial_;
  std::vector<std::string> lines_;
};

// ---------------------------------------------------------------------------
// Processes, from /proc.

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Each thread has its own list: batond's children are its spawner thread's.
std::set<pid_t> children_of(pid_t parent) {
  std::set<pid_t> out;
  const std::string tasks = "/proc/" + std::to_string(parent) + "/task";
  DIR* dir = ::opendir(tasks.c_str());
  while (dirent* e = dir ? ::readdir(dir) : nullptr) {
    if (e->d_name[0] == '.') continue;
    std::istringstream in(slurp(tasks + "/" + e->d_name + "/children"));
    for (pid_t p; in >> p;) out.insert(p);
  }
  if (dir) ::closedir(dir);
  return out;
}

// 'R', 'S', 'T', 'Z', ... or 0 when the process is gone.
char state_of(pid_t pid) {
  const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
  const auto rparen = stat.rfind(')');
  return rparen == std::string::npos || rparen + 2 >= stat.size() ? 0 : stat[rparen + 2];
}

// Spins (this is the one place that must be faster than the daemon: a new
// process reaches READY within milliseconds) until `parent` has a child not
// in `known`. 0 at the deadline.
pid_t spin_for_new_child(pid_t parent, const std::set<pid_t>& known, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (unsigned i = 0;; ++i) {
    for (pid_t c : children_of(parent))
      if (!known.count(c)) return c;
    if ((i & 63) == 63) {
      if (Clock::now() >= deadline) return 0;
      std::this_thread::sleep_for(50us);
    } else {
      ::sched_yield();
    }
  }
}

// After fork, before exec, the child's environment is its parent's; exec
// gives it BATON_GENERATION=N+1 and BATON_HANDOFF_FD. Spins until it differs.
bool spin_for_exec(pid_t child, pid_t parent, std::chrono::milliseconds timeout) {
  const std::string parent_env = slurp("/proc/" + std::to_string(parent) + "/environ");
  const auto deadline = Clock::now() + timeout;
  for (unsigned i = 0;; ++i) {
    const std::string env = slurp("/proc/" + std::to_string(child) + "/environ");
    if (!env.empty() && env != parent_env) return true;
    if (state_of(child) == 0 || state_of(child) == 'Z') return false;
    if ((i & 63) == 63) {
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(50us);
    } else {
      ::sched_yield();
    }
  }
}

// A pidfd: a signal sent through it never reaches a process that reused the pid.
class PidFd {
 public:
  explicit PidFd(pid_t pid) : pid_(pid), fd_(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0))) {}
  ~PidFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  PidFd(const PidFd&) = delete;
  PidFd& operator=(const PidFd&) = delete;
  bool signal(int signo) const { return fd_ >= 0 && ::syscall(SYS_pidfd_send_signal, fd_, signo, nullptr, 0) == 0; }
  // Waits until the process is stopped (true), or gone (false).
  bool wait_stopped() const {
    char s = 0;
    eventually([&] {
      s = state_of(pid_);
      return s == 'T' || s == 't' || s == 0 || s == 'Z';
    }, 5s);
    return s == 'T' || s == 't';
  }

 private:
  pid_t pid_;
  int fd_;
};

// ---------------------------------------------------------------------------

enum class Kind {
  Plain,
  Storm,
  Chain,
  StopBeforeReady,
  StopInProbation,
  StopDuringHandoff,
  StopAfterServing,
  KillBeforeReady,
  FlipDrain,
};

const char* name(Kind k) {
  switch (k) {
    case Kind::Plain: return "plain";
    case Kind::Storm: return "storm";
    case Kind::Chain: return "chain";
    case Kind::StopBeforeReady: return "stop-before-ready";
    case Kind::StopInProbation: return "stop-in-probation";
    case Kind::StopDuringHandoff: return "stop-during-handoff";
    case Kind::StopAfterServing: return "stop-after-serving";
    case Kind::KillBeforeReady: return "kill-before-ready";
    case Kind::FlipDrain: return "flip-drain";
  }
  return "?";
}

const std::vector<Kind> kUpgradeKinds{Kind::Plain,           Kind::Storm,
                                      Kind::Chain,           Kind::StopBeforeReady,
                                      Kind::StopInProbation, Kind::StopDuringHandoff,
                                      Kind::StopAfterServing, Kind::KillBeforeReady};

constexpr const char* kSpawned = "upgrade: spawned ";
constexpr const char* kRefused = ") refused: ";
constexpr const char* kOk = "upgrade: pid ";  // "upgrade: pid N is serving as generation G; probation passed"
constexpr const char* kFailed = "upgrade failed";

pid_t number_after(const std::string& line, const std::string& key) {
  const auto pos = line.find(key);
  return pos == std::string::npos ? 0 : static_cast<pid_t>(std::atol(line.c_str() + pos + key.size()));
}

class Chaos {
 public:
  Chaos(unsigned seed, long seconds) : rng_(seed), seed_(seed), seconds_(seconds) {}

  void run(long max_rounds);
  void finish();

 private:
  struct Outcome {
    bool seen = false;
    bool ok = false;
    pid_t new_pid = 0;
    std::string line;
  };

  bool write_config();
  void start_loads();
  bool stop_loads();
  void start();
  bool round(Kind kind);
  bool flip_drain();
  bool upgrade_round(Kind kind);
  bool settle(const std::string& what, pid_t expected, pid_t rolled_back);
  Outcome wait_outcome(pid_t from, size_t mark);
  pid_t wait_spawned(pid_t from, size_t mark, std::string* refusal);
  void hold(const PidFd& p, const std::string& moment);
  std::string pre_ready_moment(pid_t child, pid_t from, size_t mark);
  std::optional<nlohmann::json> status();
  bool fail(const std::string& what);
  void track(pid_t pid);
  bool coin(double p) { return std::uniform_real_distribution<double>(0, 1)(rng_) < p; }

  std::mt19937 rng_;
  unsigned seed_;
  long seconds_;
  Clock::time_point started_;

  TempDir dir_;
  std::string conf_ = dir_.file("batond.toml");
  std::string sock_ = dir_.file("echo.sock");
  std::string pid_file_ = dir_.file("batond.pid");
  std::string drain_mode_ = "wait";
  long drain_timeout_s_ = 0;

  std::optional<BatondProcess> d_;
  std::optional<LogTail> log_;
  // baton-load, restarted every kLoadRunFor: LoadRun runs it for 300 s at most.
  struct LoadTotals {
    long long messages = 0, bytes_verified = 0, churn_ok = 0, failures = 0;
    bool all_exited_cleanly = true;
    std::string summaries;  // those of runs with failures
  };
  std::optional<LoadRun> tcp_load_, unix_load_;
  Clock::time_point loads_started_;
  LoadTotals tcp_, unix_;
  int load_runs_ = 0;
  pid_t serving_ = 0;
  std::set<pid_t> generations_;

  // Round context, for failure messages.
  int rounds_ = 0;
  std::string round_desc_;
  size_t round_mark_ = 0;
  bool aborted_ = false;

  // What happened.
  int upgrades_ = 0, succeeded_ = 0, rolled_back_ = 0, refused_ = 0, flips_ = 0, disturbed_ = 0;
  std::map<std::string, int> by_kind_;
  std::map<std::string, int> moments_;
};

bool Chaos::write_config() {
  // Atomically: a generation starting right now reads the file too.
  const std::string tmp = conf_ + ".tmp";
  {
    std::ofstream out(tmp);
    out << "# written by chaos_test\n"
        << "[drain]\nmode = \"" << drain_mode_ << "\"\ntimeout = " << drain_timeout_s_ << "\n"
        << "[upgrade]\nprobation = " << kProbation << "\n";
    if (!out.flush()) return false;
  }
  return std::rename(tmp.c_str(), conf_.c_str()) == 0;
}

void Chaos::track(pid_t pid) {
  if (pid <= 0) return;
  generations_.insert(pid);
  d_->process().track_descendant(pid);  // killed and reaped with the test, whatever it asserted
}

bool Chaos::fail(const std::string& what) {
  ADD_FAILURE() << "chaos round " << rounds_ << " (" << round_desc_ << "), seed " << seed_
                << " (BATON_CHAOS_SEED=" << seed_ << " replays it): " << what << "\nlog since the round started:\n"
                << log_->excerpt(round_mark_);
  aborted_ = true;
  return false;
}

void Chaos::start() {
  // Longer than the run: in `wait` mode an old generation keeps the load's
  // persistent connections until the load stops, and a drain deadline would
  // half-close them under it (a client error by design, not a finding).
  drain_timeout_s_ = seconds_ + 600;
  drain_mode_ = coin(0.5) ? "handoff" : "wait";
  ASSERT_TRUE(write_config()) << conf_;
  d_.emplace(BatondProcess::start({"--config", conf_, "--listen", "echo=tcp://127.0.0.1:0", "--listen",
                                   "local=unix:" + sock_, "--pid-file", pid_file_, "--upgrade-timeout",
                                   std::to_string(kUpgradeTimeoutS)}));
  log_.emplace(d_->process().log_path());
  serving_ = d_->first_pid();
  generations_.insert(serving_);
  start_loads();
}

void Chaos::start_loads() {
  // About 20 connections in all, at a modest rate: two shared cores. A stall
  // fails only after 20 s, far beyond the 3.5 s a stopped process holds one.
  tcp_load_.emplace(LoadRun::start("tcp://" + d_->address("echo"),
                                   {"--connections", "16", "--pipeline", "2", "--message-size", "512", "--rate", "40",
                                    "--churn-rate", "10", "--timeout-ms", "20000"}));
  unix_load_.emplace(LoadRun::start("unix:" + sock_, {"--connections", "4", "--message-size", "2048", "--rate", "40",
                                                      "--churn-rate", "4", "--timeout-ms", "20000"}));
  loads_started_ = Clock::now();
  ++load_runs_;
}

// SIGINT to both: each verifies what is in flight, closes, reports. Adds the reports up.
bool Chaos::stop_loads() {
  bool ok = true;
  auto stop = [&](std::optional<LoadRun>& run, LoadTotals& t, const char* which) {
    if (!run) return;
    try {
      const LoadReport r = run->stop();
      t.messages += r.messages;
      t.bytes_verified += r.bytes_verified;
      t.churn_ok += r.churn_succeeded;
      t.failures += r.failures;
      // Exit status 1: failures, or nothing verified.
      if (!r.status.success()) t.all_exited_cleanly = false;
      if (r.failures) t.summaries += std::string("  ") + which + " run " + std::to_string(load_runs_) + ": " + r.summary + "\n";
    } catch (const std::exception& e) {
      ok = false;
      ADD_FAILURE() << "baton-load (" << which << "): " << e.what();
    }
    run.reset();
  };
  stop(tcp_load_, tcp_, "tcp");
  stop(unix_load_, unix_, "unix");
  return ok;
}

std::optional<nlohmann::json> Chaos::status() {
  try {
    auto r = run_command({batonctl_path(), "--control", d_->control_path(), "status", "--json"}, 20s);
    if (!r.status.success()) return std::nullopt;
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return std::nullopt;
    return j;
  } catch (const std::exception&) {
    return std::nullopt;  // timed out
  }
}

// "upgrade: spawned BINARY as pid N" from `from`, or a refusal/immediate failure.
// The spawn runs off the loop: a storm's later signals are refused as busy
// before the first one's child is reported; those refusals say it started.
pid_t Chaos::wait_spawned(pid_t from, size_t mark, std::string* refusal) {
  for (;;) {
    size_t which = 0;
    auto i = log_->wait(from, {kSpawned, kRefused, "upgrade failed ("}, mark, 20s, &which);
    if (!i) {
      *refusal = "no 'upgrade: spawned' line within 20 s";
      return 0;
    }
    if (which == 1 && log_->at(*i).find("busy: an upgrade is already in progress (spawning)") != std::string::npos) {
      mark = *i + 1;
      continue;
    }
    if (which != 0) {
      *refusal = log_->at(*i);
      return 0;
    }
    return number_after(log_->at(*i), " as pid ");
  }
}

Chaos::Outcome Chaos::wait_outcome(pid_t from, size_t mark) {
  Outcome o;
  size_t which = 0;
  auto i = log_->wait(from, {kOk, kFailed}, mark, kOutcomeTimeout, &which);
  if (!i) return o;
  o.seen = true;
  o.line = log_->at(*i);
  o.ok = which == 0;
  if (o.ok) o.new_pid = number_after(o.line, kOk);
  return o;
}

// Lets the new process `child` of `from` run to a random point before READY:
//   at-fork       between fork and exec. The old process's spawner thread
//                 waits for the exec (its loop does not): stopping the child
//                 there holds the upgrade at "spawning" until the READY
//                 timeout fails it (the child is killed once it exists).
//                 (Until the spawner thread became a lasting one, the child
//                 was only seen once that thread had exited, after the exec:
//                 children are listed per thread.)
//   after-exec    just after exec: it has said nothing yet.
//   at-listeners  it logged that it took the listeners; READY is a few
//                 microseconds away, so this lands just before READY or just
//                 after (then the old one has sent COMMIT to a stopped process,
//                 which misses its SERVING deadline: it failed after taking over).
std::string Chaos::pre_ready_moment(pid_t child, pid_t from, size_t mark) {
  const unsigned pick = rng_() % 4;
  if (pick == 0) return "at-fork";
  if (!spin_for_exec(child, from, 5s)) return "gone-before-exec";
  if (pick == 1) return "after-exec";
  if (!log_->wait(child, {"hand-off: received "}, mark, 5s, nullptr, /*spin=*/true)) return "no-listeners-line";
  return "at-listeners";
}

void Chaos::hold(const PidFd& p, const std::string& moment) {
  ++moments_[moment];
  if (!p.signal(SIGSTOP)) return;  // already gone
  p.wait_stopped();
  std::this_thread::sleep_for(kHold);  // the disturbance itself
  p.signal(SIGCONT);
}

// The pid file and batonctl name `expected`, which serves; `rolled_back` (if any) is gone.
bool Chaos::settle(const std::string& what, pid_t expected, pid_t rolled_back) {
  if (!pid_alive(expected)) return fail(what + ": pid " + std::to_string(expected) + ", which should serve, is not alive");
  if (!eventually([&] { return read_pid_file(pid_file_) == expected; }, 15s))
    return fail(what + ": the pid file names " + std::to_string(read_pid_file(pid_file_)) + ", not the serving pid " +
                std::to_string(expected));
  std::optional<nlohmann::json> st;
  const bool answered = eventually(
      [&] {
        st = status();
        return st && (*st)["pid"] == expected && (*st)["state"] == "serving" && (*st)["upgrade"]["state"] == "idle";
      },
      20s);
  if (!answered)
    return fail(what + ": batonctl status does not say that pid " + std::to_string(expected) +
                " serves, idle: " + (st ? st->dump() : std::string("no answer")));
  if (rolled_back > 0 && !wait_pid_gone(rolled_back, 20s))
    return fail(what + ": the rolled-back process " + std::to_string(rolled_back) + " still runs (state " +
                std::string(1, state_of(rolled_back)) + ")");
  return true;
}

bool Chaos::flip_drain() {
  drain_mode_ = drain_mode_ == "handoff" ? "wait" : "handoff";
  ++flips_;
  ++by_kind_[name(Kind::FlipDrain)];
  if (!write_config()) return fail("cannot write " + conf_);
  const size_t mark = log_->size();
  ::kill(serving_, SIGHUP);
  auto i = log_->wait(serving_, {"reload (SIGHUP)"}, mark, 20s);
  if (!i) return fail("no reload line after SIGHUP");
  const std::string& line = log_->at(*i);
  if (line.find("drain.mode=" + drain_mode_) == std::string::npos)
    return fail("the reload did not apply drain.mode=" + drain_mode_ + ": " + line);
  std::cout << "[ round ] " << rounds_ << " t=" << static_cast<int>(seconds_since(started_)) << "s flip-drain to "
            << drain_mode_ << " on " << serving_ << std::endl;
  return true;
}

bool Chaos::round(Kind kind) {
  round_mark_ = log_->size();
  round_desc_ = std::string(name(kind)) + ", drain " + drain_mode_ + ", serving pid " + std::to_string(serving_);
  if (kind == Kind::FlipDrain) return flip_drain();
  if (kind == Kind::StopDuringHandoff && drain_mode_ != "handoff") {
    if (!flip_drain()) return false;  // this disturbance needs the hand-off
    round_desc_ += " (flipped to handoff first)";
  }
  return upgrade_round(kind);
}

bool Chaos::upgrade_round(Kind kind) {
  const pid_t from = serving_;
  const size_t mark = log_->size();
  ++upgrades_;
  ++by_kind_[name(kind)];
  disturbed_ += kind != Kind::Plain;
  std::string moment;

  const std::set<pid_t> known = children_of(from);
  ::kill(from, SIGUSR2);
  if (kind == Kind::Storm) {
    const int more = 2 + static_cast<int>(rng_() % 4);
    for (int i = 0; i < more; ++i) ::kill(from, SIGUSR2);
  }

  pid_t next = 0;
  std::unique_ptr<PidFd> pfd;
  bool killed = false;

  if (kind == Kind::StopBeforeReady || kind == Kind::KillBeforeReady) {
    // Caught as it appears, before it can say anything.
    next = spin_for_new_child(from, known, 20s);
    if (!next) return fail("no new process appeared under pid " + std::to_string(from));
    pfd = std::make_unique<PidFd>(next);
    track(next);
    moment = pre_ready_moment(next, from, mark);
    if (kind == Kind::StopBeforeReady) {
      hold(*pfd, std::string(name(kind)) + ":" + moment);
    } else {
      pfd->signal(SIGSTOP);
      const bool stopped = pfd->wait_stopped();
      // It accepts only in its loop, which runs after "serving:" is logged
      // (log lines are written at once). Without that line it holds no client.
      if (stopped && log_->count(next, "serving: generation", mark) == 0) {
        pfd->signal(SIGKILL);
        killed = true;
        ++moments_[std::string(name(kind)) + ":" + moment];
      } else {
        pfd->signal(SIGCONT);
        ++moments_[std::string(name(kind)) + ":missed (it already served)"];
      }
    }
    std::string refusal;
    if (moment == "at-fork") {
      // Stopped before its exec and held past the READY timeout: the spawn
      // may not return in time. The upgrade then fails without a 'spawned'
      // line, and the child is killed once it exists (settle checks it is gone).
      size_t which = 0;
      auto i = log_->wait(from, {kSpawned, kFailed}, mark, 20s, &which);
      if (!i) return fail("neither a 'spawned' line nor a failure after a stop at fork");
      if (which == 1 && log_->at(*i).find("no READY within") == std::string::npos)
        return fail("a stop at fork failed the upgrade, but not at its READY timeout: " + log_->at(*i));
      if (which == 0 && number_after(log_->at(*i), " as pid ") != next)
        return fail("the spawned line names another process than the new child " + std::to_string(next) + ": " +
                    log_->at(*i));
    } else {
      const pid_t logged = wait_spawned(from, mark, &refusal);
      if (logged != next) return fail("the spawned line names " + std::to_string(logged) + ", the new child was " +
                                      std::to_string(next) + (refusal.empty() ? "" : ": " + refusal));
    }
  } else {
    std::string refusal;
    next = wait_spawned(from, mark, &refusal);
    if (!next) return fail("nothing spawned: " + refusal);
    pfd = std::make_unique<PidFd>(next);
    track(next);
  }

  if (kind == Kind::Storm) ::kill(from, SIGUSR2);  // surely busy now

  pid_t chained_from = 0;
  size_t chain_mark = 0;
  bool stopped_early = false;
  if (kind == Kind::StopInProbation || kind == Kind::Chain ||
      (kind == Kind::StopDuringHandoff && coin(0.6))) {
    // COMMIT sent: the new one accepts from now on, the old one stays ready to resume.
    const std::string needle =
        kind == Kind::StopDuringHandoff ? "successor pid " + std::to_string(next) + " serves; probation"
                                        : "upgrade: committed; successor=" + std::to_string(next);
    size_t which = 0;
    auto i = log_->wait(from, {needle, kFailed}, mark, kOutcomeTimeout, &which);
    if (!i) return fail("neither '" + needle + "' nor a failure");
    if (which == 0) {
      if (kind == Kind::Chain) {
        // The new one upgrades itself while the old one still has it on probation.
        chain_mark = log_->size();
        chained_from = next;
        const std::set<pid_t> known2 = children_of(next);
        ::kill(next, SIGUSR2);
        if (coin(0.5)) {
          ++moments_["chain:plain"];
        } else {
          // ... and that upgrade is disturbed too: the third process is
          // stopped before (or right at) its READY, held past the timeout.
          const pid_t third = spin_for_new_child(next, known2, 20s);
          if (!third) return fail("no process appeared under pid " + std::to_string(next) + " after its SIGUSR2");
          track(third);
          PidFd p3(third);
          hold(p3, "chain:third-stopped-" + pre_ready_moment(third, next, chain_mark));
        }
      } else {
        // stop-in-probation: before its SERVING is read, likely (it is then
        // killed when upgrade.timeout passes) or after; stop-during-handoff:
        // its SERVING is in, so the probation passes and the connections
        // are handed to a stopped process.
        hold(*pfd, std::string(name(kind)) + (kind == Kind::StopDuringHandoff ? ":from-serving" : ":at-commit"));
        stopped_early = true;
      }
    }
  }

  const Outcome out = wait_outcome(from, mark);
  if (!out.seen) return fail("no upgrade outcome from pid " + std::to_string(from));
  if (out.ok && out.new_pid != next)
    return fail("the outcome names pid " + std::to_string(out.new_pid) + ", the new process was " + std::to_string(next));
  if (killed && out.ok) return fail("the new process was killed before it served, yet the upgrade succeeded: " + out.line);
  if (kind == Kind::Storm && log_->count(from, kSpawned, mark) != 1)
    return fail("a storm of SIGUSR2 started " + std::to_string(log_->count(from, kSpawned, mark)) +
                " upgrades at once");

  if (kind == Kind::StopInProbation && stopped_early)
    ++moments_[std::string(name(kind)) + (out.ok ? ":landed-after-serving" : ":landed-before-serving")];
  if (kind == Kind::StopBeforeReady || (kind == Kind::KillBeforeReady && killed)) {
    // Did the disturbance land before READY? Then the old process never sent COMMIT.
    const bool before_ready = !out.ok && out.line.find("in probation") == std::string::npos;
    ++moments_[std::string(name(kind)) + (before_ready ? ":landed-before-ready" : ":landed-after-ready")];
  }
  if (out.ok) {
    ++succeeded_;
    serving_ = next;
  } else {
    ++rolled_back_;
  }

  // Disturbances that come after the outcome.
  if (out.ok && kind == Kind::StopDuringHandoff && !stopped_early) {
    // As the hand-off starts (it runs right after the outcome): stopped in the middle of it, or just after.
    log_->wait(from, {"handoff: handing", "handoff: done", "exiting with status"}, mark, 20s);
    hold(*pfd, std::string(name(kind)) + ":at-handoff-start");
  }
  if (out.ok && kind == Kind::StopAfterServing) {
    if (drain_mode_ == "handoff") {
      // Stopped once the hand-off is over (or the old one is gone).
      log_->wait(from, {"handoff: done", "handoff: ended", "exiting with status"}, mark, 20s);
    }
    hold(*pfd, std::string(name(kind)) + ":" + drain_mode_);
  }

  if (chained_from) {
    // The second upgrade, started at COMMIT of the first.
    std::string refusal;
    const pid_t third = wait_spawned(chained_from, chain_mark, &refusal);
    if (third) {
      track(third);
      ++upgrades_;
      const Outcome o2 = wait_outcome(chained_from, chain_mark);
      if (!o2.seen) return fail("no outcome of the chained upgrade from pid " + std::to_string(chained_from));
      if (o2.ok) {
        ++succeeded_;
        if (!out.ok) return fail("the chained upgrade succeeded, but its predecessor's probation failed: " + out.line);
        serving_ = third;
      } else {
        ++rolled_back_;
        if (!settle("after the chained upgrade", serving_, third)) return false;
      }
    } else {
      ++refused_;
      ++moments_["chain:refused"];
      std::cout << "[ round ] chain refused: " << refusal << std::endl;
    }
  }

  if (out.ok && drain_mode_ == "handoff") {
    // The old generation gives its connections away once the probation is
    // over; having handed over all of them, it has nothing left to drain.
    size_t which = 0;
    auto i = log_->wait(from, {"handoff: done", "handoff: ended", "exiting with status"}, mark, 30s, &which);
    if (!i) return fail("old pid " + std::to_string(from) + " neither finished its hand-off nor exited");
    const std::string line = log_->at(*i);
    if ((which == 0 && line.find(" 0 kept here") != std::string::npos) || which == 2) {
      if (!wait_pid_gone(from, 15s))
        return fail("old pid " + std::to_string(from) + " kept no connection (" + line + ") but still runs");
    }
  }

  refused_ += log_->count(from, kRefused, mark);
  std::cout << "[ round ] " << rounds_ << " t=" << static_cast<int>(seconds_since(started_)) << "s " << name(kind)
            << (moment.empty() ? "" : "(" + moment + ")") << " drain=" << drain_mode_ << " " << from << " -> " << next
            << (chained_from ? " -> chained" : "") << ": " << (out.ok ? "ok" : "rolled back") << ", serving "
            << serving_ << std::endl;
  return settle(out.ok ? "after a successful upgrade" : "after a rolled-back upgrade", serving_, out.ok ? 0 : next);
}

void Chaos::run(long max_rounds) {
  started_ = Clock::now();
  start();
  if (::testing::Test::HasFatalFailure()) return;
  const auto end = started_ + std::chrono::seconds(seconds_);
  while (Clock::now() < end && rounds_ < max_rounds && !aborted_) {
    if (Clock::now() - loads_started_ > kLoadRunFor) {
      // Between two rounds: the clients close, new ones connect.
      if (!stop_loads()) break;
      try {
        start_loads();
      } catch (const std::exception& e) {
        fail(std::string("baton-load did not start again: ") + e.what());
        break;
      }
      std::cout << "[ round ] t=" << static_cast<int>(seconds_since(started_)) << "s baton-load restarted (run "
                << load_runs_ << ")" << std::endl;
    }
    ++rounds_;
    // Plain upgrades and flips are there for contrast and for both drain
    // modes (stop-during-handoff flips to handoff by itself): half and a
    // sixteenth of the share, so that most of the time goes to disturbances.
    Kind kind = rng_() % 16 == 0 ? Kind::FlipDrain : kUpgradeKinds[rng_() % kUpgradeKinds.size()];
    if (kind == Kind::Plain && coin(0.5)) kind = kUpgradeKinds[1 + rng_() % (kUpgradeKinds.size() - 1)];
    if (!round(kind)) break;
  }
}

void Chaos::finish() {
  if (!d_) return;
  const double ran = seconds_since(started_);
  const bool loads_ok = stop_loads();
  const LoadTotals& tcp = tcp_;
  const LoadTotals& unix = unix_;
  const long long client_errors = tcp.failures + unix.failures;

  std::ostringstream kinds;
  for (const auto& [k, n] : by_kind_) kinds << (kinds.tellp() ? ", " : "") << k << " " << n;
  std::cout << "[ chaos ] seed " << seed_ << ": " << rounds_ << " rounds in " << static_cast<int>(ran) << " s; "
            << upgrades_ << " upgrades attempted, " << succeeded_ << " succeeded, " << rolled_back_
            << " rolled back, " << refused_ << " refused; disturbances: " << kinds.str() << "; client errors "
            << client_errors << "; messages " << tcp.messages + unix.messages << (aborted_ ? " (ABORTED)" : "")
            << std::endl;
  nlohmann::json summary{{"seed", seed_},
                         {"seconds", seconds_},
                         {"ran_s", static_cast<int>(ran)},
                         {"rounds", rounds_},
                         {"upgrades", upgrades_},
                         {"disturbed", disturbed_},
                         {"succeeded", succeeded_},
                         {"rolled_back", rolled_back_},
                         {"refused", refused_},
                         {"disturbances", by_kind_},
                         {"moments", moments_},
                         {"client_errors", client_errors},
                         {"messages", tcp.messages + unix.messages},
                         {"bytes_verified", tcp.bytes_verified + unix.bytes_verified},
                         {"churn_ok", tcp.churn_ok + unix.churn_ok},
                         {"load_runs", load_runs_},
                         {"generations", generations_.size()},
                         {"completed", !aborted_ && loads_ok}};
  std::cout << "chaos-summary: " << summary.dump() << std::endl;

  // The clients saw nothing.
  EXPECT_TRUE(loads_ok);
  EXPECT_EQ(tcp.failures, 0) << "seed " << seed_ << ", baton-load over TCP:\n" << tcp.summaries;
  EXPECT_EQ(unix.failures, 0) << "seed " << seed_ << ", baton-load over the Unix listener:\n" << unix.summaries;
  EXPECT_TRUE(tcp.all_exited_cleanly && unix.all_exited_cleanly) << "a baton-load run exited non-zero";
  EXPECT_GT(tcp.bytes_verified, 0);
  EXPECT_GT(unix.bytes_verified, 0);

  // Every generation the log names, however it came to be.
  const size_t total = log_->size();
  for (size_t i = 0; i < total; ++i)
    if (pid_t p = number_after(log_->at(i), " as pid ")) track(p);

  // Exactly one serves: the pid file names it, it lives, batonctl reaches it, both listeners echo.
  const pid_t named = read_pid_file(pid_file_);
  EXPECT_TRUE(pid_alive(named)) << "the pid file names " << named << ", which is not alive";
  EXPECT_EQ(named, serving_) << "seed " << seed_ << ": the pid file does not name the pid the outcomes say serves";
  auto st = status();
  EXPECT_TRUE(st.has_value()) << "batonctl status got no answer";
  if (st) {
    EXPECT_EQ((*st)["pid"], named) << st->dump();
    EXPECT_EQ((*st)["state"], "serving") << st->dump();
  }
  {
    auto t = connect_to(d_->address("echo"));
    EXPECT_TRUE(t && echo_roundtrip(t.get(), "tcp after the chaos\n")) << "seed " << seed_;
    auto u = connect_to(sock_);
    EXPECT_TRUE(u && echo_roundtrip(u.get(), "unix after the chaos\n")) << "seed " << seed_;
  }

  // Every older generation is gone: its clients have left (the load stopped),
  // so it must not wait for its drain deadline. None left a zombie.
  // One deadline for all of them: the load has stopped, nothing is left to drain.
  const auto gone_by = Clock::now() + 30s;
  std::vector<pid_t> lingering;
  for (pid_t g : generations_) {
    if (g == named) continue;
    const auto left = std::max(std::chrono::milliseconds(100),
                               std::chrono::duration_cast<std::chrono::milliseconds>(gone_by - Clock::now()));
    // The first generation is the harness's own child: reaped there, with its status.
    if (!d_->wait_gone(g, left)) lingering.push_back(g);
  }
  if (d_->first_pid() != named) {
    auto first = d_->process().wait_exit(1s);
    if (first) {
      EXPECT_TRUE(first->success()) << "seed " << seed_ << ": the first generation ended with " << first->describe();
    }
  }
  for (pid_t g : lingering)
    ADD_FAILURE() << "seed " << seed_ << ": generation pid " << g << " still runs (state " << state_of(g)
                  << ") 30 s after its clients left; its last lines:\n"
                  << [&] {
                       std::ostringstream o;
                       int n = 0;
                       for (size_t i = total; i-- > 0 && n < 25;)
                         if (log_->at(i).find(pid_tag(g)) != std::string::npos) o << "  " << log_->at(i) << "\n", ++n;
                       return o.str();
                     }();
  EXPECT_EQ(zombie_children_of(named), 0) << "zombies under the serving pid " << named;
  reap_zombies();
  EXPECT_EQ(zombie_children_of(::getpid()), 0);

  // Nobody failed after taking over: every generation that served and is
  // gone left with status 0, and no older one had to resume for it.
  const size_t end = log_->size();
  std::ostringstream bad;
  for (size_t i = 0; i < end; ++i) {
    const std::string& l = log_->at(i);
    if (l.find("after taking over; resuming") != std::string::npos || l.find("fatal: ") != std::string::npos ||
        l.find("refused transition") != std::string::npos || l.find("exiting with status 1") != std::string::npos ||
        l.find("event loop still has open handles") != std::string::npos)
      bad << "  " << l << "\n";
  }
  for (pid_t g : generations_) {
    // Served: the first generation, and any whose SERVING its predecessor
    // read. One stopped between its "serving:" line and SERVING has accepted
    // nothing, and is rightly killed when the SERVING deadline passes.
    const bool served = g == d_->first_pid() ||
                        log_->count(0, "successor pid " + std::to_string(g) + " serves; probation") > 0;
    if (g == named || !served) continue;
    if (!pid_alive(g) && log_->count(g, "exiting with status 0") == 0)
      bad << "  pid " << g << " served, is gone, and never logged 'exiting with status 0' (crashed or killed)\n";
  }
  EXPECT_TRUE(bad.str().empty()) << "seed " << seed_ << ": a generation failed:\n" << bad.str();
  if (::testing::Test::HasFailure()) std::cout << "[ chaos ] seed " << seed_ << " FAILED" << std::endl;
}

TEST(Chaos, RandomDisturbedUpgradesUnderLoadLoseNothing) {
  const long seconds = env_long("BATON_CHAOS_SECONDS", 40);
  const long max_rounds = env_long("BATON_CHAOS_ROUNDS", 1000);
  std::random_device rd;
  const unsigned seed = static_cast<unsigned>(env_long("BATON_CHAOS_SEED", static_cast<long>(rd() % 1000000000u)));
  std::cout << "[ chaos ] seed " << seed << ", at most " << seconds << " s and " << max_rounds
            << " rounds (BATON_CHAOS_SEED=" << seed << " replays the choices)" << std::endl;
  Chaos chaos(seed, seconds);
  chaos.run(max_rounds);
  chaos.finish();
}

}  // namespace
}  // namespace baton::test
