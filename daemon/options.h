#pragma once
// batond's command line. Parsing is separate from the daemon so the same
// arguments can be handed, unchanged, to the next generation.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "baton/handoff/listen_address.h"
#include "baton/handoff/result.h"

namespace baton::daemon {

// Supervisor mode (--exec): batond holds the listeners and runs an app on
// them instead of its echo service. Empty `command`: no app.
struct AppOptions {
  std::vector<std::string> command;
  // Readiness: READY=1 on NOTIFY_SOCKET (nullopt), or this long after start.
  std::optional<std::chrono::milliseconds> ready_delay;
  std::chrono::milliseconds ready_timeout{30000};
  // After READY, how long a new instance must live before the old one is stopped.
  std::chrono::milliseconds probation{2000};
  // After the stop signal, how long an old instance has before its group is killed.
  std::chrono::milliseconds drain_timeout{30000};
  int stop_signal = 15;  // SIGTERM
  bool operator==(const AppOptions&) const = default;
};

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
  // One line per event either way: words for people, or one JSON object for
  // tools (logging.h says what is in it).
  enum class LogFormat { Text, Json } log_format = LogFormat::Text;
  std::string binary;  // as given; resolved to an absolute path at start-up
  std::string control_path;  // the control socket (batonctl); see control::default_control_path()
  int backlog = 1024;
  // After an upgrade: wait for connections to close ("wait"), or hand them
  // to the new generation ("handoff").
  enum class DrainMode { Wait, Handoff } drain_mode = DrainMode::Wait;
  AppOptions app;
  // --metrics: where GET /metrics is answered (a TCP address), if anywhere.
  std::optional<handoff::ListenAddress> metrics;
  bool exec_mode() const { return !app.command.empty(); }
};

// "notify" or "delay=MS"; the error says what is wrong.
handoff::Result<std::optional<std::chrono::milliseconds>> parse_app_ready(const std::string& text);
// "TERM", "SIGTERM" or a number; the error says what is wrong.
handoff::Result<int> parse_signal(const std::string& text);
std::string signal_to_string(int signo);

inline constexpr const char* kDefaultListen = "tcp://127.0.0.1:7000";
// The control socket is handed over like any listener, under this name.
inline constexpr const char* kControlListenerName = "control";
// So is the metrics endpoint's socket.
inline constexpr const char* kMetricsListenerName = "metrics";
// batond's own listeners, never the echo service's or the app's.
inline bool is_batond_listener(const std::string& name) {
  return name == kControlListenerName || name == kMetricsListenerName;
}
// A metrics address must be TCP: Prometheus scrapes over TCP.
handoff::Result<handoff::ListenAddress> parse_metrics_address(const std::string& text);

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
