#pragma once
// The TOML configuration file (--config). Every key is optional; what is
// given overrides the built-in default, and the command line overrides it.
//
//   log_level = "info"            log_format = "text" | "json"
//   pid_file = "/run/baton/batond.pid"
//   control = "/run/baton/control.sock"
//   max_connections = 10000       backlog = 1024
//   [listeners]                   # name = address; replaces the default listener
//   echo = "tcp://127.0.0.1:7000"
//   [drain]  mode = "wait" | "handoff"   timeout = 30     (seconds)
//   [upgrade] timeout = 10   binary = "/usr/local/bin/batond"
//
// Errors name the file, the line and the key: "batond.toml:7: drain.mode:
// must be \"wait\" or \"handoff\"". Unknown keys are errors too: a typo must
// not silently leave a default in place.

#include <string>

#include "baton/handoff/result.h"
#include "settings.h"

namespace baton::daemon {

handoff::Result<SettingsLayer> load_config_file(const std::string& path);

}  // namespace baton::daemon
