// Which accept4 errors stop a listener, and which only cost one connection.

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>

#include "listener.h"

namespace baton::daemon {
namespace {

TEST(AcceptError, ErrorsThatAccept2SaysToRetryAreRetried) {
  // accept(2), "Error handling": Linux passes already-pending network errors
  // on the new socket as an error code from accept; treat them like EAGAIN.
  for (int err : {ENETDOWN, EPROTO, ENOPROTOOPT, EHOSTDOWN, ENONET, EHOSTUNREACH, EOPNOTSUPP, ENETUNREACH,
                  ECONNABORTED, EINTR, EPERM}) {
    SCOPED_TRACE(std::strerror(err));
    EXPECT_EQ(classify_accept_error(err), AcceptError::Retry);
  }
}

TEST(AcceptError, OutOfResourcesPausesAndEmptyIsDone) {
  for (int err : {EMFILE, ENFILE, ENOBUFS, ENOMEM}) EXPECT_EQ(classify_accept_error(err), AcceptError::PauseFds);
  EXPECT_EQ(classify_accept_error(EAGAIN), AcceptError::Drained);
  EXPECT_EQ(classify_accept_error(EWOULDBLOCK), AcceptError::Drained);
}

TEST(AcceptError, ABrokenListeningSocketIsFatal) {
  for (int err : {EBADF, EINVAL, ENOTSOCK, EFAULT}) {
    SCOPED_TRACE(std::strerror(err));
    EXPECT_EQ(classify_accept_error(err), AcceptError::Fatal);
  }
}

}  // namespace
}  // namespace baton::daemon
