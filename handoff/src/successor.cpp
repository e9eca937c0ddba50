#include "baton/handoff/successor.h"

#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <set>

#include "baton/handoff/listener_socket.h"
#include "baton/handoff/protocol.h"

namespace baton::handoff {
namespace {

using Clock = std::chrono::steady_clock;

std::chrono::milliseconds left_until(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? left : std::chrono::milliseconds(0);
}

// One LISTENERS batch: entries and fds must pair up one to one.
Status take_batch(Message& m, std::vector<InheritedListener>& out, std::set<std::string>& names) {
  auto entries = decode_listeners(m.payload);
  if (!entries) return entries.error();
  if (entries->size() != m.fds.size())
    return Error{"LISTENERS announces " + std::to_string(entries->size()) + " listeners but carries " +
                 std::to_string(m.fds.size()) + " fds"};
  for (size_t i = 0; i < entries->size(); ++i) {
    auto& e = entries.value()[i];
    const std::string who = "listener '" + e.name + "'";
    if (auto st = validate_listener_name(e.name); !st) return st.error();
    if (!names.insert(e.name).second) return Error{who + " announced twice"};
    auto configured = ListenAddress::parse(e.configured);
    if (!configured) return with_context(who + " configured address", configured.error());
    auto bound = ListenAddress::parse(e.bound);
    if (!bound) return with_context(who + " bound address", bound.error());
    if (auto st = validate_listener(m.fds[i].get(), bound.value()); !st)
      return with_context(who + " (" + e.bound + ")", st.error());
    out.push_back({e.name, std::move(configured).value(), std::move(bound).value(), std::move(m.fds[i])});
  }
  return {};
}

}  // namespace

Result<std::optional<Successor>> Successor::from_environment(const char* variable) {
  const char* value = std::getenv(variable);
  if (!value) return std::optional<Successor>{};
  std::string text(value);
  ::unsetenv(variable);
  auto version = agreed_version(std::getenv(kVersionVariable), ::getppid());
  ::unsetenv(kVersionVariable);
  if (!version) return version.error();
  int fd = -1;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), fd);
  if (ec != std::errc() || end != text.data() + text.size() || fd < 0)
    return Error{std::string(variable) + "='" + text + "' is not a file descriptor number"};
  int type = 0;
  socklen_t len = sizeof type;
  // Checked before taking ownership: a wrong number (say 2) must not close
  // someone else's descriptor on the way to the error.
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_SEQPACKET)
    return Error{std::string(variable) + "=" + text + " does not name a SOCK_SEQPACKET socket"};
  auto channel = HandoffChannel::adopt(UniqueFd(fd));
  if (!channel) return channel.error();
  return std::optional<Successor>(Successor(std::move(channel).value(), version.value()));
}

Result<std::vector<InheritedListener>> Successor::take_listeners(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  auto hello = encode(Hello{static_cast<uint32_t>(::getpid()), version_});
  if (auto st = channel_.send(MessageType::Hello, hello); !st) return st.error();

  std::vector<InheritedListener> listeners;
  std::set<std::string> names;
  for (;;) {
    auto m = channel_.receive(left_until(deadline));
    if (!m) return Error{"waiting for listeners: " + m.error().message};
    if (m->type == MessageType::Listeners) {
      if (auto st = take_batch(m.value(), listeners, names); !st) return st.error();
      continue;
    }
    if (m->type == MessageType::State && version_ >= 3) {
      auto item = decode_state(m->payload);
      if (!item) return item.error();
      for (const auto& s : state_)
        if (s.key == item->first) return Error{"STATE '" + s.key + "' sent twice"};
      state_.push_back({std::move(item->first), std::move(item->second), std::move(m->fds)});
      continue;
    }
    if (!m->fds.empty()) return Error{std::string(to_string(m->type)) + " carries unexpected fds"};
    if (m->type != MessageType::ListenersEnd)
      return Error{std::string("expected LISTENERS, STATE or LISTENERS_END, got ") + to_string(m->type)};
    auto end = decode_listeners_end(m->payload);
    if (!end) return end.error();
    if (end->total != listeners.size())
      return Error{"LISTENERS_END counts " + std::to_string(end->total) + " listeners, received " +
                   std::to_string(listeners.size())};
    return listeners;
  }
}

Status Successor::confirm_ready(std::chrono::milliseconds timeout) {
  auto ready = encode(Ready{static_cast<uint32_t>(::getpid())});
  if (auto st = channel_.send(MessageType::Ready, ready); !st) return st.error();
  const auto deadline = Clock::now() + timeout;
  for (bool first = true;; first = false) {
    // The whole timeout for the first message (the error then names it), what is left of it after.
    auto m = channel_.receive(first ? timeout : left_until(deadline));
    if (!m) return Error{"waiting for COMMIT: " + m.error().message};
    if (!m->fds.empty()) return Error{std::string(to_string(m->type)) + " carries unexpected fds"};
    if (m->type == MessageType::StateUpdate && version_ >= 4) {
      auto update = decode_state_update(m->payload);
      if (!update) return update.error();
      updates_.push_back(std::move(update).value());
      continue;
    }
    if (m->type != MessageType::Commit) return Error{std::string("expected COMMIT, got ") + to_string(m->type)};
    if (!m->payload.empty()) return Error{"COMMIT payload must be empty"};
    return {};
  }
}

}  // namespace baton::handoff
