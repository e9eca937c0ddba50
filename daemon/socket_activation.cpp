#include "socket_activation.h"

#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>
#include <set>

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

}  // namespace

std::vector<ActivatedFd> take_activated_fds() {
  std::vector<ActivatedFd> out;
  char** names = nullptr;
  const int n = sd_listen_fds_with_names(/*unset_environment=*/1, &names);
  for (int i = 0; i < n; ++i) out.push_back({names && names[i] ? names[i] : "unknown", handoff::UniqueFd(SD_LISTEN_FDS_START + i)});
  if (names) {
    for (int i = 0; i < n; ++i) std::free(names[i]);
    std::free(names);
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
