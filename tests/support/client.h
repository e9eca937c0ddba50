#pragma once
// Blocking socket clients for tests: connect to what the daemon logged, send,
// and read back exactly what was expected, each step with a deadline.

#include <chrono>
#include <optional>
#include <string>

#include "baton/handoff/unique_fd.h"

namespace baton::test {

using handoff::UniqueFd;

// endpoint: "127.0.0.1:41234", "[::1]:41234" or a Unix socket path (starts with '/').
// Returns an invalid fd and sets errno when the connect fails.
UniqueFd connect_to(const std::string& endpoint);

bool send_all(int fd, const std::string& data, std::chrono::milliseconds timeout = std::chrono::seconds(10));
// Reads exactly n bytes; nullopt on EOF, error or deadline (what it got so far is in *partial).
std::optional<std::string> recv_exact(int fd, size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(10),
                                      std::string* partial = nullptr);
// Sends `data` and reads it back; true if the echo is exact.
bool echo_roundtrip(int fd, const std::string& data, std::chrono::milliseconds timeout = std::chrono::seconds(10));
// True when the peer closed (read returns 0) within the deadline.
bool wait_eof(int fd, std::chrono::milliseconds timeout = std::chrono::seconds(10));
// True when the peer closed or reset the connection within the deadline.
bool wait_closed(int fd, std::chrono::milliseconds timeout = std::chrono::seconds(10));

std::string random_bytes(size_t n, unsigned seed = 1);

// The "addr=" field of a daemon log line: "... listening name=echo addr=127.0.0.1:41234".
std::string field(const std::string& line, const std::string& key);

}  // namespace baton::test
