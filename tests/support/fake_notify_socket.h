#pragma once
// A fake systemd: a datagram socket that collects what a service notifies
// (sd_notify) when NOTIFY_SOCKET names it.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "baton/handoff/unique_fd.h"

namespace baton::test {

class FakeNotifySocket {
 public:
  explicit FakeNotifySocket(const std::string& path);
  const std::string& path() const { return path_; }
  // Collects messages until one from index `from` on contains `needle`, and
  // returns it (nullopt at the deadline).
  std::optional<std::string> wait_for_message(const std::string& needle,
                                              std::chrono::milliseconds timeout = std::chrono::seconds(10),
                                              size_t from = 0);
  bool wait_for(const std::string& needle, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    return wait_for_message(needle, timeout).has_value();
  }
  // Index of the first message containing `needle`, or -1.
  int index_of(const std::string& needle) const;
  size_t count() const { return messages_.size(); }
  std::string all() const;

 private:
  void collect();
  std::string path_;
  handoff::UniqueFd fd_;
  std::vector<std::string> messages_;
};

}  // namespace baton::test
