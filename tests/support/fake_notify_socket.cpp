#include "fake_notify_socket.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdio>

#include "process.h"

namespace baton::test {

FakeNotifySocket::FakeNotifySocket(const std::string& path)
    : path_(path), fd_(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  EXPECT_EQ(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
}

void FakeNotifySocket::collect() {
  char buf[4096];
  ssize_t n;
  while ((n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT)) > 0) messages_.emplace_back(buf, n);
}

std::optional<std::string> FakeNotifySocket::wait_for_message(const std::string& needle,
                                                              std::chrono::milliseconds timeout, size_t from) {
  std::optional<std::string> found;
  eventually(
      [&] {
        collect();
        for (size_t i = from; i < messages_.size(); ++i)
          if (messages_[i].find(needle) != std::string::npos) return found = messages_[i], true;
        return false;
      },
      timeout);
  return found;
}

int FakeNotifySocket::index_of(const std::string& needle) const {
  for (size_t i = 0; i < messages_.size(); ++i)
    if (messages_[i].find(needle) != std::string::npos) return static_cast<int>(i);
  return -1;
}

std::string FakeNotifySocket::all() const {
  std::string s;
  for (const auto& m : messages_) s += "[" + m + "] ";
  return s;
}

}  // namespace baton::test
