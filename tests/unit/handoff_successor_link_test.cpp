// SuccessorLink: the predecessor's end after COMMIT, in a real libuv loop.
// The test plays the successor on the other end of a SOCK_SEQPACKET pair.

#include "baton/handoff/successor_link.h"

#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "baton/handoff/channel.h"
#include "baton/handoff/protocol.h"
#include "unit_util.h"

namespace baton::handoff {
namespace {

using namespace std::chrono_literals;

using Loop = unit::TestLoop;

// What the owner (the Predecessor) and a subscriber (the hand-off) heard.
struct Heard {
  int serving = 0;
  std::vector<pid_t> succeeded;
  std::vector<StateUpdate> updates;
  std::vector<std::string> closed;  // the owner's
  std::vector<std::string> lost;    // the subscriber's
  std::vector<ConnectionAck> acks;
};

struct Linked {
  Heard heard;
  HandoffChannel peer{UniqueFd{}};  // the successor's end
  std::unique_ptr<SuccessorLink> link;
  // The owner's `closed` runs this first (say, close() as a failed probation does).
  std::function<void()> on_closed;
};

std::unique_ptr<Linked> make_link(uv_loop_t* loop, uint16_t version = kProtocolVersion) {
  auto [ours, peer] = unit::channel_pair();
  auto l = std::make_unique<Linked>();
  l->peer = std::move(peer);
  auto* raw = l.get();
  l->link = std::make_unique<SuccessorLink>(
      loop, ::getpid(), version,
      SuccessorLink::Events{
          .serving = [raw] { ++raw->heard.serving; },
          .succeeded = [raw](pid_t pid) { raw->heard.succeeded.push_back(pid); },
          .state = [raw](const StateUpdate& u) { raw->heard.updates.push_back(u); },
          .closed =
              [raw](const std::string& why) {
                raw->heard.closed.push_back(why);
                if (raw->on_closed) raw->on_closed();
              },
      });
  if (auto st = l->link->open(std::move(ours)); !st) throw std::runtime_error(st.error().message);
  return l;
}

SuccessorLink::Subscription subscribe(Linked& l) {
  return l.link->subscribe({
      [&l](const std::vector<ConnectionAck>& acks) { l.heard.acks.insert(l.heard.acks.end(), acks.begin(), acks.end()); },
      [&l](const std::string& why) { l.heard.lost.push_back(why); },
      [] {},
  });
}

TEST(SuccessorLink, HearsServingSucceededAndStateFromTheSuccessor) {
  Loop loop;
  auto l = make_link(&loop.loop);
  ASSERT_TRUE(l->peer.send(MessageType::Serving, {}).ok());
  // Our own pid: a newer generation that certainly lives.
  ASSERT_TRUE(l->peer.send(MessageType::Succeeded, encode(Succeeded{static_cast<uint32_t>(::getpid())})).ok());
  ASSERT_TRUE(l->peer.send(MessageType::StateUpdate, encode_state("metrics", "1")).ok());
  loop.run_until([&] { return !l->heard.updates.empty(); });
  EXPECT_EQ(l->heard.serving, 1);
  EXPECT_EQ(l->heard.succeeded, std::vector<pid_t>{::getpid()});
  EXPECT_EQ(l->heard.updates, (std::vector<StateUpdate>{{"metrics", "1"}}));
  EXPECT_TRUE(l->link->superseded());
  EXPECT_TRUE(l->link->newer_generation_alive());
  EXPECT_TRUE(l->heard.closed.empty());
  EXPECT_TRUE(l->link->open());
}

TEST(SuccessorLink, AnAckBeforeTheProbationPassedEndsTheLinkAndTheSubscriberHearsIt) {
  Loop loop;
  auto l = make_link(&loop.loop);
  auto sub = subscribe(*l);
  ASSERT_TRUE(l->peer.send(MessageType::ConnectionsAck, encode(std::vector<ConnectionAck>{{1, true}})).ok());
  loop.run_until([&] { return !l->heard.lost.empty(); });
  EXPECT_EQ(l->heard.closed, std::vector<std::string>{"unexpected CONNECTIONS_ACK from the successor in its probation"});
  EXPECT_EQ(l->heard.lost, l->heard.closed);
  EXPECT_TRUE(l->heard.acks.empty());
  EXPECT_FALSE(l->link->open());
}

TEST(SuccessorLink, ConnectionsGoOnlyOnceTheProbationPassedAndTheirAcksCome) {
  Loop loop;
  auto l = make_link(&loop.loop);
  auto sub = subscribe(*l);
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  UniqueFd a(fds[0]), b(fds[1]);
  const std::vector<ConnectionOffer> batch{{7, ConnectionKind::Unix, a.get()}};
  EXPECT_FALSE(l->link->send_connections(batch).ok());
  l->link->allow_connections();
  auto sent = l->link->send_connections(batch);
  ASSERT_TRUE(sent.ok()) << sent.error().message;
  EXPECT_TRUE(sent.value());
  auto got = l->peer.receive(5s);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->type, MessageType::Connections);
  EXPECT_EQ(got->fds.size(), 1u);
  ASSERT_TRUE(l->peer.send(MessageType::ConnectionsAck, encode(std::vector<ConnectionAck>{{7, true}})).ok());
  loop.run_until([&] { return !l->heard.acks.empty(); });
  EXPECT_EQ(l->heard.acks, (std::vector<ConnectionAck>{{7, true}}));
  EXPECT_TRUE(l->heard.closed.empty());
}

TEST(SuccessorLink, AnOwnerThatClosesItWhenItClosesSilencesTheSubscriber) {
  Loop loop;
  auto l = make_link(&loop.loop);
  auto sub = subscribe(*l);
  l->on_closed = [&] { l->link->close(); };  // a failed probation does this
  l->peer.close();
  loop.run_until([&] { return !l->heard.closed.empty(); });
  EXPECT_EQ(l->heard.closed.size(), 1u);
  EXPECT_TRUE(l->heard.lost.empty());
}

TEST(SuccessorLink, ASubscriptionMayOutliveTheLinkAndAnEndedOneHearsNothing) {
  Loop loop;
  auto l = make_link(&loop.loop);
  {
    auto ended = subscribe(*l);
  }
  l->peer.close();
  loop.run_until([&] { return !l->heard.closed.empty(); });
  EXPECT_TRUE(l->heard.lost.empty());
  auto sub = subscribe(*l);
  l->link.reset();  // destroyed first: the subscription's end touches nothing (ASan would say)
}

TEST(SuccessorLink, AReplacedSubscriptionsEndLeavesTheNewOneHearing) {
  Loop loop;
  auto l = make_link(&loop.loop);
  std::optional<SuccessorLink::Subscription> first = subscribe(*l);
  auto second = subscribe(*l);
  first.reset();
  l->peer.close();
  loop.run_until([&] { return !l->heard.lost.empty(); });
  EXPECT_EQ(l->heard.lost.size(), 1u);  // the second still hears: ending the first cleared nothing of it
}

TEST(SuccessorLink, NothingIsSentToAVersionThreeSuccessorAsStateAndDrainReportsGo) {
  Loop loop;
  auto v3 = make_link(&loop.loop, 3);
  EXPECT_TRUE(v3->link->send_state_update("metrics", "1").ok());
  ASSERT_TRUE(v3->link->report_draining({{static_cast<uint32_t>(::getpid()), 1, 0, 0}}).ok());
  auto got = v3->peer.receive(5s);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->type, MessageType::Draining);  // the state update was not sent
}

}  // namespace
}  // namespace baton::handoff
