// fake-successor: a new "binary" that misbehaves on purpose, to prove that
// batond rolls back. batond starts it with its own arguments, so the
// misbehaviour is chosen by the environment: BATON_FAKE_MODE=
//   exit-after-hello   says HELLO, then exits with status 3
//   crash-after-hello  says HELLO, then dies of SIGABRT
//   never-ready        says HELLO, takes the listeners, then never answers
//   garbage            sends a datagram with a bad magic number
//   die-on-connections takes over properly (READY, COMMIT), then dies when
//                      the old process starts handing it connections

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "baton/handoff/channel.h"
#include "baton/handoff/protocol.h"
#include "baton/handoff/successor.h"

using namespace baton::handoff;

int main() {
  const char* mode_env = std::getenv("BATON_FAKE_MODE");
  const std::string mode = mode_env ? mode_env : "";
  auto successor = Successor::from_environment("BATON_HANDOFF_FD");
  if (!successor || !successor.value()) {
    std::fprintf(stderr, "fake-successor: no hand-off channel\n");
    return 2;
  }
  std::fprintf(stderr, "fake-successor: pid %d mode %s\n", ::getpid(), mode.c_str());

  if (mode == "garbage") {
    const char junk[] = "this is not a baton message";
    ::send(3, junk, sizeof junk, MSG_NOSIGNAL);
    ::pause();
    return 0;
  }
  if (mode == "die-on-connections") {
    auto listeners = successor.value()->take_listeners(std::chrono::seconds(10));
    if (!listeners) return 5;
    if (auto st = successor.value()->confirm_ready(std::chrono::seconds(10)); !st) return 6;
    auto channel = successor.value()->take_channel();
    for (;;) {
      auto m = channel.receive(std::chrono::seconds(60));
      if (!m) return 7;
      if (m->type == MessageType::Connections) {
        std::fprintf(stderr, "fake-successor: got %zu connection(s); dying without an answer\n", m->fds.size());
        ::_exit(9);
      }
    }
  }
  if (mode == "never-ready") {
    auto listeners = successor.value()->take_listeners(std::chrono::seconds(10));
    std::fprintf(stderr, "fake-successor: took %zu listeners, now silent\n", listeners ? listeners->size() : 0);
    for (;;) ::pause();
  }
  HandoffChannel channel = HandoffChannel(UniqueFd(::dup(3)));
  auto hello = encode(Hello{static_cast<uint32_t>(::getpid()), kProtocolVersion});
  if (auto st = channel.send(MessageType::Hello, hello); !st) return 4;
  if (mode == "crash-after-hello") {
    ::abort();
  }
  return 3;  // exit-after-hello, and any unknown mode
}
