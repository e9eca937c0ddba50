#pragma once
// spdlog to stderr, one line per event, every line carrying pid and generation
// so that the logs of two generations interleaved in one journal stay apart.
//   text: 2026-11-29T15:58:01.123456 info batond pid=812 gen=2 <message>
//         (local time, microseconds; under journald, which stamps lines
//         itself, "<6>" and no time instead)
//   json: {"ts_us":1795967881123456,"level":"info","pid":812,"gen":2,"msg":"<message>"}
//         (keys in this order; ts_us: microseconds since the Unix epoch,
//         UTC; level: trace, debug, info, warning, error, critical; invalid
//         UTF-8 in a message, an app's output say, is replaced; under
//         journald "<N>" first, which journald takes off)
// journald: JOURNAL_STREAM names stderr's device and inode (checked, not just present).

#include <string>

#include "options.h"

namespace baton::daemon {

void setup_logging(const std::string& level, DaemonOptions::LogFormat format, unsigned generation);

}  // namespace baton::daemon
