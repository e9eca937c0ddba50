// fake-successor: a new "binary" that misbehaves on purpose, to prove that
// batond rolls back, resumes, and never lets two processes read one
// connection. batond starts it with its own arguments, so the misbehaviour
// is chosen by the environment: BATON_FAKE_MODE=
//   exit-after-hello    says HELLO, then exits with status 3
//   crash-after-hello   says HELLO, then dies of SIGABRT
//   never-ready         says HELLO, takes the listeners, then never answers
//   garbage             sends a datagram with a bad magic number
//   die-on-connections  takes over properly (READY, COMMIT, SERVING), then
//                       dies when the old process starts handing it connections
//   exit-after-commit   takes over properly, says SERVING, then exits 1
//   silent-after-commit takes over (READY, COMMIT) but never says SERVING
//   stall               takes over properly, then never reads the channel again
//   close-after-serving takes over properly (SERVING), closes the channel at
//                       once and lives on, accepting nothing
//   adopt-and-close     takes over properly; echoes the first connections it is
//                       handed, closes the channel without acknowledging them,
//                       echoes them for BATON_FAKE_HOLD_MS more, then exits 1
// It logs "fake-successor: ..." lines to stderr (the daemon's log).

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "baton/handoff/channel.h"
#include "baton/handoff/protocol.h"
#include "baton/handoff/successor.h"

using namespace baton::handoff;
using Clock = std::chrono::steady_clock;

namespace {

// Takes over like batond does, up to SERVING (unless `serving` is false).
HandoffChannel take_over(Successor& successor, bool serving) {
  auto listeners = successor.take_listeners(std::chrono::seconds(10));
  if (!listeners) ::_exit(5);
  if (auto st = successor.confirm_ready(std::chrono::seconds(10)); !st) ::_exit(6);
  auto channel = successor.take_channel();
  if (serving && successor.version() >= 2) {
    if (auto st = channel.send(MessageType::Serving, {}); !st) ::_exit(7);
  }
  std::fprintf(stderr, "fake-successor: pid %d took over (%zu listeners)%s\n", ::getpid(), listeners->size(),
               serving ? ", serving" : ", silent");
  // The listeners close with `listeners`: nothing is accepted here, clients
  // queue on the old process's copies, which it resumes on.
  return channel;
}

// Echoes every byte each fd sends, for `hold` (or until all have closed).
void echo_for(std::vector<UniqueFd>& fds, std::chrono::milliseconds hold) {
  const auto end = Clock::now() + hold;
  char buf[16384];
  while (Clock::now() < end) {
    std::vector<pollfd> p;
    for (auto& f : fds)
      if (f) p.push_back({f.get(), POLLIN, 0});
    if (p.empty()) return;
    ::poll(p.data(), p.size(), 50);
    for (auto& q : p) {
      if (!(q.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::recv(q.fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n <= 0) continue;
      for (ssize_t off = 0; off < n;) {
        ssize_t w = ::send(q.fd, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
        if (w < 0) {
          pollfd out{q.fd, POLLOUT, 0};
          if (errno == EAGAIN) ::poll(&out, 1, 100);
          else break;
        } else {
          off += w;
        }
      }
    }
  }
}

}  // namespace

int main() {
  const char* mode_env = std::getenv("BATON_FAKE_MODE");
  const std::string mode = mode_env ? mode_env : "";
  auto successor = Successor::from_environment("BATON_HANDOFF_FD");
  if (!successor || !successor.value()) {
    std::fprintf(stderr, "fake-successor: no hand-off channel\n");
    return 2;
  }
  std::fprintf(stderr, "fake-successor: pid %d mode %s\n", ::getpid(), mode.c_str());
  Successor& s = *successor.value();

  if (mode == "garbage") {
    const char junk[] = "this is not a baton message";
    ::send(3, junk, sizeof junk, MSG_NOSIGNAL);
    ::pause();
    return 0;
  }
  if (mode == "die-on-connections" || mode == "adopt-and-close") {
    auto channel = take_over(s, true);
    for (;;) {
      auto m = channel.receive(std::chrono::seconds(60));
      if (!m) return 7;
      if (m->type != MessageType::Connections) continue;
      if (mode == "die-on-connections") {
        std::fprintf(stderr, "fake-successor: got %zu connection(s); dying without an answer\n", m->fds.size());
        ::_exit(9);
      }
      const char* hold_env = std::getenv("BATON_FAKE_HOLD_MS");
      const auto hold = std::chrono::milliseconds(hold_env ? std::atol(hold_env) : 2000);
      channel.close();  // no ACK: the old process cannot know we serve them
      std::fprintf(stderr, "fake-successor: adopted %zu connection(s), closed the channel without an answer\n",
                   m->fds.size());
      echo_for(m->fds, hold);
      std::fprintf(stderr, "fake-successor: held them %lld ms; exiting 1\n", static_cast<long long>(hold.count()));
      return 1;
    }
  }
  if (mode == "exit-after-commit") {
    auto channel = take_over(s, true);
    std::fprintf(stderr, "fake-successor: exiting 1 after COMMIT\n");
    return 1;
  }
  if (mode == "close-after-serving") {
    auto channel = take_over(s, true);
    channel.close();
    std::fprintf(stderr, "fake-successor: closed the channel after SERVING; living on\n");
    for (;;) ::pause();
  }
  if (mode == "silent-after-commit" || mode == "stall") {
    auto channel = take_over(s, mode == "stall");
    std::fprintf(stderr, "fake-successor: now deaf\n");
    for (;;) ::pause();
  }
  if (mode == "never-ready") {
    auto listeners = s.take_listeners(std::chrono::seconds(10));
    std::fprintf(stderr, "fake-successor: took %zu listeners, now silent\n", listeners ? listeners->size() : 0);
    for (;;) ::pause();
  }
  HandoffChannel channel = HandoffChannel(UniqueFd(::dup(3)));
  auto hello = encode(Hello{static_cast<uint32_t>(::getpid()), s.version()});
  if (auto st = channel.send(MessageType::Hello, hello); !st) return 4;
  if (mode == "crash-after-hello") {
    ::abort();
  }
  return 3;  // exit-after-hello, and any unknown mode
}
