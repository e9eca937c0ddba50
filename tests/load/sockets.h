#pragma once
// Small socket and process helpers both load tools need.

#include <string>

#include "baton/handoff/result.h"

namespace baton::load {

// Small echo messages must not wait for Nagle: latency is what is measured.
handoff::Status set_nodelay(int fd);
// Thousands of connections need more than the default 1024 fds; the hard
// limit is as far as an unprivileged process may go.
handoff::Status raise_nofile_limit();
// The pending error of a socket (SO_ERROR), e.g. the outcome of a non-blocking connect.
int pending_socket_error(int fd);
// Writes a line to stdout and flushes, so a test waiting on the log sees it at once.
void print_line(const std::string& line);

}  // namespace baton::load
