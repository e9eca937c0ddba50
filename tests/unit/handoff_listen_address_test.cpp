// ListenAddress / ListenSpec: what operators write on --listen, parsed,
// canonicalised and printed back; every rejection with its exact message.

#include "baton/handoff/listen_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "support/process.h"
#include "unit_util.h"

namespace baton::handoff {
namespace {

using Family = ListenAddress::Family;

ListenAddress parse_ok(std::string_view text) {
  auto r = ListenAddress::parse(text);
  EXPECT_TRUE(r.ok()) << text << ": " << (r.ok() ? "" : r.error().message);
  return r.ok() ? r.value() : ListenAddress{};
}

std::string parse_error(std::string_view text) {
  auto r = ListenAddress::parse(text);
  EXPECT_FALSE(r.ok()) << text << " parsed, but should not have";
  return r.ok() ? std::string("<parsed>") : r.error().message;
}

// ---- good inputs ---------------------------------------------------------

TEST(ListenAddressParse, TcpV4) {
  auto a = parse_ok("tcp://127.0.0.1:7000");
  EXPECT_EQ(a.family, Family::Tcp4);
  EXPECT_EQ(a.host, "127.0.0.1");
  EXPECT_EQ(a.port, 7000);
  EXPECT_EQ(a.path, "");
  EXPECT_TRUE(a.is_tcp());
  EXPECT_EQ(a.domain(), AF_INET);
}

TEST(ListenAddressParse, TcpV6InBrackets) {
  auto a = parse_ok("tcp://[::1]:7000");
  EXPECT_EQ(a.family, Family::Tcp6);
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.port, 7000);
  EXPECT_TRUE(a.is_tcp());
  EXPECT_EQ(a.domain(), AF_INET6);
}

TEST(ListenAddressParse, V6IsCanonicalised) {
  EXPECT_EQ(parse_ok("tcp://[0:0:0:0:0:0:0:1]:80").host, "::1");
  EXPECT_EQ(parse_ok("tcp://[2001:DB8:0:0:0:0:0:1]:80").host, "2001:db8::1");
  EXPECT_EQ(parse_ok("tcp://[2001:0db8::0001]:80").to_string(), "tcp://[2001:db8::1]:80");
  EXPECT_EQ(parse_ok("tcp://[::ffff:127.0.0.1]:80").host, "::ffff:127.0.0.1");
  // Two spellings of one address are one address.
  EXPECT_EQ(parse_ok("tcp://[0::1]:9"), parse_ok("tcp://[::1]:9"));
}

TEST(ListenAddressParse, PortZeroAndPortLimits) {
  EXPECT_EQ(parse_ok("tcp://127.0.0.1:0").port, 0);
  EXPECT_EQ(parse_ok("tcp://0.0.0.0:65535").port, 65535);
  EXPECT_EQ(parse_ok("tcp://[::]:0").port, 0);
}

TEST(ListenAddressParse, UnixPath) {
  auto a = parse_ok("unix:/run/baton.sock");
  EXPECT_EQ(a.family, Family::Unix);
  EXPECT_EQ(a.path, "/run/baton.sock");
  EXPECT_EQ(a.host, "");
  EXPECT_EQ(a.port, 0);
  EXPECT_FALSE(a.is_tcp());
  EXPECT_EQ(a.domain(), AF_UNIX);
}

TEST(ListenAddressParse, UnixPathOfExactlyTheKernelMaximum) {
  const size_t max = sizeof(sockaddr_un{}.sun_path) - 1;  // 107
  std::string path = "/" + std::string(max - 1, 'p');
  ASSERT_EQ(path.size(), max);
  EXPECT_EQ(parse_ok("unix:" + path).path, path);
}

// ---- bad inputs, exact messages --------------------------------------------

TEST(ListenAddressParse, UnknownScheme) {
  EXPECT_EQ(parse_error("http://127.0.0.1:80"),
            "unknown scheme in 'http://127.0.0.1:80': expected tcp://HOST:PORT, tcp://[HOST]:PORT or unix:PATH");
  EXPECT_EQ(parse_error("127.0.0.1:80"),
            "unknown scheme in '127.0.0.1:80': expected tcp://HOST:PORT, tcp://[HOST]:PORT or unix:PATH");
  EXPECT_EQ(parse_error(""), "unknown scheme in '': expected tcp://HOST:PORT, tcp://[HOST]:PORT or unix:PATH");
}

TEST(ListenAddressParse, MissingPort) {
  EXPECT_EQ(parse_error("tcp://127.0.0.1"), "missing port in 'tcp://127.0.0.1'");
  EXPECT_EQ(parse_error("tcp://127.0.0.1:"), "missing port in 'tcp://127.0.0.1:'");
  EXPECT_EQ(parse_error("tcp://[::1]"), "missing port in 'tcp://[::1]'");
  EXPECT_EQ(parse_error("tcp://[::1]:"), "missing port in 'tcp://[::1]:'");
  EXPECT_EQ(parse_error("tcp://[::1]7000"), "missing port in 'tcp://[::1]7000'");
}

TEST(ListenAddressParse, MissingHost) {
  EXPECT_EQ(parse_error("tcp://:7000"), "missing host in 'tcp://:7000'");
  EXPECT_EQ(parse_error("tcp://[]:7000"), "missing host in 'tcp://[]:7000'");
}

TEST(ListenAddressParse, PortOutOfRange) {
  EXPECT_EQ(parse_error("tcp://127.0.0.1:65536"), "port '65536' out of range 0-65535 in 'tcp://127.0.0.1:65536'");
  EXPECT_EQ(parse_error("tcp://127.0.0.1:99999999999"),
            "port '99999999999' out of range 0-65535 in 'tcp://127.0.0.1:99999999999'");
  EXPECT_EQ(parse_error("tcp://[::1]:70000"), "port '70000' out of range 0-65535 in 'tcp://[::1]:70000'");
}

TEST(ListenAddressParse, NonNumericPort) {
  EXPECT_EQ(parse_error("tcp://127.0.0.1:http"), "port 'http' is not a number in 'tcp://127.0.0.1:http'");
  EXPECT_EQ(parse_error("tcp://127.0.0.1:70a"), "port '70a' is not a number in 'tcp://127.0.0.1:70a'");
  EXPECT_EQ(parse_error("tcp://127.0.0.1:-1"), "port '-1' is not a number in 'tcp://127.0.0.1:-1'");
  EXPECT_EQ(parse_error("tcp://127.0.0.1:+80"), "port '+80' is not a number in 'tcp://127.0.0.1:+80'");
  EXPECT_EQ(parse_error("tcp://127.0.0.1: 80"), "port ' 80' is not a number in 'tcp://127.0.0.1: 80'");
}

TEST(ListenAddressParse, NonNumericHost) {
  EXPECT_EQ(parse_error("tcp://localhost:7000"),
            "host 'localhost' is not a numeric IPv4 address in 'tcp://localhost:7000'");
  EXPECT_EQ(parse_error("tcp://256.0.0.1:7000"),
            "host '256.0.0.1' is not a numeric IPv4 address in 'tcp://256.0.0.1:7000'");
  EXPECT_EQ(parse_error("tcp://[localhost]:7000"),
            "host 'localhost' is not a numeric IPv6 address in 'tcp://[localhost]:7000'");
  EXPECT_EQ(parse_error("tcp://[127.0.0.1]:7000"),
            "host '127.0.0.1' is not a numeric IPv6 address in 'tcp://[127.0.0.1]:7000'");
}

TEST(ListenAddressParse, Ipv6WithoutBrackets) {
  EXPECT_EQ(parse_error("tcp://::1:7000"),
            "IPv6 host must be in brackets, as tcp://[::1]:7000, in 'tcp://::1:7000'");
  EXPECT_EQ(parse_error("tcp://2001:db8::1:80"),
            "IPv6 host must be in brackets, as tcp://[::1]:7000, in 'tcp://2001:db8::1:80'");
}

TEST(ListenAddressParse, UnclosedBracket) {
  EXPECT_EQ(parse_error("tcp://[::1:7000"), "unclosed '[' in 'tcp://[::1:7000'");
  EXPECT_EQ(parse_error("tcp://["), "unclosed '[' in 'tcp://['");
}

TEST(ListenAddressParse, EmptyUnixPath) { EXPECT_EQ(parse_error("unix:"), "empty unix socket path in 'unix:'"); }

TEST(ListenAddressParse, UnixPathTooLong) {
  std::string path = "/" + std::string(107, 'x');  // 108 bytes: no room for the NUL
  EXPECT_EQ(parse_error("unix:" + path),
            "unix socket path is 108 bytes, longer than the 107 the kernel allows, in 'unix:" + path + "'");
  std::string longer = "/" + std::string(299, 'y');
  EXPECT_EQ(parse_error("unix:" + longer),
            "unix socket path is 300 bytes, longer than the 107 the kernel allows, in 'unix:" + longer + "'");
}

TEST(ListenAddressParse, NulByteInUnixPath) {
  std::string text("unix:/tmp/a\0b", 13);
  auto r = ListenAddress::parse(text);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message.rfind("NUL byte in unix socket path", 0), 0u) << r.error().message;
}

// ---- printing ---------------------------------------------------------------

TEST(ListenAddressPrint, ToStringAndEndpoint) {
  auto v4 = parse_ok("tcp://127.0.0.1:7000");
  EXPECT_EQ(v4.to_string(), "tcp://127.0.0.1:7000");
  EXPECT_EQ(v4.endpoint(), "127.0.0.1:7000");
  auto v6 = parse_ok("tcp://[::1]:7000");
  EXPECT_EQ(v6.to_string(), "tcp://[::1]:7000");
  EXPECT_EQ(v6.endpoint(), "[::1]:7000");
  auto un = parse_ok("unix:/run/b.sock");
  EXPECT_EQ(un.to_string(), "unix:/run/b.sock");
  EXPECT_EQ(un.endpoint(), "/run/b.sock");
}

TEST(ListenAddressPrint, ToStringParsesBackToTheSameAddress) {
  for (const char* text : {"tcp://127.0.0.1:7000", "tcp://0.0.0.0:0", "tcp://[::1]:65535", "tcp://[fe80::1:2]:1",
                           "tcp://[::ffff:10.1.2.3]:8080", "unix:/run/baton.sock", "unix:relative/path.sock",
                           "unix:/tmp/with=equals"}) {
    SCOPED_TRACE(text);
    auto a = parse_ok(text);
    EXPECT_EQ(a.to_string(), text);
    auto again = parse_ok(a.to_string());
    EXPECT_EQ(again, a);
  }
}

TEST(ListenAddressPrint, NonCanonicalInputPrintsCanonically) {
  auto a = parse_ok("tcp://[0000:0000::0001]:7000");
  EXPECT_EQ(a.to_string(), "tcp://[::1]:7000");
  EXPECT_EQ(parse_ok(a.to_string()), a);
}

// ---- sockaddr conversions ----------------------------------------------------

TEST(ListenAddressSockaddr, ToSockaddrAndBackForEveryFamily) {
  for (const char* text : {"tcp://127.0.0.1:7000", "tcp://[2001:db8::7]:443", "unix:/tmp/baton-unit.sock"}) {
    SCOPED_TRACE(text);
    auto a = parse_ok(text);
    sockaddr_storage ss;
    socklen_t len = a.to_sockaddr(ss);
    ASSERT_GT(len, 0u);
    EXPECT_EQ(ss.ss_family, a.domain());
    auto back = ListenAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(back.value(), a);
  }
}

TEST(ListenAddressSockaddr, FromSockaddrOfABoundSocket) {
  auto a = parse_ok("tcp://127.0.0.1:0");
  UniqueFd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(s.valid());
  sockaddr_storage ss;
  socklen_t len = a.to_sockaddr(ss);
  ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len), 0) << std::strerror(errno);
  sockaddr_storage got{};
  socklen_t got_len = sizeof got;
  ASSERT_EQ(::getsockname(s.get(), reinterpret_cast<sockaddr*>(&got), &got_len), 0);
  auto r = ListenAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&got), got_len);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->family, Family::Tcp4);
  EXPECT_EQ(r->host, "127.0.0.1");
  EXPECT_NE(r->port, 0);
  EXPECT_EQ(r->port, ntohs(reinterpret_cast<sockaddr_in*>(&got)->sin_port));
}

TEST(ListenAddressSockaddr, FromSockaddrOfABoundUnixSocket) {
  test::TempDir dir;
  const std::string path = dir.file("s.sock");
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(s.valid());
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  std::strncpy(un.sun_path, path.c_str(), sizeof un.sun_path - 1);
  ASSERT_EQ(::bind(s.get(), reinterpret_cast<sockaddr*>(&un), sizeof un), 0) << std::strerror(errno);
  sockaddr_storage got{};
  socklen_t got_len = sizeof got;
  ASSERT_EQ(::getsockname(s.get(), reinterpret_cast<sockaddr*>(&got), &got_len), 0);
  auto r = ListenAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&got), got_len);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->family, Family::Unix);
  EXPECT_EQ(r->path, path);
}

TEST(ListenAddressSockaddr, FromSockaddrErrors) {
  sockaddr_storage ss{};
  auto* in = reinterpret_cast<sockaddr_in*>(&ss);
  in->sin_family = AF_INET;
  auto r = ListenAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), sizeof(sockaddr_in) - 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "sockaddr_in truncated");

  ss = {};
  ss.ss_family = AF_INET6;
  r = ListenAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), sizeof(sockaddr_in6) - 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "sockaddr_in6 truncated");

  ss = {};
  ss.ss_family = AF_UNIX;  // unnamed: no path at all
  r = ListenAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), sizeof(sa_family_t));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "unix socket has no path (unnamed or abstract)");

  ss = {};
  ss.ss_family = AF_UNIX;  // abstract: sun_path starts with NUL
  std::memcpy(reinterpret_cast<sockaddr_un*>(&ss)->sun_path, "\0abstract", 9);
  r = ListenAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), offsetof(sockaddr_un, sun_path) + 9);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "unix socket has no path (unnamed or abstract)");

  ss = {};
  ss.ss_family = AF_APPLETALK;
  r = ListenAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), sizeof ss);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "unsupported address family " + std::to_string(AF_APPLETALK));
}

// ---- ListenSpec --------------------------------------------------------------

TEST(ListenSpecParse, WithName) {
  auto s = ListenSpec::parse("echo=tcp://127.0.0.1:7000");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->name, "echo");
  EXPECT_EQ(s->address, parse_ok("tcp://127.0.0.1:7000"));
}

TEST(ListenSpecParse, NameWithEveryAllowedCharacterClass) {
  auto s = ListenSpec::parse("Echo_1.a:b/c-d=tcp://[::1]:1");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->name, "Echo_1.a:b/c-d");
  EXPECT_EQ(s->address.family, Family::Tcp6);
}

TEST(ListenSpecParse, WithoutNameTheCanonicalAddressIsTheName) {
  auto s = ListenSpec::parse("tcp://127.0.0.1:7000");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->name, "tcp://127.0.0.1:7000");
  auto v6 = ListenSpec::parse("tcp://[0::1]:7000");
  ASSERT_TRUE(v6.ok()) << v6.error().message;
  EXPECT_EQ(v6->name, "tcp://[::1]:7000");
  auto un = ListenSpec::parse("unix:/run/b.sock");
  ASSERT_TRUE(un.ok()) << un.error().message;
  EXPECT_EQ(un->name, "unix:/run/b.sock");
}

TEST(ListenSpecParse, UnixPathContainingEquals) {
  auto s = ListenSpec::parse("unix:/tmp/a=b.sock");
  ASSERT_TRUE(s.ok()) << s.error().message;
  EXPECT_EQ(s->address.family, Family::Unix);
  EXPECT_EQ(s->address.path, "/tmp/a=b.sock");
  EXPECT_EQ(s->name, "unix:/tmp/a=b.sock");

  auto named = ListenSpec::parse("ctl=unix:/tmp/a=b.sock");
  ASSERT_TRUE(named.ok()) << named.error().message;
  EXPECT_EQ(named->name, "ctl");
  EXPECT_EQ(named->address.path, "/tmp/a=b.sock");
}

TEST(ListenSpecParse, InvalidName) {
  auto bad = ListenSpec::parse("bad name=tcp://127.0.0.1:1");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "listener name 'bad name' has a space, control or non-ASCII character");

  auto empty = ListenSpec::parse("=tcp://127.0.0.1:1");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().message, "empty listener name");

  auto long_name = ListenSpec::parse(std::string(129, 'n') + "=tcp://127.0.0.1:1");
  ASSERT_FALSE(long_name.ok());
  EXPECT_EQ(long_name.error().message, "listener name is 129 bytes, longer than 128");

  EXPECT_TRUE(ListenSpec::parse(std::string(128, 'n') + "=tcp://127.0.0.1:1").ok());
}

TEST(ListenSpecParse, BadAddressAfterName) {
  auto s = ListenSpec::parse("echo=tcp://127.0.0.1");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message, "missing port in 'tcp://127.0.0.1'");
}

TEST(ValidateListenerName, Rules) {
  EXPECT_TRUE(validate_listener_name("echo").ok());
  EXPECT_TRUE(validate_listener_name("tcp://127.0.0.1:7000").ok());
  EXPECT_FALSE(validate_listener_name("").ok());
  EXPECT_TRUE(validate_listener_name("tcp://[::1]:7000").ok());
  EXPECT_TRUE(validate_listener_name("unix:/run/a=b.sock").ok());
  EXPECT_FALSE(validate_listener_name("a b").ok());
  EXPECT_FALSE(validate_listener_name("tab\there").ok());
  EXPECT_FALSE(validate_listener_name("caf\xc3\xa9").ok());
  EXPECT_FALSE(validate_listener_name(std::string(129, 'x')).ok());
}

// BUG (see report): a ListenSpec without NAME= is named after its address, but
// the successor (take_listeners) validates names with validate_listener_name,
// which refuses '[' and ']' (every IPv6 address) and '=' (legal in a unix path),
// so such a listener can never be handed over. Enable once fixed.
TEST(ListenSpecParse, DefaultNamesAreValidListenerNames) {
  for (const char* text : {"tcp://127.0.0.1:7000", "tcp://[::1]:7000", "unix:/tmp/a=b.sock"}) {
    SCOPED_TRACE(text);
    auto s = ListenSpec::parse(text);
    ASSERT_TRUE(s.ok()) << s.error().message;
    auto st = validate_listener_name(s->name);
    EXPECT_TRUE(st.ok()) << st.error().message;
  }
}

}  // namespace
}  // namespace baton::handoff
