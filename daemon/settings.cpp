#include "settings.h"

#include <signal.h>

#include <charconv>
#include <set>

#include "control_protocol.h"

namespace baton::daemon {

DaemonOptions merge(const SettingsLayer& file, const SettingsLayer& cli) {
  DaemonOptions o;
  auto pick = [&](auto member, auto& target) {
    if ((cli.*member)) target = *(cli.*member);
    else if ((file.*member)) target = *(file.*member);
  };
  pick(&SettingsLayer::listeners, o.listeners);
  pick(&SettingsLayer::max_connections, o.max_connections);
  pick(&SettingsLayer::drain_timeout, o.drain_timeout);
  pick(&SettingsLayer::upgrade_timeout, o.upgrade_timeout);
  pick(&SettingsLayer::upgrade_probation, o.upgrade_probation);
  pick(&SettingsLayer::drain_mode, o.drain_mode);
  pick(&SettingsLayer::pid_file, o.pid_file);
  pick(&SettingsLayer::log_level, o.log_level);
  pick(&SettingsLayer::log_format, o.log_format);
  pick(&SettingsLayer::binary, o.binary);
  pick(&SettingsLayer::backlog, o.backlog);
  pick(&SettingsLayer::app_command, o.app.command);
  pick(&SettingsLayer::app_ready_delay, o.app.ready_delay);
  pick(&SettingsLayer::app_ready_timeout, o.app.ready_timeout);
  pick(&SettingsLayer::app_probation, o.app.probation);
  pick(&SettingsLayer::app_drain_timeout, o.app.drain_timeout);
  pick(&SettingsLayer::app_stop_signal, o.app.stop_signal);
  if (cli.metrics) o.metrics = cli.metrics;
  else if (file.metrics) o.metrics = file.metrics;
  o.control_path = control::default_control_path();
  pick(&SettingsLayer::control_path, o.control_path);
  return o;
}

handoff::Status check_listeners(const std::vector<handoff::ListenSpec>& listeners, const std::string& where) {
  std::set<std::string> names;
  for (const auto& l : listeners) {
    if (l.name == kControlListenerName)
      return handoff::Error{where + ": the listener name '" + l.name + "' is reserved for the control socket"};
    if (l.name == kMetricsListenerName)
      return handoff::Error{where + ": the listener name '" + l.name + "' is reserved for the metrics endpoint (--metrics)"};
    if (!names.insert(l.name).second) return handoff::Error{where + ": listener name '" + l.name + "' used twice"};
  }
  return {};
}

handoff::Result<handoff::ListenAddress> parse_metrics_address(const std::string& text) {
  auto a = handoff::ListenAddress::parse(text);
  if (!a) return a.error();
  if (a->family == handoff::ListenAddress::Family::Unix)
    return handoff::Error{"'" + text + "' is not a tcp:// address (Prometheus scrapes over TCP)"};
  return a;
}

handoff::Result<std::optional<std::chrono::milliseconds>> parse_app_ready(const std::string& text) {
  if (text == "notify") return std::optional<std::chrono::milliseconds>{};
  if (text.starts_with("delay=")) {
    const std::string ms = text.substr(6);
    long long v = -1;
    auto [end, ec] = std::from_chars(ms.data(), ms.data() + ms.size(), v);
    if (ec == std::errc() && end == ms.data() + ms.size() && v >= 0 && v <= 3'600'000)
      return std::optional<std::chrono::milliseconds>(std::chrono::milliseconds(v));
  }
  return handoff::Error{"'" + text + "' is not \"notify\" or \"delay=MS\" (0 to 3600000)"};
}

namespace {
constexpr std::pair<const char*, int> kSignals[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},   {"USR1", SIGUSR1},
    {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"CONT", SIGCONT}, {"WINCH", SIGWINCH},
};
}  // namespace

handoff::Result<int> parse_signal(const std::string& text) {
  std::string name = text.starts_with("SIG") ? text.substr(3) : text;
  for (const auto& [n, signo] : kSignals)
    if (name == n) return signo;
  int v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec == std::errc() && end == text.data() + text.size() && v >= 1 && v < NSIG) return v;
  return handoff::Error{"'" + text + "' is not a signal (TERM, INT, QUIT, HUP, USR1, USR2, WINCH, KILL or a number)"};
}

std::string signal_to_string(int signo) {
  for (const auto& [n, s] : kSignals)
    if (s == signo) return std::string("SIG") + n;
  return std::to_string(signo);
}

std::optional<DaemonOptions::LogFormat> parse_log_format(const std::string& text) {
  if (text == "text") return DaemonOptions::LogFormat::Text;
  if (text == "json") return DaemonOptions::LogFormat::Json;
  return std::nullopt;
}

bool valid_log_level(const std::string& level) {
  for (const char* l : {"trace", "debug", "info", "warn", "error", "off"})
    if (level == l) return true;
  return false;
}

}  // namespace baton::daemon
