#include "options.h"

#include <CLI/CLI.hpp>

#include <iostream>

#include "config_file.h"
#include "control_protocol.h"
#include "settings.h"
#include "version.h"

namespace baton::daemon {
namespace {

std::chrono::milliseconds seconds_to_ms(double s) {
  return std::chrono::milliseconds(static_cast<long long>(s * 1000.0 + 0.5));
}

int usage_error(const std::string& message) {
  std::cerr << "batond: " << message << "\n";
  return 2;
}

}  // namespace

ParseOutcome parse_options(int argc, char** argv) {
  CLI::App app{"batond: an echo daemon that is replaced by a new binary without losing a connection, or (--exec) "
               "the supervisor that restarts an app on its listeners without refusing a connection.\n"
               "SIGTERM/SIGINT: graceful stop (a second one closes everything). SIGUSR2: upgrade batond. "
               "SIGHUP: re-read --config, and with --exec restart the app.\nFlags override the config file."};
  app.set_version_flag("--version", std::string("batond ") + kVersion);

  std::vector<std::string> listen;
  double drain_timeout = 30, upgrade_timeout = 10, upgrade_probation = 1;
  size_t max_connections = 10000;
  int backlog = 1024;
  std::string pid_file, log_level = "info", log_format = "text", binary, drain_mode = "wait", config, check_config;
  std::string control_path = control::default_control_path();

  auto* o_listen = app.add_option("--listen", listen,
                                  "[NAME=]ADDR to listen on, repeatable; ADDR is tcp://HOST:PORT, tcp://[HOST]:PORT "
                                  "or unix:PATH (port 0 picks a free port; default " +
                                      std::string(kDefaultListen) + ")");
  auto* o_max = app.add_option("--max-connections", max_connections,
                               "connections served at once; more are closed at accept")
                    ->capture_default_str()
                    ->check(CLI::Range(size_t{1}, size_t{10'000'000}));
  auto* o_drain_timeout =
      app.add_option("--drain-timeout", drain_timeout,
                     "seconds to wait for open connections on stop or after an upgrade before closing them")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 86400.0));
  auto* o_upgrade_timeout = app.add_option("--upgrade-timeout", upgrade_timeout,
                                           "seconds the new binary has to report READY")
                                ->capture_default_str()
                                ->check(CLI::Range(0.001, 3600.0));
  auto* o_upgrade_probation =
      app.add_option("--upgrade-probation", upgrade_probation,
                     "seconds the old generation stays ready to resume after the new one reports serving")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 3600.0));
  auto* o_pid = app.add_option("--pid-file", pid_file, "write the serving process's pid here (atomically)");
  auto* o_log = app.add_option("--log-level", log_level, "trace, debug, info, warn, error or off")
                    ->capture_default_str()
                    ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  auto* o_log_format = app.add_option("--log-format", log_format,
                                      "text (for people) or json (one object a line, for tools); microsecond timestamps")
                           ->capture_default_str()
                           ->check(CLI::IsMember({"text", "json"}));
  auto* o_binary = app.add_option(
      "--binary", binary, "binary to start on upgrade (default: this one's path as started, resolved once at start-up)");
  auto* o_backlog =
      app.add_option("--backlog", backlog, "listen(2) backlog")->capture_default_str()->check(CLI::Range(1, 1'000'000));
  auto* o_drain = app.add_option("--drain", drain_mode,
                                 "after an upgrade: 'wait' for open connections to close, or 'handoff' them to the "
                                 "new generation")
                      ->capture_default_str()
                      ->check(CLI::IsMember({"wait", "handoff"}));
  auto* o_control = app.add_option("--control", control_path,
                                   "control socket for batonctl (mode 0600; default $XDG_RUNTIME_DIR/baton/control.sock, "
                                   "else /run/baton/control.sock as root, else /tmp/baton-UID/control.sock)")
                        ->capture_default_str();
  std::string metrics;
  auto* o_metrics = app.add_option("--metrics", metrics,
                                   "answer Prometheus scrapes (GET /metrics) on this TCP address, such as "
                                   "tcp://127.0.0.1:9100; handed over at every upgrade like the listeners");
  bool exec = false;
  std::vector<std::string> command;
  double app_ready_timeout = 30, app_probation = 2, app_drain_timeout = 30;
  std::string app_ready = "notify", app_stop_signal = "TERM";
  auto* o_exec = app.add_flag("--exec", exec,
                              "supervisor mode: run the command after -- on the listeners (LISTEN_FDS, NOTIFY_SOCKET) "
                              "instead of the echo service; see docs/supervisor.md");
  auto* o_command = app.add_option("command", command, "with --exec: the app's command line, after --");
  auto* o_app_ready = app.add_option("--app-ready", app_ready,
                                     "when an app instance is ready: 'notify' (READY=1) or 'delay=MS' after its start")
                          ->capture_default_str();
  auto* o_app_ready_timeout =
      app.add_option("--app-ready-timeout", app_ready_timeout, "seconds a new app instance has to become ready")
          ->capture_default_str()
          ->check(CLI::Range(0.001, 3600.0));
  auto* o_app_probation = app.add_option("--app-probation", app_probation,
                                         "seconds a ready new instance must live before the old one is stopped")
                              ->capture_default_str()
                              ->check(CLI::Range(0.0, 3600.0));
  auto* o_app_drain_timeout =
      app.add_option("--app-drain-timeout", app_drain_timeout,
                     "seconds an old instance has after its stop signal before its process group is killed")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 86400.0));
  auto* o_app_stop_signal =
      app.add_option("--app-stop-signal", app_stop_signal, "the signal that stops an app instance gracefully")
          ->capture_default_str();
  app.add_option("--config", config, "TOML configuration file (see docs/operations.md); SIGHUP re-reads it");
  app.add_option("--check-config", check_config, "validate a configuration file, print the verdict, exit 0 or 1");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return {std::nullopt, code == 0 ? 0 : 2, {}, {}};
  }

  if (!check_config.empty()) {
    auto file = load_config_file(check_config);
    if (!file) {
      std::cerr << "batond: " << file.error().message << "\n";
      return {std::nullopt, 1, {}, {}};
    }
    std::cout << check_config << ": ok\n";
    return {std::nullopt, 0, {}, {}};
  }

  // Only what was given on the command line goes into its layer.
  auto cli = std::make_shared<SettingsLayer>();
  if (o_listen->count()) {
    std::vector<handoff::ListenSpec> specs;
    for (const auto& text : listen) {
      auto spec = handoff::ListenSpec::parse(text);
      if (!spec) return {std::nullopt, usage_error("--listen '" + text + "': " + spec.error().message), {}, {}};
      specs.push_back(std::move(spec).value());
    }
    if (auto st = check_listeners(specs, "--listen"); !st) return {std::nullopt, usage_error(st.error().message), {}, {}};
    cli->listeners = std::move(specs);
  }
  if (o_max->count()) cli->max_connections = max_connections;
  if (o_drain_timeout->count()) cli->drain_timeout = seconds_to_ms(drain_timeout);
  if (o_upgrade_timeout->count()) cli->upgrade_timeout = seconds_to_ms(upgrade_timeout);
  if (o_upgrade_probation->count()) cli->upgrade_probation = seconds_to_ms(upgrade_probation);
  if (o_pid->count()) cli->pid_file = pid_file;
  if (o_log->count()) cli->log_level = log_level;
  if (o_log_format->count()) cli->log_format = parse_log_format(log_format);
  if (o_binary->count()) cli->binary = binary;
  if (o_backlog->count()) cli->backlog = backlog;
  if (o_drain->count())
    cli->drain_mode = drain_mode == "handoff" ? DaemonOptions::DrainMode::Handoff : DaemonOptions::DrainMode::Wait;
  if (o_control->count()) {
    if (auto a = handoff::ListenAddress::parse("unix:" + control_path); !a)
      return {std::nullopt, usage_error("--control '" + control_path + "': " + a.error().message), {}, {}};
    cli->control_path = control_path;
  }

  if (o_metrics->count()) {
    auto a = parse_metrics_address(metrics);
    if (!a) return {std::nullopt, usage_error("--metrics " + a.error().message), {}, {}};
    cli->metrics = std::move(a).value();
  }

  if (!command.empty() && !exec)
    return {std::nullopt, usage_error("unexpected argument '" + command.front() + "' (an app command needs --exec --)"), {}, {}};
  if (!command.empty()) cli->app_command = command;
  if (o_app_ready->count()) {
    auto v = parse_app_ready(app_ready);
    if (!v) return {std::nullopt, usage_error("--app-ready " + v.error().message), {}, {}};
    cli->app_ready_delay = v.value();
  }
  if (o_app_ready_timeout->count()) cli->app_ready_timeout = seconds_to_ms(app_ready_timeout);
  if (o_app_probation->count()) cli->app_probation = seconds_to_ms(app_probation);
  if (o_app_drain_timeout->count()) cli->app_drain_timeout = seconds_to_ms(app_drain_timeout);
  if (o_app_stop_signal->count()) {
    auto v = parse_signal(app_stop_signal);
    if (!v) return {std::nullopt, usage_error("--app-stop-signal " + v.error().message), {}, {}};
    cli->app_stop_signal = v.value();
  }

  SettingsLayer file;
  if (!config.empty()) {
    auto loaded = load_config_file(config);
    if (!loaded) {
      std::cerr << "batond: " << loaded.error().message << "\n";
      return {std::nullopt, 1, {}, {}};
    }
    file = std::move(loaded).value();
  }
  auto merged = merge(file, *cli);
  if (exec && !merged.exec_mode())
    return {std::nullopt, usage_error("--exec needs a command: batond [options] --exec -- CMD [ARGS...] (or [app] command "
                                      "in the config file)"), {}, {}};
  (void)o_exec;
  (void)o_command;
  return {merged, 0, config, cli};
}

}  // namespace baton::daemon
