#pragma once
// Settings come in layers: built-in defaults, then the config file, then the
// command line, each overriding the one before. A layer holds only what its
// source said; merge() turns the layers into the options the daemon runs on.
// Each source validates its own values, so that an error can name where it
// was written (a flag, or file:line and key).

#include <optional>
#include <string>
#include <vector>

#include "baton/handoff/listen_address.h"
#include "baton/handoff/result.h"
#include "options.h"

namespace baton::daemon {

struct SettingsLayer {
  std::optional<std::vector<handoff::ListenSpec>> listeners;  // replaces, never merges with, a lower layer's
  std::optional<size_t> max_connections;
  std::optional<std::chrono::milliseconds> drain_timeout;
  std::optional<std::chrono::milliseconds> upgrade_timeout;
  std::optional<std::chrono::milliseconds> upgrade_probation;
  std::optional<DaemonOptions::DrainMode> drain_mode;
  std::optional<std::string> pid_file;
  std::optional<std::string> log_level;
  std::optional<DaemonOptions::LogFormat> log_format;
  std::optional<std::string> binary;
  std::optional<std::string> control_path;
  std::optional<int> backlog;
  std::optional<std::vector<std::string>> app_command;
  std::optional<std::optional<std::chrono::milliseconds>> app_ready_delay;
  std::optional<std::chrono::milliseconds> app_ready_timeout;
  std::optional<std::chrono::milliseconds> app_probation;
  std::optional<std::chrono::milliseconds> app_drain_timeout;
  std::optional<int> app_stop_signal;
  std::optional<handoff::ListenAddress> metrics;
};

// Defaults, overridden by `file`, overridden by `command_line`.
DaemonOptions merge(const SettingsLayer& file, const SettingsLayer& command_line);

// Checks that hold whatever the source: listener names unique and not the
// reserved "control" or "metrics". `where` prefixes the error ("--listen", "batond.toml").
handoff::Status check_listeners(const std::vector<handoff::ListenSpec>& listeners, const std::string& where);

bool valid_log_level(const std::string& level);
// "text" or "json"; nullopt for anything else.
std::optional<DaemonOptions::LogFormat> parse_log_format(const std::string& text);

}  // namespace baton::daemon
