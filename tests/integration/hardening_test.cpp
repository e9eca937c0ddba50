// Hostile or careless peers against the real batond: clients that never read,
// a connect flood past --max-connections, running out of fds, a control
// connection from another user, and a "predecessor" that sends the new
// process garbage. Each test first proves that the fault really happened (a
// writer stalled, the limit line was logged, the fd table is full, the
// kernel refused the connect, the bad message was read), then checks that
// batond coped: bounded memory, no spin, no leak, no unlinked socket, and
// service for everyone else.

#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "baton/handoff/channel.h"
#include "baton/handoff/listen_address.h"
#include "baton/handoff/listener_socket.h"
#include "baton/handoff/protocol.h"
#include "support/batond.h"
#include "support/client.h"

namespace baton::test {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The port of "127.0.0.1:41234".
int port_of(const std::string& endpoint) { return std::stoi(endpoint.substr(endpoint.rfind(':') + 1)); }

int local_port(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return -1;
  return ntohs(sa.sin_port);
}

// The queues of one end of a loopback TCP connection, from /proc/net/tcp:
// tx = bytes written but not yet acknowledged by the peer (over loopback: not
// yet in the peer's receive queue), rx = bytes received but not yet read.
// {-1, -1} if there is no such socket.
struct TcpQueues {
  long tx = -1;
  long rx = -1;
};
TcpQueues tcp_queues(int local_port, int remote_port) {
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string slot, local, remote, state, queues;
    f >> slot >> local >> remote >> state >> queues;
    const int lport = std::stoi(local.substr(local.find(':') + 1), nullptr, 16);
    const int rport = std::stoi(remote.substr(remote.find(':') + 1), nullptr, 16);
    if (lport == local_port && rport == remote_port)
      return {std::stol(queues.substr(0, queues.find(':')), nullptr, 16),
              std::stol(queues.substr(queues.find(':') + 1), nullptr, 16)};
  }
  return {};
}

// utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15).
long cpu_ticks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  std::getline(in, content);
  auto rparen = content.rfind(')');
  if (rparen == std::string::npos) return -1;
  std::istringstream rest(content.substr(rparen + 2));
  std::vector<std::string> f;
  for (std::string s; rest >> s && f.size() < 13;) f.push_back(s);
  if (f.size() < 13) return -1;
  return std::stol(f[11]) + std::stol(f[12]);  // f[0] is field 3 (state)
}

// "Max open files  64  64  files" from /proc/PID/limits, as {soft, hard}.
std::pair<long, long> fd_limits(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("Max open files", 0) != 0) continue;
    std::istringstream f(line.substr(std::strlen("Max open files")));
    long soft = -1, hard = -1;
    f >> soft >> hard;
    return {soft, hard};
  }
  return {-1, -1};
}

// How many of a process's fd numbers below `limit` are in use. (Fds it
// inherited above the limit, say from whoever ran the tests, do not count.)
int fds_below(pid_t pid, int limit) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec))
    n += std::stoi(e.path().filename().string()) < limit;
  return n;
}

// 0: the peer closed (EOF), 1: reset, -1: nothing to read yet (still open).
int peer_state_now(int fd) {
  char c;
  ssize_t r = ::recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
  if (r == 0) return 0;
  if (r < 0 && errno == ECONNRESET) return 1;
  return -1;
}

// The last of the three numbers in /proc/sys/net/ipv4/tcp_{r,w}mem: the most a
// TCP socket's buffer may grow to.
size_t sysctl_max(const std::string& path) {
  std::ifstream in(path);
  size_t lo = 0, def = 0, hi = 0;
  in >> lo >> def >> hi;
  return hi;
}

// ---- clients that write and never read ----------------------------------------------

// What writer `c` sends at stream offset i: a 65521-byte (prime) block, so a
// chunk lost, repeated or swapped anywhere shows as a mismatch.
std::string writer_block(int c) { return random_bytes(65521, 1000 + static_cast<unsigned>(c)); }

TEST(Hardening, ClientsThatNeverReadCannotGrowTheDaemonsMemory) {
  constexpr int kWriters = 20;
  constexpr long kRssBoundKib = 64 * 1024;      // 20 x (256 KiB high-water + one 64 KiB read) is ~6.4 MiB
  constexpr auto kStall = std::chrono::seconds(1);
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"});
  const pid_t pid = d.serving_pid();
  const int daemon_port = port_of(d.address());
  auto steady = connect_to(d.address());
  ASSERT_TRUE(steady && echo_roundtrip(steady.get(), "before the writers\n"));
  const long rss_before = rss_kib(pid);
  ASSERT_GT(rss_before, 0);
  // A writer that gets past what the kernel can buffer on both ends, plus a
  // wide margin, was never stopped by batond.
  const size_t writer_cap = (64u << 20) + sysctl_max("/proc/sys/net/ipv4/tcp_rmem") +
                            sysctl_max("/proc/sys/net/ipv4/tcp_wmem");

  std::vector<UniqueFd> writers;
  std::vector<std::string> blocks;
  for (int c = 0; c < kWriters; ++c) {
    writers.push_back(connect_to(d.address()));
    ASSERT_TRUE(writers.back()) << "connect " << c << ": " << std::strerror(errno);
    // Small client-side buffers: less kernel memory tied up in the test (the
    // daemon's side keeps its defaults, which is what is under test).
    const int buf = 128 * 1024;
    ::setsockopt(writers.back().get(), SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    ::setsockopt(writers.back().get(), SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    blocks.push_back(writer_block(c));
  }
  // Every writer sends until it has made no progress for kStall: the daemon
  // stopped reading it and every buffer in between is full.
  std::vector<size_t> written(kWriters, 0);
  std::vector<Clock::time_point> last_progress(kWriters, Clock::now());
  std::vector<bool> stalled(kWriters, false);
  const auto started = Clock::now();
  for (int round = 0; round < 100000; ++round) {
    ASSERT_LT(seconds_since(started), 120) << "writers still making progress after 120 s";
    std::vector<pollfd> pfds;
    std::vector<int> who;
    for (int c = 0; c < kWriters; ++c) {
      if (stalled[c]) continue;
      if (Clock::now() - last_progress[c] >= kStall) {
        stalled[c] = true;
        continue;
      }
      pfds.push_back({writers[c].get(), POLLOUT, 0});
      who.push_back(c);
    }
    if (pfds.empty()) break;
    if (::poll(pfds.data(), pfds.size(), 100) < 0 && errno != EINTR) FAIL() << "poll: " << std::strerror(errno);
    for (size_t k = 0; k < pfds.size(); ++k) {
      if (!(pfds[k].revents & POLLOUT)) continue;
      const int c = who[k];
      const std::string& b = blocks[c];
      const size_t off = written[c] % b.size();
      ssize_t n = ::send(writers[c].get(), b.data() + off, b.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        written[c] += static_cast<size_t>(n);
        last_progress[c] = Clock::now();
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        FAIL() << "writer " << c << ": send: " << std::strerror(errno);
      }
      ASSERT_LT(written[c], writer_cap) << "writer " << c << " was never stopped: the daemon kept reading";
    }
  }
  ASSERT_TRUE(std::all_of(stalled.begin(), stalled.end(), [](bool s) { return s; }));

  // The fault: every writer is blocked, and for each, batond has read at
  // least the 256 KiB high-water mark (what was written minus what still sits
  // in the kernel on the way to it), and then stopped reading: its receive
  // queue holds bytes it leaves unread.
  size_t total = 0;
  long least_read = -1;
  for (int c = 0; c < kWriters; ++c) {
    total += written[c];
    const int client_port = local_port(writers[c].get());
    const TcpQueues client_end = tcp_queues(client_port, daemon_port);
    const TcpQueues daemon_end = tcp_queues(daemon_port, client_port);
    ASSERT_GE(client_end.tx, 0);
    ASSERT_GE(daemon_end.rx, 0);
    const long read_by_batond = static_cast<long>(written[c]) - client_end.tx - daemon_end.rx;
    least_read = least_read < 0 ? read_by_batond : std::min(least_read, read_by_batond);
    EXPECT_GE(read_by_batond, 256 * 1024) << "writer " << c << ": batond stopped reading before the high-water mark";
    EXPECT_GT(daemon_end.rx, 0) << "batond is not holding writer " << c << "'s bytes unread: it did not stop reading";
  }
  const long rss_during = rss_kib(pid);
  const auto [lo, hi] = std::minmax_element(written.begin(), written.end());
  std::cout << "[ figure ] " << kWriters << " writers stalled after " << seconds_since(started) << " s; written "
            << total / 1024 << " KiB in all (" << *lo / 1024 << ".." << *hi / 1024
            << " KiB each); batond read at least " << least_read / 1024 << " KiB of each before it stopped\n"
            << "[ figure ] batond RSS " << rss_before << " KiB before, " << rss_during << " KiB with all stalled (+"
            << rss_during - rss_before << " KiB, bound " << kRssBoundKib << " KiB)\n";
  EXPECT_LT(rss_during - rss_before, kRssBoundKib);

  // Meanwhile everyone else is served: the connection from before, and a new one.
  const std::string big = random_bytes(256 * 1024, 5);
  EXPECT_TRUE(echo_roundtrip(steady.get(), big)) << "an existing client was starved by the writers";
  auto fresh = connect_to(d.address());
  EXPECT_TRUE(fresh && echo_roundtrip(fresh.get(), big)) << "a new client was not served while the writers stalled";

  // Once they read, every writer gets exactly what it sent, in order.
  for (int c = 0; c < kWriters; ++c) {
    const std::string& b = blocks[c];
    for (size_t got = 0; got < written[c];) {
      const size_t n = std::min<size_t>(1 << 20, written[c] - got);
      auto chunk = recv_exact(writers[c].get(), n, std::chrono::seconds(30));
      ASSERT_TRUE(chunk) << "writer " << c << ": echo stopped at byte " << got << " of " << written[c];
      for (size_t i = 0; i < n; ++i) {
        if ((*chunk)[i] != b[(got + i) % b.size()]) FAIL() << "writer " << c << ": wrong byte at offset " << got + i;
      }
      got += n;
    }
  }
  EXPECT_TRUE(d.process().running());
}

// ---- a connect flood past --max-connections -----------------------------------------

TEST(Hardening, ConnectFloodPastMaxConnectionsClosesTheExcessAndServesTheRest) {
  constexpr int kMax = 50;
  constexpr int kFlood = 300;
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--max-connections", std::to_string(kMax)});
  const pid_t pid = d.serving_pid();

  std::vector<UniqueFd> flood;
  const auto started = Clock::now();
  for (int i = 0; i < kFlood; ++i) {
    flood.push_back(connect_to(d.address()));
    ASSERT_TRUE(flood.back()) << "connect " << i << ": " << std::strerror(errno);
  }
  const double connect_s = seconds_since(started);
  ASSERT_TRUE(d.wait_for_line(pid, "max-connections " + std::to_string(kMax) + " reached")) << d.log();

  // The excess is closed at accept: each of those sees EOF (not a reset: it
  // sent nothing), and quickly. The others stay open.
  std::vector<int> state(kFlood, -1);
  auto count = [&](int s) { return static_cast<int>(std::count(state.begin(), state.end(), s)); };
  const bool settled = eventually([&] {
    for (int i = 0; i < kFlood; ++i)
      if (state[i] < 0) state[i] = peer_state_now(flood[i].get());
    return count(0) + count(1) >= kFlood - kMax;
  });
  const double closed_s = seconds_since(started);
  ASSERT_TRUE(settled) << count(0) << " EOF, " << count(1) << " reset, " << count(-1) << " open\n" << d.log();
  EXPECT_EQ(count(0), kFlood - kMax);
  EXPECT_EQ(count(1), 0);
  EXPECT_EQ(count(-1), kMax);
  std::cout << "[ figure ] " << kFlood << " connects in " << connect_s << " s; " << count(0) << " closed at accept, "
            << count(-1) << " served; all settled " << closed_s << " s after the first connect\n";

  // The ones it accepted are served; one more at the limit is closed.
  for (int i = 0; i < kFlood; ++i) {
    if (state[i] >= 0) continue;
    EXPECT_TRUE(echo_roundtrip(flood[i].get(), "served " + std::to_string(i) + "\n")) << "connection " << i;
  }
  auto at_limit = connect_to(d.address());
  ASSERT_TRUE(at_limit);
  EXPECT_TRUE(wait_eof(at_limit.get())) << "a connection past the limit was not closed";

  // Once the flood is gone, a full set of new connections is served again,
  // and the limit still holds for the one after them.
  // batond forgets a closed connection a loop turn or two after its EOF, so
  // each new one may be turned away a few times until the flood is gone.
  flood.clear();
  at_limit.reset();
  std::vector<UniqueFd> again;
  for (int i = 0; i < kMax; ++i) {
    ASSERT_TRUE(eventually([&] {
      auto c = connect_to(d.address());
      if (!c || !echo_roundtrip(c.get(), "again " + std::to_string(i) + "\n", std::chrono::seconds(2))) return false;
      again.push_back(std::move(c));
      return true;
    })) << "connection " << i << " after the flood was not served\n" << d.log();
  }
  auto over = connect_to(d.address());
  ASSERT_TRUE(over);
  EXPECT_TRUE(wait_eof(over.get())) << "the limit no longer holds after the flood";
  EXPECT_TRUE(d.process().running());
}

// ---- out of file descriptors --------------------------------------------------------

TEST(Hardening, OutOfFdsTheDaemonPausesAcceptInsteadOfSpinningAndServesTheQueueLater) {
  constexpr int kFdLimit = 64;
  constexpr int kMaxTries = 3 * kFdLimit;  // bounds the search for the limit
  constexpr int kQueuedExtra = 20;
  TempDir dir;
  // batond raises its soft limit to the hard one at start-up, so both are
  // lowered (dash's `ulimit -n` sets both). The shell execs: the pid is batond's.
  const std::string cmd = "ulimit -n " + std::to_string(kFdLimit) + " && exec '" + batond_path() +
                          "' --listen echo=tcp://127.0.0.1:0 --control '" + dir.file("control.sock") + "'";
  auto p = TestProcess::start({"/bin/sh", "-c", cmd});
  ASSERT_TRUE(p.wait_for_line("serving: generation 1")) << p.log();
  const pid_t pid = p.pid();
  ASSERT_EQ(fd_limits(pid), std::make_pair(long{kFdLimit}, long{kFdLimit})) << "the limit did not take";
  auto listening = p.wait_for_line("listening name=echo ");
  ASSERT_TRUE(listening);
  const std::string addr = field(*listening, "addr");
  const size_t fds_at_start = open_fds(pid).size();

  // One connection at a time until batond can accept no more: each is either
  // accepted (its fd count goes up) or refused by accept4 with EMFILE (the
  // pause line). Connections past that wait in the kernel's backlog.
  const std::string pause_line = "pausing accept for 100 ms";
  std::vector<UniqueFd> served, queued;
  for (int i = 0; i < kMaxTries && queued.empty(); ++i) {
    const size_t before = open_fds(pid).size();
    auto c = connect_to(addr);
    ASSERT_TRUE(c) << "connect " << i << ": " << std::strerror(errno);
    ASSERT_TRUE(eventually([&] { return open_fds(pid).size() > before || p.count_lines(pause_line) > 0; }))
        << "connection " << i << " neither accepted nor refused\n" << p.log();
    (p.count_lines(pause_line) > 0 ? queued : served).push_back(std::move(c));
  }
  ASSERT_EQ(queued.size(), 1u) << "batond never ran out of fds after " << kMaxTries << " connections\n" << p.log();
  for (int i = 0; i < kQueuedExtra; ++i) {
    queued.push_back(connect_to(addr));
    ASSERT_TRUE(queued.back()) << "connect to the backlog: " << std::strerror(errno);
  }
  // The fault: every fd slot is taken, and accept4 failed with EMFILE.
  EXPECT_EQ(fds_below(pid, kFdLimit), kFdLimit);
  auto first_pause = p.wait_for_line(pause_line);
  ASSERT_TRUE(first_pause);
  EXPECT_NE(first_pause->find("Too many open files"), std::string::npos) << *first_pause;

  // No spin while the backlog waits: measured over two more (rate-limited,
  // 1 per second) pause lines, batond uses a small fraction of one core, and
  // retries about ten times a second, not thousands.
  const int lines_before = p.count_lines(pause_line);
  const long ticks_before = cpu_ticks(pid);
  const auto window_start = Clock::now();
  auto later = p.wait_for_line(pause_line, std::chrono::seconds(15), lines_before + 1);
  ASSERT_TRUE(later) << p.log();
  const double window_s = seconds_since(window_start);
  const long ticks = cpu_ticks(pid) - ticks_before;
  const double cpu_share = static_cast<double>(ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK)) / window_s;
  const auto times = later->find(" times since last report");
  ASSERT_NE(times, std::string::npos) << *later;
  const long retries = std::stol(later->substr(later->rfind('(', times) + 1));
  std::cout << "[ figure ] fd limit " << kFdLimit << ": " << fds_at_start << " fds at start, " << served.size()
            << " connections accepted, " << queued.size() << " queued; over " << window_s << " s at the limit: "
            << ticks << " CPU ticks (" << cpu_share * 100 << "% of one core), " << retries
            << " accept retries in the last report\n";
  EXPECT_LT(cpu_share, 0.5) << "batond spins while out of fds";
  EXPECT_LE(retries, 50) << "batond retries accept far more often than every 100 ms";
  EXPECT_GE(retries, 2) << "the pause is not being retried";

  // Recovery: free fds by closing some served clients; every queued
  // connection is then accepted and echoed (never reset), as is a new one.
  const size_t to_close = queued.size() + 5;
  ASSERT_GE(served.size(), to_close) << "too few fds left at start-up to run this test";
  served.erase(served.begin(), served.begin() + static_cast<long>(to_close));
  for (size_t i = 0; i < queued.size(); ++i)
    EXPECT_TRUE(echo_roundtrip(queued[i].get(), "from the backlog " + std::to_string(i) + "\n"))
        << "queued connection " << i << " was not served once fds were free";
  for (size_t i = 0; i < served.size(); ++i)
    EXPECT_TRUE(echo_roundtrip(served[i].get(), "still here\n")) << "served connection " << i;
  queued.clear();
  auto fresh = connect_to(addr);
  EXPECT_TRUE(fresh && echo_roundtrip(fresh.get(), "fresh\n"));
  EXPECT_TRUE(p.running());
}

// ---- the control socket, from another user ------------------------------------------

struct OtherUserAttempt {
  int connect_errno = 0;  // 0: connected
  int outcome = 0;        // kReply, kClosed, kTimeout, or 0 when the connect failed
  char reply[256] = {};
};
constexpr int kReply = 1, kClosed = 2, kTimeout = 3, kChildFailed = 4;

// Forks, becomes `uid`/`gid` (no supplementary groups), connects to `path`,
// sends a status request and reports what came back. Only async-signal-safe
// calls in the child: this process may have threads.
OtherUserAttempt connect_as(uid_t uid, gid_t gid, const std::string& path) {
  OtherUserAttempt result;
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  static const char kRequest[] = "{\"v\":1,\"cmd\":\"status\"}\n";
  pid_t child = ::fork();
  if (child < 0) throw std::runtime_error("fork");
  if (child == 0) {
    OtherUserAttempt r;
    if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0 || ::getuid() != uid) {
      r.outcome = kChildFailed;
    } else {
      int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
        r.connect_errno = errno;
      } else {
        (void)::send(fd, kRequest, sizeof kRequest - 1, MSG_NOSIGNAL);  // may fail: already closed
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 10000) <= 0) {
          r.outcome = kTimeout;
        } else {
          ssize_t n = ::recv(fd, r.reply, sizeof r.reply - 1, 0);
          r.outcome = n > 0 ? kReply : kClosed;  // 0: EOF; <0: reset (closed with our request unread)
        }
      }
    }
    (void)::write(pipefd[1], &r, sizeof r);
    ::_exit(0);
  }
  ::close(pipefd[1]);
  pollfd p{pipefd[0], POLLIN, 0};
  bool got = ::poll(&p, 1, 20000) == 1 && ::read(pipefd[0], &result, sizeof result) == sizeof result;
  ::close(pipefd[0]);
  ::kill(child, SIGKILL);  // gone already unless it hung
  int st;
  ::waitpid(child, &st, 0);
  if (!got) result.outcome = kChildFailed;
  return result;
}

TEST(Hardening, ControlSocketRefusesAnotherUserEvenIfItsModeIsLoosened) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root, to connect as another user (running as uid " << ::geteuid() << ")";
  const passwd* nobody = ::getpwnam("nobody");
  if (!nobody) GTEST_SKIP() << "no user 'nobody' on this machine";
  const uid_t uid = nobody->pw_uid;
  const gid_t gid = nobody->pw_gid;
  ASSERT_NE(uid, 0u);

  TempDir dir;  // mkdtemp: 0700
  // Every directory above ours must let others through, or the kernel
  // refuses the path itself and the checks below prove nothing.
  for (auto up = std::filesystem::path(dir.path()).parent_path(); !up.empty(); up = up.parent_path()) {
    struct stat ds{};
    if (::stat(up.c_str(), &ds) != 0 || !(ds.st_mode & S_IXOTH))
      GTEST_SKIP() << up << " is not searchable by other users; set TMPDIR to a directory that is (e.g. /tmp)";
    if (up == up.root_path()) break;
  }
  const std::string run_dir = dir.file("run");
  const std::string control = run_dir + "/control.sock";
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--control", control});
  const pid_t pid = d.serving_pid();
  struct stat st{};
  ASSERT_EQ(::stat(run_dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u) << "batond did not create the control directory owner-only";
  ASSERT_EQ(::stat(control.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u) << "control socket mode";

  // First layer, the file modes: with the directories opened up, the socket's
  // own 0600 still makes the kernel refuse the connect.
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  ASSERT_EQ(::chmod(run_dir.c_str(), 0755), 0);
  auto denied = connect_as(uid, gid, control);
  ASSERT_NE(denied.outcome, kChildFailed) << "could not become uid " << uid;
  EXPECT_EQ(denied.connect_errno, EACCES) << std::strerror(denied.connect_errno);
  EXPECT_EQ(d.count_lines(pid, "control: refused"), 0) << "the kernel, not batond, refused that one";

  // Second layer, SO_PEERCRED: an operator (or a mistake) loosens the socket
  // to 0666 so the connect succeeds; batond must still refuse the peer: the
  // connection closes without a single byte of reply.
  ASSERT_EQ(::chmod(control.c_str(), 0666), 0);
  auto refused = connect_as(uid, gid, control);
  ASSERT_NE(refused.outcome, kChildFailed) << "could not become uid " << uid;
  ASSERT_EQ(refused.connect_errno, 0) << "connect as uid " << uid << ": " << std::strerror(refused.connect_errno);
  EXPECT_EQ(refused.outcome, kClosed) << "outcome " << refused.outcome << ", reply: " << refused.reply;
  EXPECT_TRUE(d.wait_for_line(pid, "control: refused connection from uid " + std::to_string(uid))) << d.log();
  EXPECT_EQ(d.count_lines(pid, "control: status requested"), 0) << "batond answered another user\n" << d.log();

  // Root, and the owner, are still served.
  auto status = run_command({batonctl_path(), "--control", control, "status"});
  EXPECT_EQ(status.status.code, 0) << status.out << status.err;
  EXPECT_NE(status.out.find(std::to_string(pid)), std::string::npos) << status.out;
}

// ---- a malformed hand-off, with the test as the predecessor -------------------------

// Plays the old generation for a real batond: the channel's other end is its
// fd 3, BATON_HANDOFF_FD=3 and BATON_GENERATION=2 say it is taking over.
struct FakePredecessor {
  handoff::HandoffChannel ours{handoff::UniqueFd()};
  std::optional<BatondProcess> batond;

  // `advertise`: the protocol version put in the environment, as a
  // predecessor does; nullopt plays a version 1 predecessor, which puts none.
  explicit FakePredecessor(std::vector<std::string> args,
                           std::optional<uint16_t> advertise = handoff::kProtocolVersion) {
    auto pair = handoff::HandoffChannel::create_pair();
    if (!pair) throw std::runtime_error(pair.error().message);
    ours = std::move(pair->first);
    handoff::UniqueFd theirs = std::move(pair->second);
    ProcessOptions opts;
    opts.fd3 = theirs.get();
    opts.extra_env = {"BATON_HANDOFF_FD=3", "BATON_GENERATION=2"};
    if (advertise) opts.extra_env.push_back(std::string(handoff::kVersionVariable) + "=" + std::to_string(*advertise) + ":" +
                                                std::to_string(::getpid()));
    batond.emplace(BatondProcess::launch(std::move(args), opts));
    // `theirs` closes here: batond holds the only copy, so closing ours is an EOF for it.
  }

  pid_t pid() const { return batond->first_pid(); }

  // Its HELLO, naming its own pid and the protocol version agreed.
  void expect_hello(uint16_t version = handoff::kProtocolVersion) {
    auto m = handoff::expect_message(ours, handoff::MessageType::Hello, std::chrono::seconds(10));
    ASSERT_TRUE(m) << m.error().message << "\n" << batond->log();
    auto hello = handoff::decode_hello(m->payload);
    ASSERT_TRUE(hello) << hello.error().message;
    EXPECT_EQ(static_cast<pid_t>(hello->pid), pid());
    EXPECT_EQ(hello->version, version);
  }

  // Exits with status 1, never having served, and names the fault in the
  // line that reports the failed start-up.
  void expect_refusal(const std::string& fault) {
    auto status = batond->process().wait_exit(std::chrono::seconds(15));
    ASSERT_TRUE(status) << "batond is still running after the malformed hand-off\n" << batond->log();
    EXPECT_TRUE(status->exited && status->code == 1) << status->describe() << "\n" << batond->log();
    auto line = batond->process().wait_for_line("start-up failed: hand-off: ", std::chrono::seconds(1));
    ASSERT_TRUE(line) << batond->log();
    EXPECT_NE(line->find(fault), std::string::npos) << "expected '" << fault << "' in: " << *line;
    EXPECT_EQ(batond->process().count_lines("serving: generation"), 0) << batond->log();
    EXPECT_EQ(batond->process().count_lines("listening name="), 0) << batond->log();
  }
};

// A listening TCP socket on a free loopback port, as the predecessor would hand it over.
handoff::UniqueFd tcp_socket(int type, bool listening) {
  handoff::UniqueFd fd(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return {};
  if (listening && ::listen(fd.get(), 16) != 0) return {};
  return fd;
}

std::string tcp_url(int port) { return "tcp://127.0.0.1:" + std::to_string(port); }

// Sends one LISTENERS message announcing `fd` as listener "echo" at `bound`.
void send_one_listener(handoff::HandoffChannel& ch, int fd, const std::string& bound) {
  std::vector<handoff::ListenerEntry> entries{{"echo", "tcp://127.0.0.1:0", bound}};
  int fds[] = {fd};
  auto st = ch.send(handoff::MessageType::Listeners, handoff::encode(entries), fds);
  ASSERT_TRUE(st) << st.error().message;
}

const std::vector<std::string> kEchoOnly{"--listen", "echo=tcp://127.0.0.1:0"};

TEST(HardeningMalformedHandoff, BadMagicIsRefused) {
  FakePredecessor fake(kEchoOnly);
  ASSERT_NO_FATAL_FAILURE(fake.expect_hello());
  const uint8_t garbage[] = {'N', 'O', 'P', 'E', 0, 1, 0, 2, 0, 0, 0, 0};
  ASSERT_EQ(handoff::send_datagram(fake.ours.fd(), garbage, {}), static_cast<ssize_t>(sizeof garbage));
  fake.expect_refusal("bad magic 0x4e4f5045");
}

TEST(HardeningMalformedHandoff, UdpSocketAnnouncedAsTcpListenerIsRefused) {
  FakePredecessor fake(kEchoOnly);
  ASSERT_NO_FATAL_FAILURE(fake.expect_hello());
  auto udp = tcp_socket(SOCK_DGRAM, false);
  ASSERT_TRUE(udp);
  ASSERT_NO_FATAL_FAILURE(send_one_listener(fake.ours, udp.get(), tcp_url(local_port(udp.get()))));
  fake.expect_refusal("socket type is SOCK_DGRAM, expected SOCK_STREAM");
}

TEST(HardeningMalformedHandoff, TcpSocketThatDoesNotListenIsRefused) {
  FakePredecessor fake(kEchoOnly);
  ASSERT_NO_FATAL_FAILURE(fake.expect_hello());
  auto idle = tcp_socket(SOCK_STREAM, false);
  ASSERT_TRUE(idle);
  ASSERT_NO_FATAL_FAILURE(send_one_listener(fake.ours, idle.get(), tcp_url(local_port(idle.get()))));
  fake.expect_refusal("socket is not listening (SO_ACCEPTCONN is 0)");
}

TEST(HardeningMalformedHandoff, ListenerBoundElsewhereThanAnnouncedIsRefused) {
  FakePredecessor fake(kEchoOnly);
  ASSERT_NO_FATAL_FAILURE(fake.expect_hello());
  auto l = tcp_socket(SOCK_STREAM, true);
  ASSERT_TRUE(l);
  const int real = local_port(l.get());
  const int announced = real == 65535 ? real - 1 : real + 1;
  ASSERT_NO_FATAL_FAILURE(send_one_listener(fake.ours, l.get(), tcp_url(announced)));
  fake.expect_refusal("socket is bound to " + tcp_url(real) + ", announced " + tcp_url(announced));
}

TEST(HardeningMalformedHandoff, ChannelClosedRightAfterHelloIsRefused) {
  FakePredecessor fake(kEchoOnly);
  ASSERT_NO_FATAL_FAILURE(fake.expect_hello());
  fake.ours.close();
  fake.expect_refusal(std::string("waiting for listeners: ") + handoff::kPeerClosed);
}

// READY is sent, COMMIT never comes: the new process must exit without ever
// accepting, and must leave the Unix socket file alone: it belongs to the
// predecessor, which still serves on it.
TEST(HardeningMalformedHandoff, NoCommitAfterReadyExitsAndLeavesThePredecessorsSocketFile) {
  TempDir dir;
  const std::string path = dir.file("echo.sock");
  auto tcp = handoff::bind_listener(*handoff::ListenAddress::parse("tcp://127.0.0.1:0"), 16);
  auto unix_listener = handoff::bind_listener(*handoff::ListenAddress::parse("unix:" + path), 16);
  ASSERT_TRUE(tcp && unix_listener);
  FakePredecessor fake({"--listen", "echo=tcp://127.0.0.1:0", "--listen", "local=unix:" + path});
  ASSERT_NO_FATAL_FAILURE(fake.expect_hello());
  std::vector<handoff::ListenerOffer> offers{
      {"echo", "tcp://127.0.0.1:0", handoff::local_address(tcp->get())->to_string(), tcp->get()},
      {"local", "unix:" + path, handoff::local_address(unix_listener->get())->to_string(), unix_listener->get()}};
  auto sent = handoff::send_listeners(fake.ours, offers);
  ASSERT_TRUE(sent) << sent.error().message;

  // The fault happens at exactly this point: READY came, with every listener valid.
  auto ready = handoff::expect_message(fake.ours, handoff::MessageType::Ready, std::chrono::seconds(10));
  ASSERT_TRUE(ready) << ready.error().message << "\n" << fake.batond->log();
  EXPECT_EQ(static_cast<pid_t>(handoff::decode_ready(ready->payload)->pid), fake.pid());
  EXPECT_TRUE(fake.batond->wait_for_line(fake.pid(), "hand-off: received 2 listener(s), all valid"));
  fake.ours.close();
  fake.expect_refusal(std::string("waiting for COMMIT: ") + handoff::kPeerClosed);

  // The file is still there, and still ours: a client connecting to it is
  // queued on our listener, which accepts it.
  struct stat st{};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0) << path << " was unlinked by a process that never got COMMIT";
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  auto client = connect_to(path);
  ASSERT_TRUE(client) << "connect " << path << ": " << std::strerror(errno);
  handoff::UniqueFd accepted;
  EXPECT_TRUE(eventually([&] {
    accepted = handoff::UniqueFd(::accept4(unix_listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
    return accepted.valid();
  })) << "the socket file no longer leads to the predecessor's listener";
}

// The same, when the process that started it is gone by then (its
// predecessor died, say, while a generation older still serves on the file,
// about to resume): a process that never got COMMIT never unlinks a socket
// file it inherited, whoever else lives.
TEST(HardeningMalformedHandoff, NoCommitAfterReadyLeavesTheSocketFileAlsoWhenItsParentIsGone) {
  TempDir dir;
  const std::string path = dir.file("echo.sock");
  auto unix_listener = handoff::bind_listener(*handoff::ListenAddress::parse("unix:" + path), 16);
  ASSERT_TRUE(unix_listener);
  auto pair = handoff::HandoffChannel::create_pair();
  ASSERT_TRUE(pair) << pair.error().message;
  handoff::HandoffChannel ours = std::move(pair->first);
  handoff::UniqueFd theirs = std::move(pair->second);
  ProcessOptions opts;
  opts.fd3 = theirs.get();
  opts.extra_env = {"BATON_HANDOFF_FD=3", "BATON_GENERATION=2",
                    std::string(handoff::kVersionVariable) + "=" + std::to_string(handoff::kProtocolVersion) + ":" +
                        std::to_string(::getpid())};
  // batond's parent, its predecessor as it sees it, is a shell we kill.
  auto shell = TestProcess::start({"/bin/sh", "-c", "\"$0\" \"$@\" & wait", batond_path(), "--control",
                                   dir.file("control.sock"), "--listen", "local=unix:" + path},
                                  opts);
  theirs.reset();
  auto hello = handoff::expect_message(ours, handoff::MessageType::Hello, std::chrono::seconds(10));
  ASSERT_TRUE(hello) << hello.error().message << "\n" << shell.log();
  const auto batond = static_cast<pid_t>(handoff::decode_hello(hello->payload)->pid);
  shell.track_descendant(batond);
  std::vector<handoff::ListenerOffer> offers{
      {"local", "unix:" + path, handoff::local_address(unix_listener->get())->to_string(), unix_listener->get()}};
  auto sent = handoff::send_listeners(ours, offers);
  ASSERT_TRUE(sent) << sent.error().message;
  auto ready = handoff::expect_message(ours, handoff::MessageType::Ready, std::chrono::seconds(10));
  ASSERT_TRUE(ready) << ready.error().message << "\n" << shell.log();

  shell.signal(SIGKILL);
  ASSERT_TRUE(shell.wait_exit());
  ours.close();
  ASSERT_TRUE(wait_pid_gone(batond, std::chrono::seconds(15))) << shell.log();
  EXPECT_TRUE(shell.wait_for_line(std::string("waiting for COMMIT: ") + handoff::kPeerClosed)) << shell.log();
  struct stat st{};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0) << path << " was unlinked by a process that never got COMMIT\n"
                                           << shell.log();
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
}

// A predecessor of protocol version 1 (it advertises no version) gets a
// version 1 successor: HELLO says 1, no SERVING (version 2 only), and when the
// successor upgrades in turn, SUCCEEDED as baton 0.1.0 knows it: empty. That
// release honours it (it will not resume beside the newer generation).
TEST(HardeningHandoffVersion, AVersionOnePredecessorHearsOnlyVersionOneMessages) {
  auto tcp = handoff::bind_listener(*handoff::ListenAddress::parse("tcp://127.0.0.1:0"), 16);
  ASSERT_TRUE(tcp);
  FakePredecessor fake(kEchoOnly, std::nullopt);
  ASSERT_NO_FATAL_FAILURE(fake.expect_hello(1));
  std::vector<handoff::ListenerOffer> offers{
      {"echo", "tcp://127.0.0.1:0", handoff::local_address(tcp->get())->to_string(), tcp->get()}};
  ASSERT_TRUE(handoff::send_listeners(fake.ours, offers));
  ASSERT_TRUE(handoff::expect_message(fake.ours, handoff::MessageType::Ready, std::chrono::seconds(10)));
  ASSERT_TRUE(fake.ours.send(handoff::MessageType::Commit, {}));
  ASSERT_TRUE(fake.batond->wait_for_line(fake.pid(), "serving: generation 2")) << fake.batond->log();
  // It upgrades in turn: a hand-off of the newest version of its own, to a real batond.
  ::kill(fake.pid(), SIGUSR2);
  auto up = fake.batond->wait_upgrade_outcome(fake.pid(), 0);
  ASSERT_TRUE(up.ok) << fake.batond->log();
  EXPECT_TRUE(fake.batond->wait_for_line(fake.pid(), "HELLO from pid " + std::to_string(up.new_pid) + " (protocol " + std::to_string(handoff::kProtocolVersion) + ")"));
  // Everything it would have said to us was said by now: one empty SUCCEEDED
  // (sent before its COMMIT), then at most the EOF of its exit.
  std::vector<handoff::Message> heard;
  for (;;) {
    auto got = fake.ours.try_receive();
    if (!got) {
      EXPECT_EQ(got.error().message, handoff::kPeerClosed);
      break;
    }
    if (!got.value()) break;
    heard.push_back(std::move(*got.value()));
  }
  ASSERT_EQ(heard.size(), 1u);
  EXPECT_EQ(heard[0].type, handoff::MessageType::Succeeded);
  EXPECT_TRUE(heard[0].payload.empty()) << "version 1 has no pid in SUCCEEDED";
}

}  // namespace
}  // namespace baton::test
