#pragma once
// Listener addresses as operators write them:
//   tcp://127.0.0.1:7000   tcp://[::1]:7000   unix:/run/baton.sock
// Hosts are numeric: a listener must not depend on DNS at start-up.

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "baton/handoff/result.h"

namespace baton::handoff {

struct ListenAddress {
  enum class Family { Tcp4, Tcp6, Unix };

  Family family = Family::Tcp4;
  std::string host;  // numeric, canonical (inet_ntop), without brackets; empty for Unix
  uint16_t port = 0;
  std::string path;  // Unix only

  // Parses the operator's text; the error names the part that is wrong.
  static Result<ListenAddress> parse(std::string_view text);
  // The address a socket is bound to, from getsockname().
  static Result<ListenAddress> from_sockaddr(const sockaddr* sa, socklen_t len);

  bool is_tcp() const { return family != Family::Unix; }
  int domain() const;  // AF_INET, AF_INET6 or AF_UNIX
  // Canonical text, parseable again: "tcp://[::1]:7000", "unix:/run/b.sock".
  std::string to_string() const;
  // Without the scheme, as logs show it: "127.0.0.1:41234", "[::1]:7000", "/run/b.sock".
  std::string endpoint() const;

  // Fills a sockaddr for bind()/connect(); returns its length.
  socklen_t to_sockaddr(sockaddr_storage& out) const;

  bool operator==(const ListenAddress&) const = default;
};

// One --listen argument: "[NAME=]ADDR". Without a name the address text is the
// name, which stays stable across generations as long as the address does.
struct ListenSpec {
  std::string name;
  ListenAddress address;

  static Result<ListenSpec> parse(std::string_view text);
};

// Names are what generations match listeners by: 1 to 128 printable ASCII
// characters, no spaces.
Status validate_listener_name(std::string_view name);

}  // namespace baton::handoff
