#include "baton/handoff/channel_link.h"

namespace baton::handoff {

ChannelLink::ChannelLink(uv_loop_t* loop, MessageCallback on_message, ClosedCallback on_closed)
    : loop_(loop), on_message_(std::move(on_message)), on_closed_(std::move(on_closed)) {}

Status ChannelLink::open(HandoffChannel channel) {
  close();
  channel_ = std::move(channel);
  if (int rc = poll_.init(uv_poll_init, loop_, this, channel_.fd()); rc != 0) {
    channel_.close();
    return Error{std::string("uv_poll_init on the hand-off channel: ") + uv_strerror(rc)};
  }
  watch();
  return {};
}

void ChannelLink::close() {
  poll_.close();
  channel_.close();
  queue_.clear();
  want_writable_ = false;
  send_error_.clear();
}

Result<HandoffChannel> ChannelLink::release() {
  if (!channel_.open()) return Error{"release: the hand-off channel is closed"};
  if (!queue_.empty()) return Error{"release: messages are still queued to send"};
  poll_.close();
  HandoffChannel channel = std::move(channel_);
  channel_ = HandoffChannel{UniqueFd()};
  close();
  return channel;
}

void ChannelLink::break_sending(const std::string& why) {
  // Typically the peer is gone (ECONNRESET, EPIPE), and what it sent before
  // it went is still queued for us: the read side hears it, then the EOF,
  // and only then says the link is closed.
  send_error_ = why;
  queue_.clear();
  want_writable_ = false;
  watch();
}

void ChannelLink::watch() {
  if (!poll_) return;
  int events = UV_READABLE | UV_DISCONNECT;
  if (!queue_.empty() || want_writable_) events |= UV_WRITABLE;
  uv_poll_start(poll_.get(), events, &ChannelLink::on_poll);
}

Status ChannelLink::send(MessageType type, std::vector<uint8_t> payload) {
  if (!channel_.open()) return Error{std::string("send ") + to_string(type) + ": the hand-off channel is closed"};
  if (!send_error_.empty()) return Error{std::string("send ") + to_string(type) + ": " + send_error_};
  queue_.push_back({type, std::move(payload)});
  if (auto st = flush(); !st) {
    break_sending(st.error().message);
    return st;
  }
  watch();
  return {};
}

Result<bool> ChannelLink::send_now(MessageType type, std::span<const uint8_t> payload, std::span<const int> fds) {
  if (!channel_.open()) return Error{std::string("send ") + to_string(type) + ": the hand-off channel is closed"};
  if (!send_error_.empty()) return Error{std::string("send ") + to_string(type) + ": " + send_error_};
  bool sent = false;
  if (auto st = flush(); !st) {
    break_sending(st.error().message);
    return st.error();
  }
  if (queue_.empty()) {
    auto got = channel_.try_send(type, payload, fds);
    if (!got) {
      break_sending(got.error().message);
      return got.error();
    }
    sent = got.value();
  }
  if (!sent) {
    want_writable_ = true;
    watch();
  }
  return sent;
}

Status ChannelLink::flush() {
  while (!queue_.empty()) {
    auto sent = channel_.try_send(queue_.front().type, queue_.front().payload);
    if (!sent) return sent.error();
    if (!sent.value()) return {};
    queue_.pop_front();
  }
  return {};
}

void ChannelLink::on_poll(uv_poll_t* poll, int status, int events) {
  auto* self = static_cast<ChannelLink*>(poll->data);
  if (status < 0) {
    // POLLERR (libuv says EBADF and stops the handle): typically the peer
    // closed with our messages unread. What it sent before is still readable.
    self->read_all();
    return self->lose(std::string("poll: ") + uv_strerror(status));
  }
  // Read first: the peer's answers (ACKs) are what frees room on its side.
  if (events & (UV_READABLE | UV_DISCONNECT)) self->read_all();
  if (!self->channel_.open() || !(events & UV_WRITABLE) || !self->send_error_.empty()) return;
  if (auto st = self->flush(); !st) return self->break_sending(st.error().message);
  if (self->want_writable_ && self->queue_.empty()) {
    self->want_writable_ = false;
    if (self->on_writable_) self->on_writable_();
  }
  self->watch();
}

void ChannelLink::read_pending() { read_all(); }

void ChannelLink::read_all() {
  while (channel_.open()) {
    auto got = channel_.try_receive();
    if (!got) return lose(got.error().message);
    if (!got.value()) return;
    on_message_(*got.value());
  }
}

void ChannelLink::lose(const std::string& why) {
  if (!channel_.open()) return;
  close();
  on_closed_(why);
}

}  // namespace baton::handoff
