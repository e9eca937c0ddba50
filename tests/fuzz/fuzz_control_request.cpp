// Fuzzes baton::control::parse_request, the first thing batond does with bytes
// from a control connection. The input is cut into lines the way
// ControlSession does it (split at '\n', one trailing '\r' dropped, empty
// lines skipped) and each line is parsed.
//
// Beyond "no crash, no exception, no sanitizer report": a request that parses
// is encoded with encode_request (what batonctl sends) and must parse back to
// the same request.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "control_protocol.h"

namespace {

using namespace baton;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_control_request: invariant broken: %s\n", what.c_str());
  std::abort();
}

bool same_timeout(const std::optional<double>& a, const std::optional<double>& b) {
  return a.has_value() == b.has_value() && (!a || *a == *b);
}

void check_line(std::string_view line) {
  auto r = control::parse_request(line);
  if (!r) {
    if (r.error().message.empty()) fail("an error without a message");
    return;
  }
  if (r->timeout_s && !(*r->timeout_s >= 0 && *r->timeout_s <= 86400)) fail("accepted a timeout outside 0..86400");
  if (!r->binary.empty() && r->command != control::Command::Upgrade) fail("accepted 'binary' for a command other than upgrade");
  if (!r->binary.empty() && r->binary.front() != '/') fail("accepted a relative 'binary'");

  std::string encoded = control::encode_request(*r);
  if (encoded.empty() || encoded.back() != '\n') fail("encode_request did not end the line");
  encoded.pop_back();
  if (encoded.find('\n') != std::string::npos) fail("encode_request put a newline inside the line");
  auto again = control::parse_request(encoded);
  if (!again) fail("encode_request(parse_request(x)) does not parse: " + again.error().message + ": " + encoded);
  if (again->command != r->command || again->binary != r->binary || !same_timeout(again->timeout_s, r->timeout_s))
    fail("parse_request(encode_request(r)) != r: " + encoded);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  while (!input.empty()) {
    const size_t nl = input.find('\n');
    std::string_view line = input.substr(0, nl);
    input = nl == std::string_view::npos ? std::string_view() : input.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.size() > control::kMaxLine) continue;
    check_line(line);
  }
  return 0;
}
