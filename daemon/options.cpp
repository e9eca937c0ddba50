#include "options.h"

#include <CLI/CLI.hpp>

#include <iostream>
#include <set>

#include "control_protocol.h"
#include "version.h"

namespace baton::daemon {
namespace {

std::chrono::milliseconds seconds_to_ms(double s) {
  return std::chrono::milliseconds(static_cast<long long>(s * 1000.0 + 0.5));
}

}  // namespace

ParseOutcome parse_options(int argc, char** argv) {
  CLI::App app{"batond: an echo daemon that is replaced by a new binary without losing a connection.\n"
               "SIGTERM/SIGINT: graceful stop (a second one closes everything). SIGUSR2: upgrade."};
  app.set_version_flag("--version", std::string("batond ") + kVersion);

  std::vector<std::string> listen;
  double drain_timeout = 30, upgrade_timeout = 10;
  DaemonOptions o;
  app.add_option("--listen", listen,
                 "[NAME=]ADDR to listen on, repeatable; ADDR is tcp://HOST:PORT, tcp://[HOST]:PORT or unix:PATH "
                 "(port 0 picks a free port; default " + std::string(kDefaultListen) + ")");
  app.add_option("--max-connections", o.max_connections, "connections served at once; more are closed at accept")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--drain-timeout", drain_timeout,
                 "seconds to wait for open connections on stop or after an upgrade before closing them")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--upgrade-timeout", upgrade_timeout, "seconds the new binary has to report READY")
      ->capture_default_str()
      ->check(CLI::Range(0.001, 3600.0));
  app.add_option("--pid-file", o.pid_file, "write the serving process's pid here (atomically)");
  app.add_option("--log-level", o.log_level, "trace, debug, info, warn, error or off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.add_option("--binary", o.binary,
                 "binary to start on upgrade (default: this one's path as started, resolved once at start-up)");
  app.add_option("--backlog", o.backlog, "listen(2) backlog")->capture_default_str()->check(CLI::PositiveNumber);
  std::string drain_mode = "wait";
  app.add_option("--drain", drain_mode,
                 "after an upgrade: 'wait' for open connections to close, or 'handoff' them to the new generation")
      ->capture_default_str()
      ->check(CLI::IsMember({"wait", "handoff"}));
  o.control_path = control::default_control_path();
  app.add_option("--control", o.control_path,
                 "control socket for batonctl (mode 0600; default $XDG_RUNTIME_DIR/baton/control.sock, else "
                 "/run/baton/control.sock as root, else /tmp/baton-UID/control.sock)")
      ->capture_default_str();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return {std::nullopt, code == 0 ? 0 : 2};
  }

  if (listen.empty()) listen.push_back(kDefaultListen);
  std::set<std::string> names;
  for (const auto& text : listen) {
    auto spec = handoff::ListenSpec::parse(text);
    if (!spec) {
      std::cerr << "batond: --listen '" << text << "': " << spec.error().message << "\n";
      return {std::nullopt, 2};
    }
    if (spec->name == kControlListenerName) {
      std::cerr << "batond: --listen '" << text << "': the name '" << kControlListenerName
                << "' is reserved for the control socket\n";
      return {std::nullopt, 2};
    }
    if (!names.insert(spec->name).second) {
      std::cerr << "batond: --listen '" << text << "': listener name '" << spec->name << "' used twice\n";
      return {std::nullopt, 2};
    }
    o.listeners.push_back(std::move(spec).value());
  }
  auto control = handoff::ListenAddress::parse("unix:" + o.control_path);
  if (!control) {
    std::cerr << "batond: --control '" << o.control_path << "': " << control.error().message << "\n";
    return {std::nullopt, 2};
  }
  o.drain_mode = drain_mode == "handoff" ? DaemonOptions::DrainMode::Handoff : DaemonOptions::DrainMode::Wait;
  o.drain_timeout = seconds_to_ms(drain_timeout);
  o.upgrade_timeout = seconds_to_ms(upgrade_timeout);
  return {std::move(o), 0};
}

}  // namespace baton::daemon
