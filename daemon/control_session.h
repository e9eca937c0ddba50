#pragma once
// One connection on the control socket: reads request lines, hands each
// parsed request to the daemon, writes reply lines back. A line that is too
// long, not JSON, or not a known command gets an error reply and the
// connection is closed; nothing else in the daemon notices.
//
// Like EchoConnection, a session owns itself until libuv's close callback.

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>

#include "baton/handoff/unique_fd.h"
#include "control_protocol.h"

namespace baton::daemon {

class ControlSession;

// Every open control session by id: an upgrade remembers the id of the
// session that asked for it, and finds it again (or not, if it has gone).
class ControlSessions {
 public:
  ControlSession* find(uint64_t id) const;
  void add(ControlSession* s);
  void remove(ControlSession* s);
  // Flushes what each session was sent, then closes it.
  void finish_all();
  size_t size() const { return open_.size(); }

 private:
  std::unordered_map<uint64_t, ControlSession*> open_;
};

class ControlSession {
 public:
  using Handler = std::function<void(ControlSession& session, const control::Request& request)>;

  // Starts reading from an accepted (and already authorised) connection.
  static void start(uv_loop_t* loop, handoff::UniqueFd fd, Handler handler, ControlSessions& sessions);

  uint64_t id() const { return id_; }
  void send(const nlohmann::json& message);
  // Sends what is queued, then closes (FIN after the last byte).
  void finish();

 private:
  ControlSession(Handler handler, ControlSessions& sessions);
  static void on_alloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_shutdown(uv_shutdown_t* req, int status);
  static void on_closed(uv_handle_t* h);
  void take_lines();
  void fail(const std::string& error);
  void close();

  uv_pipe_t pipe_;
  uv_shutdown_t shutdown_req_;
  Handler handler_;
  ControlSessions& sessions_;
  std::string input_;
  char read_chunk_[4096];
  uint64_t id_;
  bool finishing_ = false;
  bool closing_ = false;
};

}  // namespace baton::daemon
