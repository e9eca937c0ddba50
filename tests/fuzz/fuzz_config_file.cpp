// Fuzzes baton::daemon::load_config_file, which reads the TOML file named by
// --config (at start-up, on --check-config, and on every reload: a bad file
// must be an error, never a crash or an exception that takes the daemon down).
// It takes a path, so each input is written to one file per process: a memfd,
// loaded as /proc/self/fd/N. Nothing touches the disk, and nothing is left
// behind when an input crashes the process.
//
// An uncaught exception ends in std::terminate, which libFuzzer reports as a
// crash. When the file loads, the listeners it yields must be what every
// other source guarantees (names that the hand-off accepts, addresses that
// round-trip through their text) and exactly what the file says: the same
// file read with toml++ directly has one [listeners] entry per listener, its
// key the listener's name and its value the listener's address.

#include <sys/mman.h>
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

// The one file of this process, and its path.
struct ConfigFile {
  int fd = -1;
  std::string path;
};

const ConfigFile& config_file() {
  static const ConfigFile file = [] {
    ConfigFile f;
    f.fd = ::memfd_create("baton-fuzz-config.toml", MFD_CLOEXEC);
    if (f.fd < 0) fail(std::string("memfd_create: ") + std::strerror(errno));
    f.path = "/proc/self/fd/" + std::to_string(f.fd);
    return f;
  }();
  return file;
}

// Replaces the file's contents with the input.
void write_file(const ConfigFile& f, const uint8_t* data, size_t size) {
  if (::ftruncate(f.fd, 0) != 0) fail(std::string("ftruncate: ") + std::strerror(errno));
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::pwrite(f.fd, data + done, size - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(std::string("pwrite: ") + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const ConfigFile& file = config_file();
  const std::string& path = file.path;
  write_file(file, data, size);
  auto loaded = daemon::load_config_file(path);
  if (!loaded) {
    if (loaded.error().message.find(path) == std::string::npos)
      fail("an error that does not name the file: " + loaded.error().message);
    return 0;
  }
  // It loaded, so it is valid TOML: toml++ says what the file holds.
  const toml::table root = toml::parse_file(path);
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
