// baseline-echo: a minimal single-threaded epoll echo server. It is the speed
// reference batond is benchmarked against, and, with --fault, a deliberately
// broken server that proves baton-load notices corruption and resets.

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "baton/handoff/listen_address.h"
#include "epoll.h"
#include "sockets.h"
#include "stop_signals.h"

namespace baton::load {
namespace {

using handoff::Error;
using handoff::ListenAddress;

enum class Fault { None, Corrupt, Reset };

struct EchoOptions {
  ListenAddress listen;
  Fault fault = Fault::None;
  uint64_t fault_after = 4096;
};

constexpr uint64_t kListenerToken = ~uint64_t{0};
constexpr uint64_t kSignalToken = ~uint64_t{0} - 1;
// A connection whose peer does not read gets this much buffered before we
// stop reading from it: backpressure instead of unbounded memory.
constexpr size_t kMaxPending = 1 << 20;
constexpr size_t kReadChunk = 64 * 1024;

struct Connection {
  UniqueFd fd;
  std::string pending;       // echo bytes the socket would not take yet
  size_t pending_head = 0;
  uint64_t echoed = 0;       // bytes of the echo stream produced so far (fault offsets count these)
  uint64_t written = 0;      // bytes of the echo stream actually written
  bool corrupted = false;
  bool peer_done = false;    // read EOF: close once pending is written
  uint32_t events = 0;       // what epoll currently watches for
};

class EchoServer {
 public:
  EchoServer(EchoOptions options, Epoll epoll, StopSignals signals, UniqueFd listener)
      : options_(std::move(options)), epoll_(std::move(epoll)), signals_(std::move(signals)),
        listener_(std::move(listener)) {}

  Status run();

 private:
  void accept_ready();
  void on_connection_event(int fd, uint32_t events);
  // Each returns false when the connection was closed.
  bool read_and_echo(Connection& c);
  bool flush(Connection& c);
  void apply_fault(Connection& c, char* data, size_t& n);
  bool reset_due(const Connection& c) const;
  void update_interest(Connection& c);
  void close_connection(int fd, bool with_reset);
  void pause_accepting();
  void resume_accepting_if_due();

  EchoOptions options_;
  Epoll epoll_;
  StopSignals signals_;
  UniqueFd listener_;
  std::unordered_map<int, Connection> connections_;
  bool accept_paused_ = false;
  std::chrono::steady_clock::time_point resume_accept_at_{};
};

Status EchoServer::run() {
  if (auto st = epoll_.add(listener_.get(), EPOLLIN, kListenerToken); !st) return st;
  if (auto st = epoll_.add(signals_.fd(), EPOLLIN, kSignalToken); !st) return st;
  std::vector<epoll_event> events(256);
  for (;;) {
    auto n = epoll_.wait(events, accept_paused_ ? 100 : -1);
    if (!n) return n.error();
    resume_accepting_if_due();
    for (int i = 0; i < n.value(); ++i) {
      const auto token = events[i].data.u64;
      if (token == kSignalToken) {
        signals_.drain();
        return {};
      }
      if (token == kListenerToken) {
        accept_ready();
      } else {
        // The token is the fd. A stale event for an fd closed and reused in
        // this batch only costs a read that finds EAGAIN: harmless here.
        on_connection_event(static_cast<int>(token), events[i].events);
      }
    }
  }
}

void EchoServer::accept_ready() {
  // Level-triggered: a bounded batch is enough, the rest shows up next round.
  for (int i = 0; i < 64; ++i) {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) {
      if (errno == EMFILE || errno == ENFILE) {
        std::fprintf(stderr, "baseline-echo: accept4: %s (pausing accepts)\n", std::strerror(errno));
        pause_accepting();
      }
      return;  // EAGAIN, or an aborted connection: nothing to do
    }
    if (options_.listen.is_tcp()) (void)set_nodelay(fd.get());
    const int raw = fd.get();
    Connection c;
    c.fd = std::move(fd);
    c.events = EPOLLIN;
    if (auto st = epoll_.add(raw, c.events, static_cast<uint64_t>(raw)); !st) {
      std::fprintf(stderr, "baseline-echo: %s\n", st.error().message.c_str());
      continue;
    }
    connections_.insert_or_assign(raw, std::move(c));
  }
}

// Running out of fds under a level-triggered listener would spin: stop
// watching it for a moment instead.
void EchoServer::pause_accepting() {
  if (accept_paused_) return;
  accept_paused_ = true;
  resume_accept_at_ = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
  (void)epoll_.modify(listener_.get(), 0, kListenerToken);
}

void EchoServer::resume_accepting_if_due() {
  if (!accept_paused_ || std::chrono::steady_clock::now() < resume_accept_at_) return;
  accept_paused_ = false;
  (void)epoll_.modify(listener_.get(), EPOLLIN, kListenerToken);
}

void EchoServer::on_connection_event(int fd, uint32_t events) {
  auto it = connections_.find(fd);
  if (it == connections_.end()) return;
  Connection& c = it->second;
  if ((events & EPOLLOUT) && !flush(c)) return;
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c.peer_done && c.pending_head == c.pending.size()) {
    if (!read_and_echo(c)) return;
  }
  update_interest(c);
}

bool EchoServer::read_and_echo(Connection& c) {
  char buf[kReadChunk];
  // Stop reading while echo bytes are queued: the peer must drain them first.
  while (c.pending.size() - c.pending_head < kMaxPending) {
    ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return true;
    if (n < 0) {
      close_connection(c.fd.get(), false);
      return false;
    }
    if (n == 0) {
      c.peer_done = true;
      return flush(c);
    }
    size_t len = static_cast<size_t>(n);
    apply_fault(c, buf, len);
    c.pending.append(buf, len);
    if (!flush(c)) return false;
    if (len < static_cast<size_t>(n)) return true;  // reset fault truncated the stream: nothing more to echo
  }
  return true;
}

// Corrupt flips the byte at stream offset fault_after; reset cuts the echo
// stream at fault_after so the RST comes at an exact, reproducible point.
void EchoServer::apply_fault(Connection& c, char* data, size_t& n) {
  const uint64_t start = c.echoed;
  if (options_.fault == Fault::Reset) {
    if (start >= options_.fault_after) n = 0;
    else if (start + n > options_.fault_after) n = static_cast<size_t>(options_.fault_after - start);
  } else if (options_.fault == Fault::Corrupt && !c.corrupted && start + n > options_.fault_after) {
    data[options_.fault_after - start] ^= 0xff;
    c.corrupted = true;
  }
  c.echoed += n;
}

bool EchoServer::reset_due(const Connection& c) const {
  return options_.fault == Fault::Reset && c.written >= options_.fault_after;
}

bool EchoServer::flush(Connection& c) {
  while (c.pending_head < c.pending.size()) {
    ssize_t n = ::send(c.fd.get(), c.pending.data() + c.pending_head, c.pending.size() - c.pending_head,
                       MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n < 0) {
      close_connection(c.fd.get(), false);
      return false;
    }
    c.pending_head += static_cast<size_t>(n);
    c.written += static_cast<uint64_t>(n);
  }
  if (c.pending_head == c.pending.size()) {
    c.pending.clear();
    c.pending_head = 0;
  } else if (c.pending_head > kReadChunk) {
    c.pending.erase(0, c.pending_head);  // keep the buffer from growing at the front
    c.pending_head = 0;
  }
  const bool drained = c.pending.empty();
  if (reset_due(c) && drained) {
    close_connection(c.fd.get(), true);
    return false;
  }
  if (c.peer_done && drained) {
    close_connection(c.fd.get(), false);
    return false;
  }
  return true;
}

// Level-triggered: read while nothing is queued, otherwise only wait for room to write.
void EchoServer::update_interest(Connection& c) {
  const uint32_t want = c.pending.empty() ? (c.peer_done ? 0u : uint32_t{EPOLLIN}) : uint32_t{EPOLLOUT};
  if (want == c.events) return;
  c.events = want;
  if (auto st = epoll_.modify(c.fd.get(), want, static_cast<uint64_t>(c.fd.get())); !st) {
    std::fprintf(stderr, "baseline-echo: %s\n", st.error().message.c_str());
    close_connection(c.fd.get(), false);
  }
}

void EchoServer::close_connection(int fd, bool with_reset) {
  if (with_reset) {
    // SO_LINGER {1, 0}: close() sends RST instead of FIN.
    linger lg{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  connections_.erase(fd);  // UniqueFd closes it, which also drops it from epoll
}

Result<UniqueFd> open_listener(const ListenAddress& address) {
  UniqueFd fd(::socket(address.domain(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return handoff::errno_error("socket");
  int one = 1;
  if (address.is_tcp() && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
    return handoff::errno_error("setsockopt(SO_REUSEADDR)");
  sockaddr_storage ss;
  socklen_t len = address.to_sockaddr(ss);
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0)
    return handoff::errno_error("bind " + address.endpoint());
  if (::listen(fd.get(), SOMAXCONN) != 0) return handoff::errno_error("listen");
  return fd;
}

// A unix socket's path outlives the process unless we remove it.
struct UnlinkOnExit {
  std::string path;
  ~UnlinkOnExit() {
    if (!path.empty()) ::unlink(path.c_str());
  }
};

Result<ListenAddress> bound_address(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return handoff::errno_error("getsockname");
  return ListenAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

// Returns the options, or the exit status when there is nothing to run.
std::variant<EchoOptions, int> parse_options(int argc, char** argv) {
  CLI::App app{"baseline-echo: minimal epoll echo server (benchmark reference and fault injector)"};
  std::string listen = "127.0.0.1:0";
  std::string fault = "none";
  uint64_t fault_after = 4096;
  app.add_option("--listen", listen, "HOST:PORT to listen on ([::1]:PORT for IPv6, or a /unix/socket/path)")
      ->capture_default_str();
  app.add_option("--fault", fault, "none, corrupt or reset")
      ->check(CLI::IsMember({"none", "corrupt", "reset"}))
      ->capture_default_str();
  app.add_option("--fault-after", fault_after, "echo-stream offset at which the fault strikes")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  auto address = ListenAddress::parse((listen.starts_with("/") ? "unix:" : "tcp://") + listen);
  if (!address) {
    std::fprintf(stderr, "baseline-echo: --listen: %s\n", address.error().message.c_str());
    return 2;
  }
  EchoOptions options;
  options.listen = address.value();
  options.fault = fault == "corrupt" ? Fault::Corrupt : fault == "reset" ? Fault::Reset : Fault::None;
  options.fault_after = fault_after;
  return options;
}

int fail(const Error& e) {
  std::fprintf(stderr, "baseline-echo: %s\n", e.message.c_str());
  return 1;
}

int run(EchoOptions options) {
  if (auto st = raise_nofile_limit(); !st) std::fprintf(stderr, "baseline-echo: %s\n", st.error().message.c_str());
  auto signals = StopSignals::install();
  if (!signals) return fail(signals.error());
  auto epoll = Epoll::create();
  if (!epoll) return fail(epoll.error());
  auto listener = open_listener(options.listen);
  if (!listener) return fail(listener.error());
  UnlinkOnExit socket_file{options.listen.is_tcp() ? std::string() : options.listen.path};
  auto bound = bound_address(listener->get());
  if (!bound) return fail(bound.error());
  print_line("listening addr=" + bound->endpoint());
  EchoServer server(std::move(options), std::move(epoll).value(), std::move(signals).value(),
                    std::move(listener).value());
  if (auto st = server.run(); !st) return fail(st.error());
  return 0;
}

}  // namespace
}  // namespace baton::load

int main(int argc, char** argv) {
  auto parsed = baton::load::parse_options(argc, argv);
  if (auto* code = std::get_if<int>(&parsed)) return *code;
  return baton::load::run(std::get<baton::load::EchoOptions>(std::move(parsed)));
}
