#pragma once
// A connection to batond's control socket: one request out, reply lines in,
// each read bounded by a deadline.

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "baton/handoff/result.h"
#include "baton/handoff/unique_fd.h"
#include "control_protocol.h"

namespace baton::cli {

class ControlClient {
 public:
  // The error is "cannot reach batond at PATH: <errno text>".
  static handoff::Result<ControlClient> connect(const std::string& path);

  handoff::Status send(const control::Request& request);
  // The next reply or event line; nullopt with *eof set when the daemon closed
  // the connection, or an error at the deadline / on a malformed line.
  handoff::Result<std::optional<nlohmann::json>> next(std::chrono::steady_clock::time_point deadline);

 private:
  explicit ControlClient(handoff::UniqueFd fd) : fd_(std::move(fd)) {}
  handoff::UniqueFd fd_;
  std::string buffer_;
};

}  // namespace baton::cli
