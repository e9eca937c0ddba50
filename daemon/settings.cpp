#include "settings.h"

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
  pick(&SettingsLayer::binary, o.binary);
  pick(&SettingsLayer::backlog, o.backlog);
  o.control_path = control::default_control_path();
  pick(&SettingsLayer::control_path, o.control_path);
  return o;
}

handoff::Status check_listeners(const std::vector<handoff::ListenSpec>& listeners, const std::string& where) {
  std::set<std::string> names;
  for (const auto& l : listeners) {
    if (l.name == kControlListenerName)
      return handoff::Error{where + ": the listener name '" + l.name + "' is reserved for the control socket"};
    if (!names.insert(l.name).second) return handoff::Error{where + ": listener name '" + l.name + "' used twice"};
  }
  return {};
}

bool valid_log_level(const std::string& level) {
  for (const char* l : {"trace", "debug", "info", "warn", "error", "off"})
    if (level == l) return true;
  return false;
}

}  // namespace baton::daemon
