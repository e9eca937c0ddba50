// batonctl: talk to batond. Exit codes: 0 done, 1 the operation failed,
// 2 usage, 3 cannot reach the daemon.

#include <CLI/CLI.hpp>

#include <filesystem>
#include <iostream>

#include "commands.h"
#include "control_protocol.h"

namespace baton::cli {

int fail(int code, const std::string& message) {
  std::cerr << "batonctl: " << message << std::endl;
  return code;
}

}  // namespace baton::cli

int main(int argc, char** argv) {
  using namespace baton::cli;
  CLI::App app{"batonctl: control batond (status, upgrade, stop, reload, restart, metrics, history).\n"
               "Exit status: 0 done, 1 the operation failed, 2 usage error, 3 cannot reach the daemon."};
  app.require_subcommand(1);
  app.fallthrough();

  std::string control_path;
  std::string pid_file;
  app.add_option("--control", control_path,
                 "batond's control socket (default: " + baton::control::default_control_path() + ")");
  app.add_option("--pid-file", pid_file,
                 "find batond by its pid file and use signals instead of the control socket");

  bool json = false;
  auto* status = app.add_subcommand("status", "pid, generation, listeners, connections, upgrade state");
  status->add_flag("--json", json, "machine-readable output (stable; see docs/cli.md)");

  std::string binary;
  double timeout = 0;
  auto* upgrade = app.add_subcommand("upgrade", "replace batond by a new binary; exits 0 once it serves");
  upgrade->add_option("--binary", binary, "the binary to start (default: the one batond was started as)");
  auto* upgrade_timeout = upgrade->add_option("--timeout", timeout, "seconds the new binary has to become READY")
                              ->check(CLI::Range(0.001, 3600.0));

  double stop_timeout = 0;
  auto* stop = app.add_subcommand("stop", "graceful stop; returns once batond has exited");
  auto* stop_timeout_opt = stop->add_option("--timeout", stop_timeout, "drain deadline in seconds")
                               ->check(CLI::Range(0.0, 86400.0));

  auto* reload = app.add_subcommand("reload", "re-read the configuration");
  auto* restart = app.add_subcommand(
      "restart", "supervisor mode: replace the app by a new instance; exits 0 once it passed its probation");
  auto* metrics = app.add_subcommand("metrics", "the Prometheus metrics (text exposition format 0.0.4)");
  bool history_json = false;
  auto* history = app.add_subcommand("history", "the last 32 upgrades and app restarts, each step's time");
  history->add_flag("--json", history_json, "machine-readable output (see docs/cli.md)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kDone : kUsage;
  }

  std::optional<double> upgrade_t = upgrade_timeout->count() ? std::optional<double>(timeout) : std::nullopt;
  std::optional<double> stop_t = stop_timeout_opt->count() ? std::optional<double>(stop_timeout) : std::nullopt;
  Target target{control_path, pid_file};

  if (target.use_signals()) {
    if (status->parsed()) return status_with_signals(pid_file, json);
    if (upgrade->parsed()) {
      if (!binary.empty()) return fail(kUsage, "--binary needs the control socket; with --pid-file the daemon starts its own binary");
      return upgrade_with_signals(pid_file, upgrade_t);
    }
    if (stop->parsed()) return stop_with_signals(pid_file, stop_t);
    if (restart->parsed()) return fail(kFailed, "restart needs the control socket (or send batond SIGHUP)");
    if (metrics->parsed() || history->parsed()) return fail(kFailed, "metrics and history need the control socket");
    return fail(kFailed, "reload needs the control socket");
  }

  if (target.control_path.empty()) target.control_path = baton::control::default_control_path();
  if (status->parsed()) return status_over_control(target.control_path, json);
  if (upgrade->parsed()) {
    // The daemon resolves nothing relative to its own directory: make it absolute here.
    std::string abs = binary.empty() ? binary : std::filesystem::absolute(binary).lexically_normal().string();
    return upgrade_over_control(target.control_path, abs, upgrade_t);
  }
  if (stop->parsed()) return stop_over_control(target.control_path, stop_t);
  if (reload->parsed()) return reload_over_control(target.control_path);
  if (restart->parsed()) return restart_over_control(target.control_path);
  if (metrics->parsed()) return metrics_over_control(target.control_path);
  if (history->parsed()) return history_over_control(target.control_path, history_json);
  return kUsage;
}
