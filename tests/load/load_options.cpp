#include "load_options.h"

#include <CLI/CLI.hpp>
#include <cstdio>

namespace baton::load {
namespace {

constexpr size_t kMaxMessageSize = 64u << 20;

const char* kDescription =
    "baton-load: echo load generator that counts as success only what it verified.\n"
    "Exit status: 0 no failures and something verified, 1 failures (or nothing verified), 2 usage error.";

void define_options(CLI::App& app, LoadOptions& o) {
  app.add_option("--target", o.target_text, "tcp://127.0.0.1:PORT, tcp://[::1]:PORT or unix:/path")->required();
  app.add_option("--connections", o.connections, "persistent connections")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  app.add_option("--message-size", o.message_size, "bytes per message (random payload)")
      ->check(CLI::Range(size_t{1}, kMaxMessageSize))
      ->capture_default_str();
  app.add_option("--pipeline", o.pipeline, "messages in flight per persistent connection")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  app.add_option("--rate", o.rate, "messages per second per persistent connection (0 = no cap)")
      ->check(CLI::Range(0.0, 1e9))
      ->capture_default_str();
  app.add_option("--churn-rate", o.churn_rate, "short connections started per second")
      ->check(CLI::Range(0.0, 1e6))
      ->capture_default_str();
  app.add_option("--duration", o.duration_s, "seconds to run; SIGINT/SIGTERM ends the run early")
      ->check(CLI::Range(0.001, 1e7))
      ->capture_default_str();
  app.add_option("--timeout-ms", o.timeout_ms, "a connect or a message without progress this long fails")
      ->check(CLI::Range(1, 3600 * 1000))
      ->capture_default_str();
  app.add_option("--interval-ms", o.interval_ms, "length of a timeline interval (line and report), in ms")
      ->check(CLI::Range(10, 3600 * 1000))
      ->capture_default_str();
  app.add_option("--report", o.report_path, "write a JSON report to this file");
  app.add_flag("--quiet", o.quiet, "no timeline lines on stdout");
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "baton-load: %s\n", message.c_str());
  return kExitUsage;
}

}  // namespace

std::variant<LoadOptions, int> parse_load_options(int argc, char** argv) {
  CLI::App app{kDescription};
  LoadOptions options;
  define_options(app, options);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // app.exit prints help (status 0) or the error and a hint; CLI11's own
    // error codes are not ours.
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  auto target = handoff::ListenAddress::parse(options.target_text);
  if (!target) return usage_error("--target: " + target.error().message);
  if (target->is_tcp() && target->port == 0) return usage_error("--target: port 0 cannot be connected to");
  options.target = target.value();
  if (options.connections == 0 && options.churn_rate == 0)
    return usage_error("nothing to do: --connections 0 and no --churn-rate");
  return options;
}

}  // namespace baton::load
