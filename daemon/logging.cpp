#include "logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <chrono>
#include <cstdlib>

#include <nlohmann/json.hpp>

namespace baton::daemon {
namespace {

// One JSON object a line: what tools (the benchmark, a log shipper) read
// instead of the wording.
class JsonLineFormatter final : public spdlog::formatter {
 public:
  explicit JsonLineFormatter(unsigned generation) : generation_(generation) {}
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(msg.time.time_since_epoch()).count();
    nlohmann::json line{{"ts_us", us},
                        {"level", spdlog::level::to_string_view(msg.level).data()},
                        {"pid", pid_},
                        {"gen", generation_},
                        {"msg", std::string(msg.payload.data(), msg.payload.size())}};
    const std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonLineFormatter>(generation_); }

 private:
  unsigned generation_;
  pid_t pid_ = ::getpid();
};

// "<N>" before each line: journald reads it as the syslog priority, so
// `journalctl -p warning` finds batond's warnings. Only when stderr goes to
// the journal (systemd sets JOURNAL_STREAM then).
class JournalPriority final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const char* p = "<6>";
    switch (msg.level) {
      case spdlog::level::trace:
      case spdlog::level::debug: p = "<7>"; break;
      case spdlog::level::info: p = "<6>"; break;
      case spdlog::level::warn: p = "<4>"; break;
      case spdlog::level::err: p = "<3>"; break;
      case spdlog::level::critical: p = "<2>"; break;
      default: break;
    }
    dest.append(p, p + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<JournalPriority>(); }
};

}  // namespace

void setup_logging(const std::string& level, DaemonOptions::LogFormat format, unsigned generation) {
  auto logger = spdlog::stderr_logger_mt("batond");
  if (format == DaemonOptions::LogFormat::Json) {
    logger->set_formatter(std::make_unique<JsonLineFormatter>(generation));
  } else {
    const bool journal = std::getenv("JOURNAL_STREAM") != nullptr;
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<JournalPriority>('*');
    // journald stamps lines itself; on a terminal or in a file the time leads.
    formatter->set_pattern(std::string(journal ? "%*" : "%Y-%m-%dT%H:%M:%S.%f ") + "%l batond pid=%P gen=" +
                           std::to_string(generation) + " %v");
    logger->set_formatter(std::move(formatter));
  }
  logger->set_level(spdlog::level::from_str(level));
  // Every event is one line; flushing each keeps the order across generations
  // that share one stderr.
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

}  // namespace baton::daemon
