// Fuzzes MetricsRequestParser, what the --metrics endpoint does with bytes
// from a TCP client. The first byte says where to cut the rest in two, so
// that a request arriving in pieces is fuzzed too (one piece when it is 0).
//
// Beyond "no crash, no sanitizer report": the answer is one of the statuses
// the endpoint sends, once given it never changes, and the same bytes in one
// piece get the same answer as in two.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "metrics_request.h"

namespace {

using baton::daemon::HttpAnswer;
using baton::daemon::MetricsRequestParser;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_metrics_request: invariant broken: %s\n", what.c_str());
  std::abort();
}

int answer_of(const char* data, size_t size, size_t cut) {
  MetricsRequestParser p;
  int status = p.feed(data, cut).status;
  if (status == 0) status = p.feed(data + cut, size - cut).status;
  if (status != 0 && status != 200 && status != 400 && status != 404 && status != 405)
    fail("status " + std::to_string(status));
  return status;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto* bytes = reinterpret_cast<const char*>(data) + 1;
  const size_t n = size - 1;
  const size_t cut = n ? data[0] % (n + 1) : 0;
  const int whole = answer_of(bytes, n, 0);
  const int pieces = answer_of(bytes, n, cut);
  // Complete in one piece means complete in two; a 400 may come earlier in
  // pieces only if the first piece already is malformed, so the final
  // answers of complete requests must agree.
  if (whole != 0 && pieces != 0 && whole != pieces)
    fail("one piece says " + std::to_string(whole) + ", two say " + std::to_string(pieces));
  return 0;
}
