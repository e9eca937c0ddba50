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
#include "baton/handoff/connection_handoff.h"
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

class EchoConnection final : public handoff::HandoffConnection {
 public:
  // The hand-off's own kind: a connection travels to the next generation as it is.
  using Kind = handoff::ConnectionKind;
  enum class EndReason { Client, Deadline, Forced, HandedOver };

  // Adopts an accepted socket into the loop and starts echoing. Returns null
  // (and the fd is closed) if libuv refuses it. The registry owns it.
  static EchoConnection* start(uv_loop_t* loop, handoff::UniqueFd fd, Kind kind, ConnectionRegistry& registry,
                    SharedReadBuffer& buffer, DrainCounts& counts, WaterMarks marks);

  // Drain deadline: echo nothing more, flush what is owed, send FIN, then
  // close when the client closes (the drain's grace timer closes the rest).
  void finish();
  // Closes at once; pending writes are dropped.
  void close_now(EndReason why);

  // Connection hand-off (see handoff::HandoffConnection): every byte read
  // has been echoed once the pending writes are out, so "flushed" is "no
  // write pending".
  int handoff_fd() const override;
  bool begin_handoff(handoff::ConnectionHandoff& handoff) override;
  void cancel_handoff() override;
  void close_handed_off() override;

 private:
  // Where the connection is in its life. Reading is a separate fact
  // (`reading_`): backpressure pauses it in Open, and it goes on in
  // Finishing so that the client's late bytes are dropped, not reset.
  enum class State {
    Open,            // echoing
    HandingOff,      // not reading; handed to `handoff_` once nothing is owed
    ClientFinished,  // the client sent FIN: what is owed, then our FIN (shutdown in flight), then close
    Finishing,       // drain deadline: our FIN in flight, echoing nothing, reading and dropping
    FinSent,         // drain deadline: our FIN is out; close at the client's FIN (or the drain's grace)
    Closing,         // uv_close called
  };

  EchoConnection(ConnectionRegistry& registry, SharedReadBuffer& buffer, DrainCounts& counts, WaterMarks marks,
                 Kind kind);

  static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_shutdown(uv_shutdown_t* req, int status);
  static void on_closed(uv_handle_t* h);

  void echo(const char* data, size_t len);
  void peer_finished();
  void half_close(State next);
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
  State state_ = State::Open;
  handoff::ConnectionHandoff* handoff_ = nullptr;  // in HandingOff, and until the close if it ends there
  EndReason end_reason_ = EndReason::Client;
  Kind kind_;
  bool reading_ = false;
};

}  // namespace baton::daemon
