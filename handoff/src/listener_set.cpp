#include "baton/handoff/listener_set.h"

#include <fcntl.h>

#include "baton/handoff/listener_socket.h"

namespace baton::handoff {
namespace {

Status set_blocking(int fd, bool blocking) {
  int flags = ::fcntl(fd, F_GETFL);
  const int wanted = blocking ? flags & ~O_NONBLOCK : flags | O_NONBLOCK;
  if (flags < 0 || (wanted != flags && ::fcntl(fd, F_SETFL, wanted) != 0))
    return errno_error(blocking ? "fcntl(~O_NONBLOCK)" : "fcntl(O_NONBLOCK)");
  return {};
}

}  // namespace

Result<OpenedListeners> open_listeners(const std::vector<ListenerRequest>& requests,
                                       std::vector<InheritedListener> inherited, int backlog) {
  OpenedListeners out;
  for (const auto& req : requests) {
    OpenListener l{req.name, req.address, {}, {}, false};
    for (auto& in : inherited) {
      if (in.fd && in.name == req.name && in.configured == req.address) {
        // One another process accepts on keeps its mode: that process (a
        // running app) shares it, and may rely on the mode it chose.
        if (!req.blocking) {
          if (auto st = set_blocking(in.fd.get(), false); !st) return with_context("listener '" + req.name + "'", st.error());
        }
        l.bound = in.bound;
        l.fd = std::move(in.fd);
        l.inherited = true;
        break;
      }
    }
    if (!l.inherited) {
      auto fd = bind_listener(req.address, backlog, req.unix_mode);
      if (!fd) return with_context("listener '" + req.name + "'", fd.error());
      auto bound = local_address(fd->get());
      if (!bound) return with_context("listener '" + req.name + "'", bound.error());
      if (req.blocking) {
        if (auto st = set_blocking(fd->get(), true); !st) return with_context("listener '" + req.name + "'", st.error());
      }
      l.fd = std::move(fd).value();
      l.bound = std::move(bound).value();
    }
    out.listeners.push_back(std::move(l));
  }
  for (auto& in : inherited) {
    if (in.fd) out.dropped.push_back(in.name + " (" + in.bound.to_string() + ")");
  }
  return out;  // `inherited` goes out of scope here, closing what nobody adopted
}

}  // namespace baton::handoff
