#pragma once
// Every open echo connection, so that a drain can reach them all and the
// daemon knows when the last one is gone. Connections register themselves
// when they start and unregister when libuv has closed them.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <unordered_set>

namespace baton::daemon {

class EchoConnection;

// How connections ended (reported when the daemon exits, and in the metrics).
struct DrainCounts {
  uint64_t closed_by_client = 0;  // the client closed (or reset) on its own
  uint64_t closed_at_deadline = 0;  // half-closed by us at the drain deadline
  uint64_t closed_forcibly = 0;   // closed at once (second signal, grace over, fatal error)
  uint64_t handed_over = 0;       // now served by the successor (drain = handoff)
  uint64_t bytes_echoed = 0;      // every byte written back (or queued to be), for the metrics
};

class ConnectionRegistry {
 public:
  void add(EchoConnection* c) { open_.insert(c); }
  void remove(EchoConnection* c);

  size_t size() const { return open_.size(); }
  bool contains(EchoConnection* c) const { return open_.contains(c); }
  bool empty() const { return open_.empty(); }
  uint64_t accepted_total() const { return accepted_total_; }
  void count_accept() { ++accepted_total_; }

  template <class F>
  void for_each(F&& fn) {
    // Copy first: fn may close a connection, which removes it from the set.
    std::vector<EchoConnection*> all(open_.begin(), open_.end());
    for (auto* c : all) fn(*c);
  }

  // Runs whenever the last connection has gone.
  void on_empty(std::function<void()> fn) { on_empty_ = std::move(fn); }

 private:
  std::unordered_set<EchoConnection*> open_;
  uint64_t accepted_total_ = 0;
  std::function<void()> on_empty_;
};

}  // namespace baton::daemon
