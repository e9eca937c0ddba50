#include "socket_activation.h"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string_view>

#include <spdlog/spdlog.h>

#include "baton/handoff/listener_socket.h"
#include "options.h"

namespace baton::daemon {
namespace {

// A configured port 0 accepts any port; otherwise the address must be the same.
bool fits(const handoff::ListenAddress& configured, const handoff::ListenAddress& bound) {
  if (configured.family != bound.family) return false;
  if (configured.family == handoff::ListenAddress::Family::Unix) return configured.path == bound.path;
  return configured.host == bound.host && (configured.port == 0 || configured.port == bound.port);
}

// The first fd systemd passes (SD_LISTEN_FDS_START).
constexpr int kFirstActivatedFd = 3;

// A whole decimal number, or -1.
long long whole_number(const char* text) {
  if (!text || !*text) return -1;
  long long n = -1;
  const std::string_view s(text);
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  return ec == std::errc() && end == s.data() + s.size() ? n : -1;
}

}  // namespace

// What sd_listen_fds_with_names(3) does, without libsystemd (it and the six
// libraries it pulls in were a third of batond's dynamic linking, paid at
// every upgrade).
handoff::Result<std::vector<ActivatedFd>> take_activated_fds() {
  const std::string pid = std::getenv("LISTEN_PID") ? std::getenv("LISTEN_PID") : "";
  const std::string count = std::getenv("LISTEN_FDS") ? std::getenv("LISTEN_FDS") : "";
  const char* names_variable = std::getenv("LISTEN_FDNAMES");
  const bool named = names_variable != nullptr;
  const std::string names = named ? names_variable : "";
  // Never seen by a child, whatever follows.
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  std::vector<ActivatedFd> out;
  if (pid.empty() || whole_number(pid.c_str()) != ::getpid()) return out;  // for another process
  const long long n = whole_number(count.c_str());
  if (n < 0 || n > 4096) return handoff::Error{"socket activation: LISTEN_FDS='" + count + "' is not a number of fds"};
  std::vector<std::string> split;
  for (size_t from = 0; named && from <= names.size();) {
    const size_t colon = std::min(names.find(':', from), names.size());
    split.push_back(names.substr(from, colon - from));
    from = colon + 1;
  }
  if (named && static_cast<long long>(split.size()) != n)
    return handoff::Error{"socket activation: LISTEN_FDNAMES names " + std::to_string(split.size()) +
                          " fd(s), LISTEN_FDS says " + std::to_string(n)};
  for (int i = 0; i < n; ++i) {
    const int fd = kFirstActivatedFd + i;
    if (::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0)
      return handoff::errno_error("socket activation: fd " + std::to_string(fd) + " of LISTEN_FDS=" + count);
    out.push_back({named ? split[static_cast<size_t>(i)] : "unknown", handoff::UniqueFd(fd)});
  }
  return out;
}

handoff::Result<std::vector<handoff::ListenerRequest>> requests_for_activated(const std::vector<ActivatedFd>& fds) {
  std::vector<handoff::ListenerRequest> out;
  std::set<std::string> names;
  for (const auto& [name, fd] : fds) {
    const std::string who = "socket activation: fd " + std::to_string(fd.get()) + " named '" + name + "'";
    if (auto st = handoff::validate_listener_name(name); !st) return handoff::with_context(who, st.error());
    if (!names.insert(name).second)
      return handoff::Error{who + ": another fd has the same name; give each socket a FileDescriptorName="};
    // A socket named like the control listener (or the metrics endpoint) is
    // that one, matched against --control (--metrics) like any other (see
    // match_activated), not a second echo listener.
    if (is_batond_listener(name)) continue;
    auto bound = handoff::local_address(fd.get());
    if (!bound) return handoff::with_context(who, bound.error());
    out.push_back({name, bound.value()});
  }
  return out;
}

handoff::Result<std::vector<handoff::InheritedListener>> match_activated(
    std::vector<ActivatedFd> fds, const std::vector<handoff::ListenerRequest>& requests) {
  std::vector<handoff::InheritedListener> out;
  if (fds.empty()) return out;
  spdlog::info("socket activation: {} fd(s) from systemd", fds.size());
  for (auto& [name, fd] : fds) {
    const std::string who = "socket activation: fd " + std::to_string(fd.get()) + " named '" + name + "'";
    auto bound = handoff::local_address(fd.get());
    if (!bound) return handoff::with_context(who, bound.error());
    const handoff::ListenerRequest* match = nullptr;
    for (const auto& r : requests)
      if (r.name == name) match = &r;
    if (!match)
      return handoff::Error{who + " (" + bound->to_string() + ") matches no configured listener; add " +
                            (name == kMetricsListenerName ? "--metrics " : "--listen " + name + "=") + bound->to_string()};
    if (!fits(match->address, bound.value()))
      return handoff::Error{who + " is bound to " + bound->to_string() + ", but listener '" + name + "' is configured as " +
                            match->address.to_string()};
    if (auto st = handoff::validate_listener(fd.get(), bound.value()); !st) return handoff::with_context(who, st.error());
    spdlog::info("socket activation: listener '{}' on {} from systemd", name, bound->to_string());
    out.push_back({name, match->address, std::move(bound).value(), std::move(fd)});
  }
  return out;
}

}  // namespace baton::daemon
