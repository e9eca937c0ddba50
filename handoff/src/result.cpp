#include "baton/handoff/result.h"

#include <cerrno>
#include <cstring>

namespace baton::handoff {

Error sys_error(const std::string& what, int err) { return Error{what + ": " + std::strerror(err)}; }

Error errno_error(const std::string& what) { return sys_error(what, errno); }

}  // namespace baton::handoff
