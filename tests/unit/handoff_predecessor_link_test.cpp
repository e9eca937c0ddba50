// PredecessorLink: the successor's end after COMMIT, in a real libuv loop.
// The test plays the predecessor on the other end of a SOCK_SEQPACKET pair.
// Here: STATE_UPDATE (protocol 4), which carries the caller's live state.

#include "baton/handoff/predecessor_link.h"

#include <uv.h>

#include <chrono>
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

struct Linked {
  std::vector<StateUpdate> updates;
  std::optional<std::string> closed;
  HandoffChannel peer{UniqueFd{}};  // the predecessor's end
  std::unique_ptr<PredecessorLink> link;
};

std::unique_ptr<Linked> make_link(uv_loop_t* loop, uint16_t version) {
  auto [ours, peer] = unit::channel_pair();
  auto l = std::make_unique<Linked>();
  l->peer = std::move(peer);
  auto* raw = l.get();
  l->link = std::make_unique<PredecessorLink>(
      loop, std::move(ours), version, [](const std::vector<GenerationReport>&) {},
      [](const ConnectionEntry&, UniqueFd) { return false; }, [raw](const std::string& why) { raw->closed = why; });
  l->link->on_state_update([raw](const StateUpdate& u) { raw->updates.push_back(u); });
  return l;
}

TEST(PredecessorLinkStateUpdate, ReachesTheHandlerInOrder) {
  Loop loop;
  auto l = make_link(&loop.loop, 4);
  ASSERT_TRUE(l->peer.send(MessageType::StateUpdate, encode_state("metrics", "1")).ok());
  ASSERT_TRUE(l->peer.send(MessageType::StateUpdate, encode_state("metrics", "2")).ok());
  loop.run_until([&] { return l->updates.size() == 2; });
  EXPECT_EQ(l->updates, (std::vector<StateUpdate>{{"metrics", "1"}, {"metrics", "2"}}));
  EXPECT_FALSE(l->closed);
  EXPECT_TRUE(l->link->open());
}

TEST(PredecessorLinkStateUpdate, FromAVersionThreePredecessorBreaksTheLink) {
  Loop loop;
  auto l = make_link(&loop.loop, 3);
  ASSERT_TRUE(l->peer.send(MessageType::StateUpdate, encode_state("metrics", "1")).ok());
  loop.run_until([&] { return l->closed.has_value(); });
  EXPECT_EQ(l->closed.value_or(""), "unexpected STATE_UPDATE after COMMIT");
  EXPECT_TRUE(l->updates.empty());
  EXPECT_TRUE(l->link->broken());
}

TEST(PredecessorLinkStateUpdate, AMalformedOneBreaksTheLink) {
  Loop loop;
  auto l = make_link(&loop.loop, 4);
  ASSERT_TRUE(l->peer.send(MessageType::StateUpdate, encode_state("", "1")).ok());
  loop.run_until([&] { return l->closed.has_value(); });
  EXPECT_EQ(l->closed.value_or(""), "bad STATE_UPDATE: STATE: empty key");
  EXPECT_TRUE(l->updates.empty());
}

}  // namespace
}  // namespace baton::handoff
