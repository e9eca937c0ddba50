#pragma once
// spdlog to stderr, one line per event, every line carrying pid and generation
// so that the logs of two generations interleaved in one journal stay apart.

#include <string>

namespace baton::daemon {

void setup_logging(const std::string& level, unsigned generation);

}  // namespace baton::daemon
