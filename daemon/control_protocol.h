#pragma once
// The control protocol between batonctl and batond: newline-delimited JSON
// over a Unix stream socket, versioned. Shared by both sides (it is the
// contract), pure functions only, so it is unit-tested and fuzzed without
// sockets. docs/cli.md is the prose.
//
//   request:   {"v":1,"cmd":"status"}
//              {"v":1,"cmd":"upgrade","binary":"/abs/path","timeout":10}
//              {"v":1,"cmd":"stop","timeout":5}
//              {"v":1,"cmd":"reload"}
//              {"v":1,"cmd":"restart"}                      (supervisor mode: the app)
//              {"v":1,"cmd":"metrics"}                      (reply: "text", the Prometheus exposition)
//              {"v":1,"cmd":"history"}                      (reply: "records", the flight recorder)
//   progress:  {"v":1,"event":"spawned","pid":123}          (upgrade and restart)
//   reply:     {"v":1,"ok":true,...} or {"v":1,"ok":false,"error":"..."}

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

#include "baton/handoff/result.h"

namespace baton::control {

inline constexpr int kProtocolVersion = 1;
inline constexpr size_t kMaxLine = 64 * 1024;

enum class Command { Status, Upgrade, Stop, Reload, Restart, Metrics, History };
const char* to_string(Command c);

struct Request {
  Command command = Command::Status;
  std::string binary;                    // upgrade: absolute path, or empty for the default
  std::optional<double> timeout_s;       // upgrade: READY deadline; stop: drain deadline
};

// One request line (without its newline). The error says what is wrong:
// "invalid JSON: ...", "unknown command 'x'", "unsupported protocol version 2".
handoff::Result<Request> parse_request(std::string_view line);
std::string encode_request(const Request& r);

nlohmann::json ok_reply();
nlohmann::json error_reply(const std::string& message);
nlohmann::json event(const std::string& name);
// One JSON value as a line: compact, newline-terminated.
std::string to_line(const nlohmann::json& j);

// Where batond listens for control connections when --control is not given:
// $XDG_RUNTIME_DIR/baton/control.sock, else /run/baton/control.sock for root,
// else /tmp/baton-<uid>/control.sock.
std::string default_control_path();

}  // namespace baton::control
