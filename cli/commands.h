#pragma once
// What each batonctl subcommand does, over the control socket or, with
// --pid-file, with signals. Each returns the process exit status.

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace baton::cli {

enum ExitCode { kDone = 0, kFailed = 1, kUsage = 2, kUnreachable = 3 };

// How to find the daemon: the control socket, or (when only --pid-file is
// given) the pid file and signals.
struct Target {
  std::string control_path;
  std::string pid_file;
  bool use_signals() const { return !pid_file.empty() && control_path.empty(); }
};

// One line on stderr, "batonctl: ...", and the code to exit with.
int fail(int code, const std::string& message);

int status_over_control(const std::string& control_path, bool json);
int upgrade_over_control(const std::string& control_path, const std::string& binary, std::optional<double> timeout_s);
int stop_over_control(const std::string& control_path, std::optional<double> timeout_s);
int reload_over_control(const std::string& control_path);
int restart_over_control(const std::string& control_path);
int metrics_over_control(const std::string& control_path);
int history_over_control(const std::string& control_path, bool json);

int status_with_signals(const std::string& pid_file, bool json);
int upgrade_with_signals(const std::string& pid_file, std::optional<double> timeout_s);
int stop_with_signals(const std::string& pid_file, std::optional<double> timeout_s);

// The human form of a status reply: a short aligned block.
std::string format_status(const nlohmann::json& status);
// The human form of the flight recorder: per record a header line, then one
// line per event with its offset from the request.
std::string format_history(const nlohmann::json& records);

// True while `pid` names a live (not zombie) process.
bool pid_alive(int pid);

}  // namespace baton::cli
