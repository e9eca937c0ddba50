#pragma once
// ChannelLink: one end of the hand-off channel inside a libuv loop, as both
// sides use it (the predecessor from the spawn on, the successor after
// COMMIT). Every queued message is read on readiness. Sends never block the
// loop: a message without fds that the kernel will not take now waits in a
// queue, in order, and goes when the socket is writable again. A message
// with fds is never queued (the caller's fds could close and their numbers
// be reused meanwhile): send_now says the channel is full, and the caller
// builds it again from on_writable.
//
// Callbacks run from the loop; none may destroy the ChannelLink (close() is
// fine). After close() no callback runs.

#include <uv.h>

#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "baton/handoff/channel.h"
#include "baton/handoff/uv_handle.h"

namespace baton::handoff {

class ChannelLink {
 public:
  using MessageCallback = std::function<void(Message& m)>;
  // `why` is kPeerClosed when the peer closed its end (or exited).
  using ClosedCallback = std::function<void(const std::string& why)>;
  using WritableCallback = std::function<void()>;

  ChannelLink(uv_loop_t* loop, MessageCallback on_message, ClosedCallback on_closed);
  ChannelLink(const ChannelLink&) = delete;
  ChannelLink& operator=(const ChannelLink&) = delete;

  // Starts reading `channel`. Fails (and closes it) if libuv refuses the fd.
  Status open(HandoffChannel channel);
  bool is_open() const { return channel_.open(); }
  // Open, and no send has failed.
  bool can_send() const { return channel_.open() && send_error_.empty(); }
  // Closes the channel; queued messages are dropped, no callback runs after.
  void close();
  // Stops watching and gives the channel up, for another ChannelLink to go
  // on with (the predecessor's at COMMIT: SuccessorLink). Messages already
  // in the socket stay there, unread; only with nothing queued to send
  // (else an error, and nothing changes). No callback runs after.
  Result<HandoffChannel> release();

  // Sent now or queued behind earlier ones; fails when closed or when a
  // send failed before. A failed send does not close the link: the peer's
  // last messages may still be queued for us (it closed with ours unread);
  // the read side delivers them, then reports the close once the peer has
  // closed (a local error with a live peer leaves the link open, mute).
  Status send(MessageType type, std::vector<uint8_t> payload);
  // Nothing queued and the kernel took it: true. Channel full: false,
  // nothing sent, and on_writable runs once it can take more.
  Result<bool> send_now(MessageType type, std::span<const uint8_t> payload, std::span<const int> fds = {});
  void on_writable(WritableCallback cb) { on_writable_ = std::move(cb); }
  bool queue_empty() const { return queue_.empty(); }
  // Reads every message already queued now, without waiting for the loop:
  // before deciding on what the peer's exit means, hear what it said last.
  void read_pending();

 private:
  struct Queued {
    MessageType type;
    std::vector<uint8_t> payload;
  };
  static void on_poll(uv_poll_t* poll, int status, int events);
  void read_all();
  // Sends what the queue holds until the kernel says stop.
  Status flush();
  void watch();
  void lose(const std::string& why);
  void break_sending(const std::string& why);

  uv_loop_t* loop_;
  MessageCallback on_message_;
  ClosedCallback on_closed_;
  WritableCallback on_writable_;
  HandoffChannel channel_{UniqueFd()};
  UvHandle<uv_poll_t> poll_;
  std::deque<Queued> queue_;
  bool want_writable_ = false;  // a send_now found the channel full
  std::string send_error_;      // a send failed: nothing more is sent
};

}  // namespace baton::handoff
