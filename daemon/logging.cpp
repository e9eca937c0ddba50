#include "logging.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace baton::daemon {

void setup_logging(const std::string& level, unsigned generation) {
  auto logger = spdlog::stderr_logger_mt("batond");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ batond pid=%P gen=" + std::to_string(generation) + " %v");
  logger->set_level(spdlog::level::from_str(level));
  // Every event is one line; flushing each keeps the order across generations
  // that share one stderr.
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

}  // namespace baton::daemon
