#pragma once
// The request half of the /metrics endpoint: bytes in, what to answer out.
// http-parser (Debian's libhttp-parser) reads them; no sockets here, so it is
// unit-tested and fuzzed (tests/fuzz/fuzz_metrics_request.cpp).

#include <cstddef>
#include <memory>
#include <string>

namespace baton::daemon {

// Parses one request and says what to answer; no sockets, so it is unit-tested.
struct HttpAnswer {
  int status = 0;  // 0: the request is not complete yet
  std::string reason;
  bool head = false;  // a HEAD request: the answer has no body
};
class MetricsRequestParser {
 public:
  MetricsRequestParser();
  // Feeds bytes; returns the answer once the request is complete or malformed.
  HttpAnswer feed(const char* data, size_t len);

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace baton::daemon
