#pragma once
// The binary an upgrade starts. Resolved once, at start-up, from what the
// operator gave: --binary, else argv[0] (made absolute against the start-up
// directory, or looked up in PATH). Never /proc/self/exe: after a deploy that
// names the old, deleted file. Symlinks are kept, not resolved: a deploy that
// repoints /usr/local/bin/batond at a new release is exactly what must be
// picked up.

#include <string>

#include "baton/handoff/result.h"

namespace baton::handoff {

Result<std::string> resolve_executable(const std::string& given);

}  // namespace baton::handoff
