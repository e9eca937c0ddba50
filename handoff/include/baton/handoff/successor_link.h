#pragma once
// SuccessorLink: the predecessor's end of the channel after COMMIT, the
// mirror of PredecessorLink. Predecessor runs the attempt (spawn, HELLO,
// listeners, READY, COMMIT, the probation) and, from COMMIT on, reads and
// writes the channel only through this object:
//        <- SERVING                (the probation window starts: the Predecessor's)
//        <- SUCCEEDED {pid}        a newer generation; its process is taken here, while it lives
//        <- STATE_UPDATE           (protocol 4) the successor's live state
//   DRAINING {reports} ->          which generations still drain
//   STATE_UPDATE ->                (protocol 4) ours, queued in order
//   CONNECTIONS + fds ->           after the probation (allow_connections), batches
//        <- CONNECTIONS_ACK
// Anything else, a malformed message or one carrying fds, ends the link: the
// successor may live on, it can no longer be told anything. The channel
// closing usually means the successor is exiting; what its exit means is the
// Predecessor's to decide (it owns the process).
//
// Lifetime: created by the Predecessor just before COMMIT (which it sends,
// send_commit), kept until the next attempt's COMMIT or the Predecessor's
// destruction (a ConnectionHandoff made on it stays valid until then; a
// Subscription may outlive it); closed when the upgrade fails, when the
// successor exits inside its probation superseded by a newer generation, on
// resume() and on Predecessor::close(). Runs in the caller's loop; no send blocks it.
// No callback runs after close().

#include <sys/types.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "baton/handoff/channel_link.h"
#include "baton/handoff/process_handle.h"
#include "baton/handoff/protocol.h"

namespace baton::handoff {

class SuccessorLink {
 public:
  // The owner's (the Predecessor's). Each may close() the link.
  struct Events {
    std::function<void()> serving;                       // SERVING (protocol 2 and later)
    std::function<void(pid_t pid)> succeeded;            // SUCCEEDED; 0: a version 1 one, naming none
    std::function<void(const StateUpdate& u)> state;     // the successor's STATE_UPDATE
    std::function<void(const std::string& why)> closed;  // before a subscriber's `lost`
  };
  // `version`: the protocol version agreed in HELLO.
  SuccessorLink(uv_loop_t* loop, pid_t pid, uint16_t version, Events events);
  SuccessorLink(const SuccessorLink&) = delete;
  SuccessorLink& operator=(const SuccessorLink&) = delete;
  // Starts reading `channel` (ChannelLink::release of the attempt's link).
  Status open(HandoffChannel channel);
  // No callback runs after this; safe from inside one.
  void close();
  bool open() const { return link_.is_open(); }
  // COMMIT, the link's first message: true once the kernel took it, false
  // if the channel is full (the new process is not reading).
  Result<bool> send_commit() { return link_.send_now(MessageType::Commit, {}); }
  pid_t pid() const { return pid_; }
  uint16_t version() const { return version_; }

  // What the connection hand-off hears (ConnectionHandoff): answers, the
  // link breaking, and room in a full channel.
  struct Handlers {
    std::function<void(const std::vector<ConnectionAck>& acks)> acks;
    // The link broke (the successor may live on and may serve what it got).
    std::function<void(const std::string& why)> lost;
    // The channel can take another batch after send_connections said full.
    std::function<void()> writable;
  };
  // Registers `handlers` until the Subscription is destroyed: a handler never
  // outlives its owner. One subscriber at a time: a new one replaces it, and
  // the replaced one's end then changes nothing.
  class Subscription {
   public:
    Subscription() = default;
    Subscription(Subscription&& o) noexcept = default;
    Subscription& operator=(Subscription&& o) noexcept;
    ~Subscription();

   private:
    friend class SuccessorLink;
    explicit Subscription(std::weak_ptr<Handlers> h) : handlers_(std::move(h)) {}
    std::weak_ptr<Handlers> handlers_;
  };
  [[nodiscard]] Subscription subscribe(Handlers handlers);

  // The probation passed: connections may go, and their ACKs may come (an
  // ACK before this breaks the link).
  void allow_connections() { connections_allowed_ = true; }
  // One batch: true once the kernel took it (the fds may close now, the
  // message holds its own references), false if the channel is full
  // (nothing sent: wait for `writable`), an error if the link is gone or
  // the probation has not passed.
  Result<bool> send_connections(const std::vector<ConnectionOffer>& batch);
  // Which generations still drain: this one first, then the older ones.
  Status report_draining(const std::vector<GenerationReport>& reports);
  // Protocol 4: the caller's live state, queued in order. Nothing is sent to
  // a successor below version 4 (there is nobody to tell).
  Status send_state_update(const std::string& key, const std::string& data);
  // Reads what the successor has already sent (its callbacks run now): before
  // its exit is judged, and for a timer that fires before the loop polls.
  void read_pending() { link_.read_pending(); }

  // The successor told us of a newer generation (SUCCEEDED, its own or relayed).
  bool superseded() const { return !newer_.empty() || newer_unnamed_; }
  // One of those still lives (a version 1 SUCCEEDED names none: assumed so).
  bool newer_generation_alive() const;

 private:
  void handle(Message& m);
  void take_succeeded(Message& m);
  // Ends the link on a bad message from the successor.
  void refuse(const std::string& what);
  void on_closed(const std::string& why);

  pid_t pid_;
  uint16_t version_;
  Events events_;
  std::shared_ptr<Handlers> handlers_ = std::make_shared<Handlers>();
  ChannelLink link_;
  bool closed_ = false;  // by close(): no callback any more
  bool connections_allowed_ = false;
  // Every newer generation the successor told us of, each taken while it
  // lived (no pid-reuse accident); `newer_unnamed_`: a version 1 SUCCEEDED.
  std::vector<ProcessHandle> newer_;
  bool newer_unnamed_ = false;
};

}  // namespace baton::handoff
