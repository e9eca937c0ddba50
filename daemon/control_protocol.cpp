#include "control_protocol.h"

#include <unistd.h>

#include <cstdlib>

namespace baton::control {

const char* to_string(Command c) {
  switch (c) {
    case Command::Status: return "status";
    case Command::Upgrade: return "upgrade";
    case Command::Stop: return "stop";
    case Command::Reload: return "reload";
    case Command::Restart: return "restart";
    case Command::Metrics: return "metrics";
    case Command::History: return "history";
  }
  return "?";
}

handoff::Result<Request> parse_request(std::string_view line) {
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return handoff::Error{"invalid JSON"};
  if (!j.is_object()) return handoff::Error{"a request must be a JSON object"};
  if (j.contains("v")) {
    if (!j["v"].is_number_integer()) return handoff::Error{"'v' must be an integer"};
    if (j["v"].get<long long>() != kProtocolVersion)
      return handoff::Error{"unsupported protocol version " + j["v"].dump() + ", this batond speaks " +
                            std::to_string(kProtocolVersion)};
  }
  if (!j.contains("cmd") || !j["cmd"].is_string()) return handoff::Error{"missing 'cmd' (a string)"};
  const auto cmd = j["cmd"].get<std::string>();
  Request r;
  if (cmd == "status") r.command = Command::Status;
  else if (cmd == "upgrade") r.command = Command::Upgrade;
  else if (cmd == "stop") r.command = Command::Stop;
  else if (cmd == "reload") r.command = Command::Reload;
  else if (cmd == "restart") r.command = Command::Restart;
  else if (cmd == "metrics") r.command = Command::Metrics;
  else if (cmd == "history") r.command = Command::History;
  else return handoff::Error{"unknown command '" + cmd + "'"};

  if (j.contains("timeout")) {
    if (!j["timeout"].is_number() || j["timeout"].get<double>() < 0 || j["timeout"].get<double>() > 86400)
      return handoff::Error{"'timeout' must be a number of seconds between 0 and 86400"};
    r.timeout_s = j["timeout"].get<double>();
  }
  if (j.contains("binary")) {
    if (r.command != Command::Upgrade) return handoff::Error{"'binary' is only for upgrade"};
    if (!j["binary"].is_string()) return handoff::Error{"'binary' must be a string"};
    r.binary = j["binary"].get<std::string>();
    if (!r.binary.starts_with("/")) return handoff::Error{"'binary' must be an absolute path"};
  }
  return r;
}

std::string encode_request(const Request& r) {
  nlohmann::json j{{"v", kProtocolVersion}, {"cmd", to_string(r.command)}};
  if (!r.binary.empty()) j["binary"] = r.binary;
  if (r.timeout_s) j["timeout"] = *r.timeout_s;
  return to_line(j);
}

nlohmann::json ok_reply() { return {{"v", kProtocolVersion}, {"ok", true}}; }

nlohmann::json error_reply(const std::string& message) {
  return {{"v", kProtocolVersion}, {"ok", false}, {"error", message}};
}

nlohmann::json event(const std::string& name) { return {{"v", kProtocolVersion}, {"event", name}}; }

std::string to_line(const nlohmann::json& j) {
  // Replace invalid UTF-8 rather than throw: a path with odd bytes must not
  // take the daemon down.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string default_control_path() {
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg && *xdg) return std::string(xdg) + "/baton/control.sock";
  if (::geteuid() == 0) return "/run/baton/control.sock";
  return "/tmp/baton-" + std::to_string(::geteuid()) + "/control.sock";
}

}  // namespace baton::control
