#pragma once
// A small file read whole, through an fd opened close-on-exec: the upgrade's
// spawn runs on another thread while the loop goes on, so an fd opened
// meanwhile without O_CLOEXEC (std::ifstream's) would leak into the new process.

#include <string>

#include "baton/handoff/result.h"

namespace baton::daemon {

handoff::Result<std::string> read_text_file(const std::string& path);

}  // namespace baton::daemon
