// The control protocol's request parser and encoder (daemon/control_protocol.h):
// the contract between batond and batonctl, tested without sockets.

#include "control_protocol.h"

#include <gtest/gtest.h>

namespace baton::control {
namespace {

TEST(ControlProtocol, RequestsRoundTrip) {
  for (const Request& r : {Request{Command::Status, {}, {}}, Request{Command::Upgrade, "/usr/local/bin/batond", 2.5},
                           Request{Command::Stop, {}, 0.0}, Request{Command::Reload, {}, {}}}) {
    std::string line = encode_request(r);
    ASSERT_EQ(line.back(), '\n');
    line.pop_back();
    auto back = parse_request(line);
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(back->command, r.command);
    EXPECT_EQ(back->binary, r.binary);
    EXPECT_EQ(back->timeout_s, r.timeout_s);
  }
}

TEST(ControlProtocol, VersionIsOptionalButOnlyOneIsSpoken) {
  EXPECT_TRUE(parse_request(R"({"cmd":"status"})").ok());
  auto r = parse_request(R"({"v":2,"cmd":"status"})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "unsupported protocol version 2, this batond speaks 1");
}

TEST(ControlProtocol, BadRequestsSayWhatIsWrong) {
  struct Case {
    const char* line;
    const char* error;
  };
  for (const auto& c : {Case{"nonsense", "invalid JSON"},
                        Case{"[1]", "a request must be a JSON object"},
                        Case{R"({"v":1})", "missing 'cmd' (a string)"},
                        Case{R"({"cmd":"dance"})", "unknown command 'dance'"},
                        Case{R"({"cmd":"upgrade","binary":"relative/batond"})", "'binary' must be an absolute path"},
                        Case{R"({"cmd":"status","binary":"/x"})", "'binary' is only for upgrade"},
                        Case{R"({"cmd":"stop","timeout":-1})", "'timeout' must be a number of seconds between 0 and 86400"},
                        Case{R"({"cmd":"stop","timeout":"soon"})", "'timeout' must be a number of seconds between 0 and 86400"},
                        Case{R"({"v":"1","cmd":"status"})", "'v' must be an integer"}}) {
    auto r = parse_request(c.line);
    ASSERT_FALSE(r.ok()) << c.line;
    EXPECT_EQ(r.error().message, c.error) << c.line;
  }
}

TEST(ControlProtocol, RepliesAreOneLineEach) {
  auto line = to_line(error_reply("bad\nthing"));
  EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
  EXPECT_EQ(nlohmann::json::parse(line)["error"], "bad\nthing");
  EXPECT_EQ(nlohmann::json::parse(to_line(ok_reply()))["ok"], true);
  EXPECT_EQ(nlohmann::json::parse(to_line(event("spawned")))["event"], "spawned");
}

}  // namespace
}  // namespace baton::control
