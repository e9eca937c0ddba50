#pragma once
// One client connection of the echo service: every byte read is written back,
// in order. Reads go to one buffer shared by the whole loop (an idle
// connection holds no buffer); only bytes the kernel would not take at once
// are copied into a pending write, and reading pauses while too many are
// pending (Backpressure).
//
// An EchoConnection owns itself from accept to libuv's close callback, where
// it is freed: no destructor can free memory libuv still points to.

#include <uv.h>

#include <cstdint>

#include "backpressure.h"
#include "baton/handoff/protocol.h"
#include "baton/handoff/unique_fd.h"
#include "connection_registry.h"

namespace baton::daemon {

// The loop-wide read buffer: libuv calls alloc then read synchronously, one
// connection at a time, so one buffer serves them all.
struct SharedReadBuffer {
  static constexpr size_t kSize = 64 * 1024;
  char data[kSize];
};

class EchoConnection;

// Told when a connection being handed over has flushed what it owed, or is
// gone (closed by its client) before it could be handed over.
class HandoverObserver {
 public:
  virtual void flushed(EchoConnection& c) = 0;
  virtual void gone(EchoConnection& c) = 0;

 protected:
  ~HandoverObserver() = default;
};

class EchoConnection {
 public:
  // The hand-off's own kind: a connection travels to the next generation as it is.
  using Kind = handoff::ConnectionKind;
  enum class EndReason { Client, Deadline, Forced, HandedOver };

  // Adopts an accepted socket into the loop and starts echoing. Returns false
  // (and the fd is closed) if libuv refuses it.
  static bool start(uv_loop_t* loop, handoff::UniqueFd fd, Kind kind, ConnectionRegistry& registry,
                    SharedReadBuffer& buffer, DrainCounts& counts, WaterMarks marks);

  // Drain deadline: echo nothing more, flush what is owed, send FIN, then
  // close when the client closes (the drain's grace timer closes the rest).
  void finish();
  // Closes at once; pending writes are dropped.
  void close_now(EndReason why);

  // Connection hand-off: stop reading (what the client sends now waits in
  // the kernel for the successor) and tell `observer` once everything read
  // has been written back. False if the connection is already ending.
  bool begin_handover(HandoverObserver* observer);
  // The hand-off did not happen: serve (and drain) it here after all.
  void cancel_handover();
  // The successor serves it (or may): close our copy, which never shuts the
  // socket down, and forget the observer, which may be gone before libuv's
  // close callback runs.
  void close_handed_over();
  uint64_t id() const { return id_; }
  Kind kind() const { return kind_; }
  int fd() const;

 private:
  EchoConnection(ConnectionRegistry& registry, SharedReadBuffer& buffer, DrainCounts& counts, WaterMarks marks,
                 Kind kind);

  static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_shutdown(uv_shutdown_t* req, int status);
  static void on_closed(uv_handle_t* h);

  void echo(const char* data, size_t len);
  void peer_finished();
  void half_close();
  void read_start();
  uv_stream_t* stream() { return &handle_.stream; }

  union {
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
  } handle_;
  uv_shutdown_t shutdown_req_;
  ConnectionRegistry& registry_;
  SharedReadBuffer& buffer_;
  DrainCounts& counts_;
  Backpressure backpressure_;
  HandoverObserver* handover_ = nullptr;  // set while being handed over
  uint64_t id_;
  EndReason end_reason_ = EndReason::Client;
  Kind kind_;
  bool reading_ = false;
  bool finishing_ = false;    // our FIN is on its way: nothing more is echoed
  bool shutting_down_ = false;
  bool shutdown_done_ = false;
  bool closing_ = false;
};

}  // namespace baton::daemon
