#include "baton/handoff/listen_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <charconv>
#include <cstddef>
#include <cstring>

namespace baton::handoff {
namespace {

constexpr std::string_view kTcpScheme = "tcp://";
constexpr std::string_view kUnixScheme = "unix:";
constexpr size_t kMaxNameLength = 128;

std::string quoted(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('\'');
  out.append(s);
  out.push_back('\'');
  return out;
}

Result<uint16_t> parse_port(std::string_view text, std::string_view whole) {
  if (text.empty()) return Error{"missing port in " + quoted(whole)};
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec == std::errc::result_out_of_range || (ec == std::errc() && end == text.data() + text.size() && value > 65535))
    return Error{"port " + quoted(text) + " out of range 0-65535 in " + quoted(whole)};
  if (ec != std::errc() || end != text.data() + text.size())
    return Error{"port " + quoted(text) + " is not a number in " + quoted(whole)};
  return static_cast<uint16_t>(value);
}

Result<ListenAddress> parse_tcp(std::string_view rest, std::string_view whole) {
  ListenAddress a;
  std::string_view host;
  std::string_view port;
  if (!rest.empty() && rest.front() == '[') {
    auto close = rest.find(']');
    if (close == std::string_view::npos) return Error{"unclosed '[' in " + quoted(whole)};
    host = rest.substr(1, close - 1);
    auto after = rest.substr(close + 1);
    if (after.empty() || after.front() != ':') return Error{"missing port in " + quoted(whole)};
    port = after.substr(1);
    a.family = ListenAddress::Family::Tcp6;
  } else {
    auto colon = rest.rfind(':');
    if (colon == std::string_view::npos) return Error{"missing port in " + quoted(whole)};
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      return Error{"IPv6 host must be in brackets, as tcp://[::1]:7000, in " + quoted(whole)};
    a.family = ListenAddress::Family::Tcp4;
  }
  if (host.empty()) return Error{"missing host in " + quoted(whole)};

  std::string host_str(host);
  char canonical[INET6_ADDRSTRLEN] = {};
  if (a.family == ListenAddress::Family::Tcp4) {
    in_addr in4{};
    if (inet_pton(AF_INET, host_str.c_str(), &in4) != 1)
      return Error{"host " + quoted(host) + " is not a numeric IPv4 address in " + quoted(whole)};
    inet_ntop(AF_INET, &in4, canonical, sizeof canonical);
  } else {
    in6_addr in6{};
    if (inet_pton(AF_INET6, host_str.c_str(), &in6) != 1)
      return Error{"host " + quoted(host) + " is not a numeric IPv6 address in " + quoted(whole)};
    inet_ntop(AF_INET6, &in6, canonical, sizeof canonical);
  }
  a.host = canonical;

  auto p = parse_port(port, whole);
  if (!p) return p.error();
  a.port = p.value();
  return a;
}

Result<ListenAddress> parse_unix(std::string_view path, std::string_view whole) {
  if (path.empty()) return Error{"empty unix socket path in " + quoted(whole)};
  if (path.find('\0') != std::string_view::npos) return Error{"NUL byte in unix socket path " + quoted(whole)};
  constexpr size_t kMax = sizeof(sockaddr_un{}.sun_path) - 1;
  if (path.size() > kMax)
    return Error{"unix socket path is " + std::to_string(path.size()) + " bytes, longer than the " +
                 std::to_string(kMax) + " the kernel allows, in " + quoted(whole)};
  ListenAddress a;
  a.family = ListenAddress::Family::Unix;
  a.path = std::string(path);
  return a;
}

}  // namespace

Result<ListenAddress> ListenAddress::parse(std::string_view text) {
  if (text.substr(0, kTcpScheme.size()) == kTcpScheme) return parse_tcp(text.substr(kTcpScheme.size()), text);
  if (text.substr(0, kUnixScheme.size()) == kUnixScheme) return parse_unix(text.substr(kUnixScheme.size()), text);
  return Error{"unknown scheme in " + quoted(text) + ": expected tcp://HOST:PORT, tcp://[HOST]:PORT or unix:PATH"};
}

Result<ListenAddress> ListenAddress::from_sockaddr(const sockaddr* sa, socklen_t len) {
  ListenAddress a;
  char buf[INET6_ADDRSTRLEN] = {};
  switch (sa->sa_family) {
    case AF_INET: {
      if (len < static_cast<socklen_t>(sizeof(sockaddr_in))) return Error{"sockaddr_in truncated"};
      auto* in = reinterpret_cast<const sockaddr_in*>(sa);
      inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
      a.family = Family::Tcp4;
      a.host = buf;
      a.port = ntohs(in->sin_port);
      return a;
    }
    case AF_INET6: {
      if (len < static_cast<socklen_t>(sizeof(sockaddr_in6))) return Error{"sockaddr_in6 truncated"};
      auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
      inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
      a.family = Family::Tcp6;
      a.host = buf;
      a.port = ntohs(in6->sin6_port);
      return a;
    }
    case AF_UNIX: {
      auto* un = reinterpret_cast<const sockaddr_un*>(sa);
      size_t max = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
      a.family = Family::Unix;
      a.path = std::string(un->sun_path, strnlen(un->sun_path, max));
      if (a.path.empty()) return Error{"unix socket has no path (unnamed or abstract)"};
      return a;
    }
    default:
      return Error{"unsupported address family " + std::to_string(sa->sa_family)};
  }
}

int ListenAddress::domain() const {
  switch (family) {
    case Family::Tcp4: return AF_INET;
    case Family::Tcp6: return AF_INET6;
    case Family::Unix: return AF_UNIX;
  }
  return AF_UNSPEC;
}

std::string ListenAddress::endpoint() const {
  switch (family) {
    case Family::Tcp4: return host + ":" + std::to_string(port);
    case Family::Tcp6: return "[" + host + "]:" + std::to_string(port);
    case Family::Unix: return path;
  }
  return {};
}

std::string ListenAddress::to_string() const {
  return (family == Family::Unix ? std::string(kUnixScheme) : std::string(kTcpScheme)) + endpoint();
}

socklen_t ListenAddress::to_sockaddr(sockaddr_storage& out) const {
  std::memset(&out, 0, sizeof out);
  switch (family) {
    case Family::Tcp4: {
      auto* in = reinterpret_cast<sockaddr_in*>(&out);
      in->sin_family = AF_INET;
      in->sin_port = htons(port);
      inet_pton(AF_INET, host.c_str(), &in->sin_addr);
      return sizeof(sockaddr_in);
    }
    case Family::Tcp6: {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&out);
      in6->sin6_family = AF_INET6;
      in6->sin6_port = htons(port);
      inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr);
      return sizeof(sockaddr_in6);
    }
    case Family::Unix: {
      auto* un = reinterpret_cast<sockaddr_un*>(&out);
      un->sun_family = AF_UNIX;
      std::memcpy(un->sun_path, path.data(), std::min(path.size(), sizeof(un->sun_path) - 1));
      return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    }
  }
  return 0;
}

Status validate_listener_name(std::string_view name) {
  if (name.empty()) return Error{"empty listener name"};
  if (name.size() > kMaxNameLength)
    return Error{"listener name is " + std::to_string(name.size()) + " bytes, longer than " +
                 std::to_string(kMaxNameLength)};
  for (char c : name) {
    // Printable ASCII without spaces: an unnamed listener is named after its
    // address text ("tcp://[::1]:7000", "unix:/run/a=b.sock"), so all of that must pass.
    if (c <= ' ' || c > '~') return Error{"listener name " + quoted(name) + " has a space, control or non-ASCII character"};
  }
  return {};
}

Result<ListenSpec> ListenSpec::parse(std::string_view text) {
  ListenSpec spec;
  std::string_view addr = text;
  // A name is whatever precedes the first '=' when that part has no scheme in it;
  // a unix path may itself contain '=' ("unix:/tmp/a=b").
  auto eq = text.find('=');
  if (eq != std::string_view::npos && text.substr(0, eq).find("://") == std::string_view::npos &&
      text.substr(0, eq).substr(0, kUnixScheme.size()) != kUnixScheme) {
    spec.name = std::string(text.substr(0, eq));
    addr = text.substr(eq + 1);
    if (auto st = validate_listener_name(spec.name); !st) return st.error();
  }
  auto parsed = ListenAddress::parse(addr);
  if (!parsed) return parsed.error();
  spec.address = std::move(parsed).value();
  if (spec.name.empty()) {
    spec.name = spec.address.to_string();
    // The hand-off refuses such a name later, at every upgrade: say so now.
    if (auto st = validate_listener_name(spec.name); !st)
      return Error{"address " + quoted(text) + " cannot name its own listener (" + st.error().message +
                   "); give it a name: NAME=ADDR"};
  }
  return spec;
}

}  // namespace baton::handoff
