// Fuzzes the listener address parsers, which see every --listen argument,
// every [listeners] entry of the config file, and every address a predecessor
// announces over the hand-off channel:
//   ListenAddress::parse(input) and ListenSpec::parse(input).
//
// When a parse succeeds:
//  - the address is canonical: parse(to_string()) succeeds and gives back an
//    equal address (the hand-off compares addresses in this form);
//  - to_sockaddr() then from_sockaddr() gives back an equal address (this is
//    how a handed-over socket's getsockname is compared with its announcement);
//  - a ListenSpec's name is a valid listener name (validate_listener_name),
//    since the successor refuses, and so rolls back, any listener whose name is
//    not; and writing the spec out again ("NAME=ADDR", or just ADDR when it
//    was unnamed) parses back to the same spec.

#include <sys/socket.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "baton/handoff/listen_address.h"

namespace {

using namespace baton::handoff;

// Non-printable bytes as \xNN, so that the report shows what the input was.
std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

[[noreturn]] void fail(const std::string& what, std::string_view input) {
  std::fprintf(stderr, "fuzz_listen_address: invariant broken: %s (input '%s')\n", printable(what).c_str(),
               printable(input).c_str());
  std::abort();
}

void check_address(const ListenAddress& a, std::string_view input) {
  const std::string text = a.to_string();
  auto again = ListenAddress::parse(text);
  if (!again) fail("parse(to_string()) failed: " + again.error().message, input);
  if (!(*again == a)) fail("parse(to_string()) != the address: " + again->to_string(), input);
  if (again->to_string() != text) fail("to_string() is not stable", input);
  if (a.is_tcp() && (!a.path.empty() || a.host.empty())) fail("a TCP address with a path or without a host", input);
  if (!a.is_tcp() && (a.path.empty() || !a.host.empty() || a.port != 0)) fail("a Unix address with a host or port", input);

  sockaddr_storage ss;
  const socklen_t len = a.to_sockaddr(ss);
  if (len == 0 || len > sizeof ss) fail("to_sockaddr length " + std::to_string(len), input);
  if (ss.ss_family != a.domain()) fail("to_sockaddr family differs from domain()", input);
  auto back = ListenAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
  if (!back) fail("from_sockaddr(to_sockaddr()) failed: " + back.error().message, input);
  if (!(*back == a)) fail("from_sockaddr(to_sockaddr()) != the address: " + back->to_string(), input);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  if (auto a = ListenAddress::parse(input)) check_address(*a, input);

  if (auto spec = ListenSpec::parse(input)) {
    check_address(spec->address, input);
    if (auto st = validate_listener_name(spec->name); !st)
      fail("ListenSpec::parse gave a name the hand-off refuses: " + st.error().message, input);
    const std::string addr = spec->address.to_string();
    const std::string text = spec->name == addr ? addr : spec->name + "=" + addr;
    auto again = ListenSpec::parse(text);
    if (!again) fail("ListenSpec::parse('" + text + "') failed: " + again.error().message, input);
    if (again->name != spec->name || !(again->address == spec->address))
      fail("ListenSpec::parse('" + text + "') != the spec", input);
  }
  return 0;
}
