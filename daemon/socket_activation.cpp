#include "socket_activation.h"

#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "baton/handoff/listener_socket.h"

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

std::vector<handoff::InheritedListener> match_activated(std::vector<ActivatedFd> fds,
                                                        const std::vector<handoff::ListenerRequest>& requests) {
  std::vector<handoff::InheritedListener> out;
  if (fds.empty()) return out;
  spdlog::info("socket activation: {} fd(s) from systemd", fds.size());
  for (auto& [name, fd] : fds) {
    auto bound = handoff::local_address(fd.get());
    const handoff::ListenerRequest* match = nullptr;
    for (const auto& r : requests)
      if (r.name == name) match = &r;
    if (!bound || !match || !fits(match->address, bound.value())) {
      spdlog::warn("socket activation: fd {} named '{}' ({}) matches no configured listener; closed", fd.get(), name,
                   bound ? bound->to_string() : bound.error().message);
      continue;
    }
    if (auto st = handoff::validate_listener(fd.get(), bound.value()); !st) {
      spdlog::warn("socket activation: fd {} named '{}': {}; closed", fd.get(), name, st.error().message);
      continue;
    }
    spdlog::info("socket activation: listener '{}' on {} from systemd", name, bound->to_string());
    out.push_back({name, match->address, std::move(bound).value(), std::move(fd)});
  }
  return out;
}

}  // namespace baton::daemon
