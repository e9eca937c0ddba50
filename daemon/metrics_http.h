#pragma once
// The /metrics endpoint: one HTTP/1.1 request per connection, parsed by
// http-parser (Debian's libhttp-parser), answered and closed. GET /metrics
// gets the exposition; anything else a 404 or 405; a malformed request a
// 400. A connection that sends no complete request within 3 s is closed.
//
// Like the control sessions, a connection owns itself until libuv's close
// callback; MetricsHttpConnections knows them all so that exit closes them.

#include <uv.h>

#include <functional>
#include <string>
#include <unordered_set>

#include "baton/handoff/unique_fd.h"
#include "metrics_request.h"

namespace baton::daemon {

class MetricsHttpConnection;

class MetricsHttpConnections {
 public:
  // What GET /metrics answers: the exposition text, made when asked.
  using Render = std::function<std::string()>;
  explicit MetricsHttpConnections(Render render) : render_(std::move(render)) {}
  MetricsHttpConnections(const MetricsHttpConnections&) = delete;
  MetricsHttpConnections& operator=(const MetricsHttpConnections&) = delete;

  // At most this many scrapes at once: each holds an fd (echo clients need
  // them too) for up to 3 s; one more is closed at accept.
  static constexpr size_t kMaxOpen = 32;

  // Serves one accepted TCP connection.
  void start(uv_loop_t* loop, handoff::UniqueFd fd);
  // Closes every connection (at exit; a scrape in flight fails, and is retried).
  void close_all();
  size_t size() const { return open_.size(); }
  uint64_t served() const { return served_; }

 private:
  friend class MetricsHttpConnection;
  Render render_;
  std::unordered_set<MetricsHttpConnection*> open_;
  uint64_t served_ = 0;
};

}  // namespace baton::daemon
