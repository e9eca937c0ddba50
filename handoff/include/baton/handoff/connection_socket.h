#pragma once
// Checking a client connection that arrived from another process before it
// is served: a connected stream socket of the announced kind.

#include "baton/handoff/protocol.h"
#include "baton/handoff/result.h"

namespace baton::handoff {

// SO_TYPE is SOCK_STREAM, SO_DOMAIN fits the kind (AF_INET/AF_INET6 for TCP,
// AF_UNIX for Unix), SO_ACCEPTCONN is 0, and it has a peer (getpeername).
// Also makes it non-blocking, as every socket in the loop must be.
Status validate_connection(int fd, ConnectionKind kind);

}  // namespace baton::handoff
