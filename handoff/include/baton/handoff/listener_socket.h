#pragma once
// Listening sockets: binding a new one, and checking one that arrived from
// another process before it is trusted.

#include <optional>

#include "baton/handoff/listen_address.h"
#include "baton/handoff/result.h"
#include "baton/handoff/unique_fd.h"

namespace baton::handoff {

// socket + bind + listen, non-blocking and close-on-exec. A Unix socket file
// left by a dead process is replaced; one with a live listener is not.
// Errors name the address and the errno text: "bind 127.0.0.1:7000: Address already in use".
// `unix_mode` sets a Unix socket file's permissions from the moment it exists
// (the umask is narrowed around bind; no chmod by path afterwards, which
// could follow a link), so no peer can connect in between.
Result<UniqueFd> bind_listener(const ListenAddress& address, int backlog, std::optional<unsigned> unix_mode = {});

// The address a socket is bound to (getsockname).
Result<ListenAddress> local_address(int fd);

// A received fd is used only if it is a listening (SO_ACCEPTCONN) stream
// (SO_TYPE) socket of the announced family (SO_DOMAIN) bound to exactly the
// announced address (getsockname). The error names the first check that failed.
Status validate_listener(int fd, const ListenAddress& announced);

}  // namespace baton::handoff
