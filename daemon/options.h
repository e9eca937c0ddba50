#pragma once
// batond's command line. Parsing is separate from the daemon so the same
// arguments can be handed, unchanged, to the next generation.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "baton/handoff/listen_address.h"

namespace baton::daemon {

struct DaemonOptions {
  // Empty: none configured. A fresh start then serves every socket systemd
  // passed (under its FileDescriptorName), or kDefaultListen if none; a new
  // generation serves every listener its predecessor handed over.
  std::vector<handoff::ListenSpec> listeners;
  size_t max_connections = 10000;
  std::chrono::milliseconds drain_timeout{30000};
  std::chrono::milliseconds upgrade_timeout{10000};
  // After COMMIT and SERVING, how long the old generation stays ready to resume.
  std::chrono::milliseconds upgrade_probation{1000};
  std::string pid_file;
  std::string log_level = "info";
  std::string binary;  // as given; resolved to an absolute path at start-up
  std::string control_path;  // the control socket (batonctl); see control::default_control_path()
  int backlog = 1024;
  // After an upgrade: wait for connections to close ("wait"), or hand them
  // to the new generation ("handoff").
  enum class DrainMode { Wait, Handoff } drain_mode = DrainMode::Wait;
};

inline constexpr const char* kDefaultListen = "tcp://127.0.0.1:7000";
// The control socket is handed over like any listener, under this name.
inline constexpr const char* kControlListenerName = "control";

struct SettingsLayer;

struct ParseOutcome {
  std::optional<DaemonOptions> options;  // empty: exit with `exit_code`
  int exit_code = 0;                     // 0 after --help/--version/--check-config ok, 1 bad config, 2 usage
  std::string config_path;               // --config, re-read on reload
  std::shared_ptr<const SettingsLayer> command_line;  // what the flags said, re-applied on reload
};

// Prints help, version or the usage error itself.
ParseOutcome parse_options(int argc, char** argv);

}  // namespace baton::daemon
