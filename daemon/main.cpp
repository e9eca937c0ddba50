// batond: parse, set up logging, run the daemon.

#include <unistd.h>

#include <spdlog/spdlog.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "daemon.h"
#include "baton/handoff/child_process.h"
#include "baton/handoff/executable_path.h"
#include "inherited_fds.h"
#include "logging.h"
#include "options.h"
#include "signal_mask.h"
#include "socket_activation.h"

namespace {

// BATON_GENERATION is set by the predecessor; a fresh start is generation 1.
unsigned take_generation() {
  const char* value = std::getenv(baton::daemon::kGenerationVariable);
  unsigned gen = 1;
  if (value) {
    std::string text(value);
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), gen);
    if (ec != std::errc() || end != text.data() + text.size() || gen == 0) gen = 1;
    ::unsetenv(baton::daemon::kGenerationVariable);
  }
  return gen;
}

}  // namespace

int main(int argc, char** argv) {
  baton::daemon::block_handled_signals();
  baton::daemon::StartupContext context;
  auto activated = baton::daemon::take_activated_fds();
  if (!activated) {
    std::fprintf(stderr, "batond: %s\n", activated.error().message.c_str());
    return 2;
  }
  context.activated = std::move(activated).value();
  auto parsed = baton::daemon::parse_options(argc, argv);
  if (!parsed.options) return parsed.exit_code;
  auto options = std::move(*parsed.options);
  context.config_path = parsed.config_path;
  context.command_line = parsed.command_line;

  context.generation = take_generation();
  baton::daemon::setup_logging(options.log_level, options.log_format, context.generation);
  if (int n = baton::daemon::close_inherited_fds_on_exec(); n > 0)
    spdlog::debug("{} inherited fd(s) marked close-on-exec: no successor will see them", n);
  if (auto [before, after] = baton::daemon::raise_fd_limit(); before != after)
    spdlog::info("fd limit raised from {} to {} (the hard limit)", before, after);
  for (int i = 1; i < argc; ++i) context.args.emplace_back(argv[i]);

  auto binary = baton::handoff::resolve_executable(options.binary.empty() ? argv[0] : options.binary);
  if (binary) {
    context.binary = binary.value();
  } else {
    context.binary_error = binary.error().message;
    spdlog::warn("upgrades will be refused: cannot resolve the binary to start: {}", context.binary_error);
  }

  // Upgrades then create no thread in the request's loop turn (child_process.h).
  if (auto st = baton::handoff::start_standby_spawner(); !st)
    spdlog::warn("standby spawner thread: {}; each upgrade starts a thread of its own", st.error().message);

  int code = 0;
  {
    // Destroyed before the logger goes: its destructor may still log.
    baton::daemon::Daemon daemon(std::move(options), std::move(context));
    code = daemon.run();
  }
  spdlog::shutdown();
  return code;
}
