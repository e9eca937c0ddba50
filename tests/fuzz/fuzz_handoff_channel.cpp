// Fuzzes HandoffChannel::try_receive with real datagrams and real SCM_RIGHTS
// control data on a fresh socketpair(AF_UNIX, SOCK_SEQPACKET) per input, and
// checks the channel's promise (channel.h): whatever arrives and whatever is
// wrong with it, no fd leaks. The process's open-fd count after the input,
// with the returned Message destroyed, must equal the count before it.
//
// Input: byte 0 says how to send, the rest is the datagram, sent raw.
//   bits 0-2  fds to attach: (value % 5), so 0..4
//   bit  3    attach socket ends (AF_UNIX SOCK_STREAM) instead of pipe read ends
//   bit  4    pad the datagram past the largest valid one (MSG_TRUNC path)
//   bit  5    receive with a control buffer too small for the fds sent
//             (MSG_CTRUNC path; CMSG_SPACE rounds up to 8 bytes, so the room
//             is for an even number of fds below the count sent)
//   bit  6    SO_PASSCRED on the receiver: an SCM_CREDENTIALS message comes too
//   bit  7    close the sending end before receiving (EOF behind the datagram)
//
// Also checked: a queued datagram is never reported as "nothing queued"; a
// message that is accepted carries exactly the fds sent, each open and
// close-on-exec, and re-encodes to the datagram sent; the oversized,
// control-truncated and foreign-control cases are refused.

#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "baton/handoff/channel.h"
#include "baton/handoff/message.h"

namespace {

using namespace baton::handoff;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_handoff_channel: invariant broken: %s\n", what.c_str());
  std::abort();
}

[[noreturn]] void sys_fail(const char* what) { fail(std::string(what) + ": " + std::strerror(errno)); }

// Open fds of this process; opendir's own fd is counted the same way both times.
int open_fd_count() {
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) sys_fail("opendir /proc/self/fd");
  int n = 0;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n;
}

void close_all(std::vector<int>& fds) {
  for (int fd : fds) ::close(fd);
  fds.clear();
}

// Builds `count` fds to attach; `keep` gets every fd we created (closed by the caller).
std::vector<int> make_fds(size_t count, bool sockets, std::vector<int>& keep) {
  std::vector<int> attach;
  for (size_t i = 0; i < count; ++i) {
    int p[2];
    if (sockets) {
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) != 0) sys_fail("socketpair(SOCK_STREAM)");
    } else {
      if (::pipe2(p, O_CLOEXEC) != 0) sys_fail("pipe2");
    }
    keep.push_back(p[0]);
    keep.push_back(p[1]);
    attach.push_back(p[0]);
  }
  return attach;
}

// Sends `bytes` from `fd` with `fds` as SCM_RIGHTS; false if the kernel refused it.
bool raw_send(int fd, std::span<const uint8_t> bytes, const std::vector<int>& fds) {
  ssize_t n;
  do {
    n = baton::handoff::send_datagram(fd, bytes, fds);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return false;
  if (static_cast<size_t>(n) != bytes.size()) fail("short sendmsg on SOCK_SEQPACKET");
  return true;
}

void run(const uint8_t* data, size_t size) {
  const uint8_t how = data[0];
  const size_t nfds = (how & 7u) % 5;
  const bool sockets = how & 0x08;
  const bool oversize = how & 0x10;
  const bool small_control = (how & 0x20) && nfds > 0;
  const bool passcred = how & 0x40;
  const bool close_sender = how & 0x80;

  std::vector<uint8_t> datagram(data + 1, data + size);
  if (oversize && datagram.size() < kHeaderSize + kMaxPayload + 2) datagram.resize(kHeaderSize + kMaxPayload + 2, 0);

  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) sys_fail("socketpair(SOCK_SEQPACKET)");
  if (passcred) {
    int one = 1;
    if (::setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0) sys_fail("setsockopt(SO_PASSCRED)");
  }
  std::vector<int> created;
  const std::vector<int> attach = make_fds(nfds, sockets, created);
  const bool sent = raw_send(sv[0], datagram, attach);
  close_all(created);  // the datagram holds its own references now
  if (close_sender) ::close(sv[0]);

  {
    HandoffChannel channel{UniqueFd(sv[1])};
    // One fd fewer may still fit (CMSG_SPACE(4) == CMSG_SPACE(8)): round the room down to an even count.
    const size_t room = small_control ? (nfds - 1) & ~size_t{1} : kMaxFdsPerMessage;
    if (small_control && CMSG_SPACE(sizeof(int) * room) >= CMSG_SPACE(sizeof(int) * nfds)) fail("test bug: no truncation");
    auto got = channel.try_receive(room);
    if (sent) {
      if (got.ok() && !got.value()) fail("a datagram was queued, try_receive said none was");
      if (got.ok()) {
        const Message& m = *got.value();
        if (oversize) fail("an oversized datagram was accepted");
        if (small_control) fail("a message whose fds did not all fit (MSG_CTRUNC) was accepted");
        if (passcred) fail("a message with SCM_CREDENTIALS beside it was accepted");
        if (m.fds.size() != nfds)
          fail("message carries " + std::to_string(m.fds.size()) + " fds, " + std::to_string(nfds) + " were sent");
        for (const auto& fd : m.fds) {
          int flags = ::fcntl(fd.get(), F_GETFD);
          if (flags < 0) fail("a received fd is not open");
          if (!(flags & FD_CLOEXEC)) fail("a received fd is not close-on-exec");
        }
        if (encode_frame(m.type, m.payload) != datagram) fail("the accepted message does not re-encode to the datagram");
      }
      // The queue is empty now: nothing more, or EOF if the sender is gone.
      auto next = channel.try_receive();
      if (close_sender) {
        if (next.ok()) fail("after the sender closed, try_receive did not report it");
        if (next.error().message != kPeerClosed) fail("EOF reported as: " + next.error().message);
      } else if (!next.ok() || next.value()) {
        fail("an empty queue did not give 'nothing queued'");
      }
    }
  }  // the channel and any Message (with its fds) are gone here
  if (!close_sender) ::close(sv[0]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int before = open_fd_count();
  run(data, size);
  const int after = open_fd_count();
  if (after != before)
    fail("fd leak: " + std::to_string(before) + " fds open before the input, " + std::to_string(after) + " after");
  return 0;
}
