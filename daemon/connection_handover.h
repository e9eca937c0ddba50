#pragma once
// ConnectionHandover: with `drain = handoff`, after READY the old process
// gives its open connections to the new one instead of waiting for them.
//
// For each connection: stop reading, let what it owes the client flush
// (bounded by `flush_bound`), send its fd over the channel in
// batches, and close our copy only when the successor acknowledges it. A
// connection that will not flush, that the successor refuses, or that is in
// flight when the link breaks is served here again and drained the ordinary
// way: a failed hand-off never closes a connection.

#include <uv.h>

#include <chrono>
#include <string>
#include <unordered_map>
#include <vector>

#include "baton/handoff/predecessor.h"
#include "baton/handoff/unique_fd.h"
#include "baton/handoff/uv_handle.h"
#include "connection_registry.h"
#include "echo_connection.h"

namespace baton::daemon {

class ConnectionHandover final : public HandoverObserver {
 public:
  ConnectionHandover(uv_loop_t* loop, ConnectionRegistry& registry, handoff::Predecessor& predecessor,
                     std::chrono::milliseconds flush_bound);
  ~ConnectionHandover();
  ConnectionHandover(const ConnectionHandover&) = delete;
  ConnectionHandover& operator=(const ConnectionHandover&) = delete;

  void start();

  void flushed(EchoConnection& c) override;
  void gone(EchoConnection& c) override;

 private:
  static void on_send_tick(uv_timer_t* t);
  static void on_flush_deadline(uv_timer_t* t);
  void send_ready();
  void on_acks(const std::vector<handoff::ConnectionAck>& acks);
  void keep_all(const std::string& why);
  void keep(EchoConnection& c);
  void log_if_settled();

  uv_loop_t* loop_;
  ConnectionRegistry& registry_;
  handoff::Predecessor& predecessor_;
  std::chrono::milliseconds flush_bound_;
  std::unordered_map<uint64_t, EchoConnection*> flushing_;  // stopped reading, still writing
  std::vector<EchoConnection*> ready_;                      // flushed, not yet sent
  // Sent, not yet answered. No duplicate fd is kept: once sendmsg returns, the
  // message in the channel holds its own reference to each socket, so our
  // copy may close meanwhile without the socket dying; and 10 000 connections
  // in flight must not need 20 000 fds. nullptr: closed here since.
  std::unordered_map<uint64_t, EchoConnection*> in_flight_;
  handoff::UvHandle<uv_timer_t> send_tick_;
  handoff::UvHandle<uv_timer_t> flush_deadline_;
  std::chrono::steady_clock::time_point started_;
  size_t offered_ = 0, handed_over_ = 0, kept_ = 0;
  bool link_lost_ = false;
  bool reported_ = false;
};

}  // namespace baton::daemon
