#include "baton/handoff/executable_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <sstream>

namespace baton::handoff {

Result<std::string> resolve_executable(const std::string& given) {
  if (given.empty()) return Error{"empty binary path"};
  if (given.find('/') != std::string::npos) {
    std::error_code ec;
    auto abs = std::filesystem::absolute(given, ec);
    if (ec) return Error{"absolute path of " + given + ": " + ec.message()};
    return abs.lexically_normal().string();
  }
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + given;
    struct stat st;
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0)
      return resolve_executable(candidate);
  }
  return Error{"'" + given + "' not found in PATH"};
}

}  // namespace baton::handoff
