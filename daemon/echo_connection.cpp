#include "echo_connection.h"

#include <spdlog/spdlog.h>

#include <cstring>
#include <new>

namespace baton::daemon {
namespace {

// A write request and the bytes it writes, in one allocation.
struct PendingWrite {
  uv_write_t req;
  size_t len;
  char* bytes() { return reinterpret_cast<char*>(this + 1); }

  static PendingWrite* make(const char* data, size_t len) {
    void* mem = ::operator new(sizeof(PendingWrite) + len);
    auto* w = new (mem) PendingWrite{};
    w->len = len;
    std::memcpy(w->bytes(), data, len);
    return w;
  }
  static void destroy(PendingWrite* w) {
    w->~PendingWrite();
    ::operator delete(w);
  }
};

}  // namespace

EchoConnection::EchoConnection(ConnectionRegistry& registry, SharedReadBuffer& buffer, DrainCounts& counts,
                               WaterMarks marks, Kind kind)
    : registry_(registry),
      buffer_(buffer),
      counts_(counts),
      backpressure_(marks),
      kind_(kind) {}

EchoConnection* EchoConnection::start(uv_loop_t* loop, handoff::UniqueFd fd, Kind kind, ConnectionRegistry& registry,
                           SharedReadBuffer& buffer, DrainCounts& counts, WaterMarks marks) {
  auto* c = new EchoConnection(registry, buffer, counts, marks, kind);
  int rc = kind == Kind::Tcp ? uv_tcp_init(loop, &c->handle_.tcp) : uv_pipe_init(loop, &c->handle_.pipe, 0);
  if (rc != 0) {
    spdlog::warn("connection: init: {}", uv_strerror(rc));
    delete c;
    return nullptr;
  }
  c->handle_.stream.data = c;
  rc = kind == Kind::Tcp ? uv_tcp_open(&c->handle_.tcp, fd.get()) : uv_pipe_open(&c->handle_.pipe, fd.get());
  if (rc != 0) {
    spdlog::warn("connection: open fd {}: {}", fd.get(), uv_strerror(rc));
    c->state_ = State::Closing;
    uv_close(reinterpret_cast<uv_handle_t*>(c->stream()), [](uv_handle_t* h) {
      delete static_cast<EchoConnection*>(h->data);
    });
    return nullptr;  // fd closes with `fd`: the handle never took it
  }
  fd.release();  // libuv closes it with the handle now
  // Echo is interactive: a small reply must not wait for Nagle.
  if (kind == Kind::Tcp) uv_tcp_nodelay(&c->handle_.tcp, 1);
  registry.add(c);
  c->read_start();
  return c;
}

void EchoConnection::read_start() {
  if (reading_ || state_ != State::Open) return;
  if (uv_read_start(stream(), &EchoConnection::on_alloc, &EchoConnection::on_read) == 0) reading_ = true;
}

void EchoConnection::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* c = static_cast<EchoConnection*>(h->data);
  *buf = uv_buf_init(c->buffer_.data, SharedReadBuffer::kSize);
}

void EchoConnection::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* c = static_cast<EchoConnection*>(s->data);
  if (nread > 0) {
    c->echo(buf->base, static_cast<size_t>(nread));
  } else if (nread == UV_EOF) {
    c->peer_finished();
  } else if (nread < 0) {
    spdlog::debug("connection: read: {}", uv_strerror(static_cast<int>(nread)));
    c->close_now(EndReason::Client);
  }
}

void EchoConnection::echo(const char* data, size_t len) {
  // After our FIN (drain deadline) nothing can be echoed; what the client still
  // sends is read and dropped so that closing does not turn into a reset.
  if (state_ != State::Open) return;
  counts_.bytes_echoed += len;
  size_t done = 0;
  if (backpressure_.pending() == 0) {
    uv_buf_t b = uv_buf_init(const_cast<char*>(data), static_cast<unsigned>(len));
    int n = uv_try_write(stream(), &b, 1);
    if (n > 0) {
      done = static_cast<size_t>(n);
    } else if (n != UV_EAGAIN && n != UV_ENOSYS) {
      spdlog::debug("connection: write: {}", uv_strerror(n));
      close_now(EndReason::Client);
      return;
    }
  }
  if (done == len) return;
  auto* w = PendingWrite::make(data + done, len - done);
  w->req.data = this;
  uv_buf_t b = uv_buf_init(w->bytes(), static_cast<unsigned>(w->len));
  if (int rc = uv_write(&w->req, stream(), &b, 1, &EchoConnection::on_write); rc != 0) {
    PendingWrite::destroy(w);
    spdlog::debug("connection: write: {}", uv_strerror(rc));
    close_now(EndReason::Client);
    return;
  }
  if (backpressure_.queued(w->len) == Backpressure::Action::PauseReading && reading_) {
    uv_read_stop(stream());
    reading_ = false;
  }
}

void EchoConnection::on_write(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<PendingWrite*>(req);
  auto* c = static_cast<EchoConnection*>(req->data);
  size_t len = w->len;
  PendingWrite::destroy(w);
  // A cancelled write (the handle is closing) must not touch the connection's
  // state any more than counting it.
  auto action = c->backpressure_.written(len);
  if (status < 0) {
    if (status != UV_ECANCELED) c->close_now(EndReason::Client);
    return;
  }
  if (c->state_ == State::HandingOff && c->backpressure_.pending() == 0) {
    c->handoff_->flushed(*c);
    return;
  }
  if (action == Backpressure::Action::ResumeReading) c->read_start();
}

bool EchoConnection::begin_handoff(handoff::ConnectionHandoff& handoff) {
  if (state_ != State::Open) return false;
  if (reading_) uv_read_stop(stream());
  reading_ = false;
  state_ = State::HandingOff;
  handoff_ = &handoff;
  if (backpressure_.pending() == 0) handoff.flushed(*this);
  return true;
}

void EchoConnection::cancel_handoff() {
  // Always forgotten: a connection closing meanwhile must not tell a
  // ConnectionHandoff that is being destroyed that it is gone.
  handoff_ = nullptr;
  if (state_ != State::HandingOff) return;
  state_ = State::Open;
  read_start();
}

void EchoConnection::close_handed_off() {
  handoff_ = nullptr;
  close_now(EndReason::HandedOver);
}

int EchoConnection::handoff_fd() const {
  uv_os_fd_t fd = -1;
  uv_fileno(reinterpret_cast<const uv_handle_t*>(&handle_.stream), &fd);
  return fd;
}

void EchoConnection::peer_finished() {
  // The client sent FIN: it may still read. Write back everything owed, then FIN.
  reading_ = false;
  switch (state_) {
    case State::Open: half_close(State::ClientFinished); return;
    case State::Finishing: state_ = State::ClientFinished; return;  // on_shutdown closes once our FIN is out
    case State::FinSent: close_now(end_reason_); return;
    case State::HandingOff:  // not reading: no EOF can come
    case State::ClientFinished:
    case State::Closing: return;
  }
}

void EchoConnection::half_close(State next) {
  state_ = next;
  shutdown_req_.data = this;
  if (uv_shutdown(&shutdown_req_, stream(), &EchoConnection::on_shutdown) != 0) close_now(end_reason_);
}

void EchoConnection::on_shutdown(uv_shutdown_t* req, int status) {
  auto* c = static_cast<EchoConnection*>(req->data);
  if (status == UV_ECANCELED) return;  // closing already
  // Both directions are done unless we half-closed first (drain deadline):
  // then wait for the client's FIN, or the drain's grace timer.
  if (c->state_ == State::Finishing && c->reading_) {
    c->state_ = State::FinSent;
    return;
  }
  c->close_now(c->end_reason_);
}

void EchoConnection::finish() {
  // Already flushing towards FIN after the client's own: it ends at the deadline's count.
  if (state_ == State::ClientFinished) end_reason_ = EndReason::Deadline;
  // A connection on its way to the successor is the hand-off's to settle.
  if (state_ != State::Open) return;
  end_reason_ = EndReason::Deadline;
  if (!reading_ && uv_read_start(stream(), &EchoConnection::on_alloc, &EchoConnection::on_read) == 0) reading_ = true;
  half_close(State::Finishing);
}

void EchoConnection::close_now(EndReason why) {
  if (state_ == State::Closing) return;
  state_ = State::Closing;
  end_reason_ = why;
  uv_close(reinterpret_cast<uv_handle_t*>(stream()), &EchoConnection::on_closed);
}

void EchoConnection::on_closed(uv_handle_t* h) {
  auto* c = static_cast<EchoConnection*>(h->data);
  switch (c->end_reason_) {
    case EndReason::Client: ++c->counts_.closed_by_client; break;
    case EndReason::Deadline: ++c->counts_.closed_at_deadline; break;
    case EndReason::Forced: ++c->counts_.closed_forcibly; break;
    case EndReason::HandedOver: ++c->counts_.handed_over; break;
  }
  if (c->handoff_) c->handoff_->gone(*c);
  c->registry_.remove(c);
  delete c;
}

}  // namespace baton::daemon
