// Fuzzes baton::daemon::load_config_file, which reads the TOML file named by
// --config (at start-up, on --check-config, and on every reload: a bad file
// must be an error, never a crash or an exception that takes the daemon down).
// It takes a path, so each input is written to one file per process,
// /tmp/baton-fuzz-config-<pid>.toml, and removed once loaded (a fresh file
// each time: on ext4, truncating and rewriting one file forces a flush at
// close and makes every run several times slower).
//
// An uncaught exception ends in std::terminate, which libFuzzer reports as a
// crash. When the file loads, the listeners it yields must be what every
// other source guarantees (names that the hand-off accepts, addresses that
// round-trip through their text) and exactly what the file says: the same
// file read with toml++ directly has one [listeners] entry per listener, its
// key the listener's name and its value the listener's address.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <toml++/toml.h>

#include "baton/handoff/listen_address.h"
#include "config_file.h"

namespace {

using namespace baton;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz_config_file: invariant broken: %s\n", what.c_str());
  std::abort();
}

const std::string& config_path() {
  static const std::string path = "/tmp/baton-fuzz-config-" + std::to_string(::getpid()) + ".toml";
  return path;
}

void write_file(const std::string& path, const uint8_t* data, size_t size) {
  ::unlink(path.c_str());  // left behind if the last input crashed the process
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) fail("open " + path + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, data + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("write " + path + ": " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = config_path();
  write_file(path, data, size);
  auto loaded = daemon::load_config_file(path);
  if (!loaded) {
    ::unlink(path.c_str());
    if (loaded.error().message.find(path) == std::string::npos)
      fail("an error that does not name the file: " + loaded.error().message);
    return 0;
  }
  // It loaded, so it is valid TOML: toml++ says what the file holds.
  const toml::table root = toml::parse_file(path);
  ::unlink(path.c_str());
  if (loaded->listeners) {
    const toml::table* table = root["listeners"].as_table();
    if (!table) fail("listeners loaded from a file without a [listeners] table");
    if (table->size() != loaded->listeners->size()) fail("[listeners] has a different number of entries than were loaded");
    for (const auto& l : *loaded->listeners) {
      if (auto st = handoff::validate_listener_name(l.name); !st) fail("listener name refused by the hand-off: " + st.error().message);
      auto again = handoff::ListenAddress::parse(l.address.to_string());
      if (!again || !(*again == l.address)) fail("listener address does not round-trip: " + l.address.to_string());
      const toml::node* value = table->get(l.name);
      if (!value) fail("listener '" + l.name + "' is not a key of [listeners]");
      auto written = handoff::ListenAddress::parse(value->value_or(std::string()));
      if (!written || !(*written == l.address))
        fail("listener '" + l.name + "' is " + l.address.to_string() + ", the file says " + value->value_or(std::string("?")));
    }
  } else if (root.contains("listeners")) {
    fail("a [listeners] entry was loaded as no listeners at all");
  }
  if (loaded->backlog && *loaded->backlog < 1) fail("backlog below 1");
  if (loaded->max_connections && *loaded->max_connections < 1) fail("max_connections below 1");
  return 0;
}
