#pragma once
// baton-load's command line.

#include <string>
#include <variant>

#include "baton/handoff/listen_address.h"

namespace baton::load {

struct LoadOptions {
  std::string target_text;          // as given, for the report
  handoff::ListenAddress target;
  int connections = 8;              // persistent connections
  size_t message_size = 512;
  int pipeline = 1;                 // messages in flight per persistent connection
  double rate = 0;                  // messages/s per persistent connection; 0 = uncapped
  double churn_rate = 0;            // short connections started per second
  double duration_s = 10;
  int timeout_ms = 5000;
  int interval_ms = 1000;           // length of a timeline interval
  std::string report_path;
  bool quiet = false;
};

// Exit statuses, as documented in --help.
constexpr int kExitOk = 0;
constexpr int kExitFailures = 1;
constexpr int kExitUsage = 2;

// The options, or the exit status to leave with (--help: 0, a usage error: 2,
// after printing why on stderr).
std::variant<LoadOptions, int> parse_load_options(int argc, char** argv);

}  // namespace baton::load
