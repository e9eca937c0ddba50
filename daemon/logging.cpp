#include "logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <nlohmann/json.hpp>

namespace baton::daemon {
namespace {

// "<N>": the syslog priority journald reads at the start of a line.
const char* syslog_priority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug: return "<7>";
    case spdlog::level::warn: return "<4>";
    case spdlog::level::err: return "<3>";
    case spdlog::level::critical: return "<2>";
    default: return "<6>";
  }
}

// stderr is the journal: JOURNAL_STREAM names its device and inode
// (systemd.exec(5)); the variable alone may have leaked from a parent.
bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  unsigned long long dev = 0, ino = 0;
  struct stat st;
  return stream && std::sscanf(stream, "%llu:%llu", &dev, &ino) == 2 && ::fstat(STDERR_FILENO, &st) == 0 &&
         st.st_dev == dev && st.st_ino == ino;
}

// One JSON object a line: what tools (the benchmark, a log shipper) read
// instead of the wording.
class JsonLineFormatter final : public spdlog::formatter {
 public:
  JsonLineFormatter(unsigned generation, bool journal) : generation_(generation), journal_(journal) {}
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(msg.time.time_since_epoch()).count();
    // journald takes the "<N>" off: what it stores is the JSON alone.
    if (journal_) dest.append(std::string_view(syslog_priority(msg.level)));
    // In this order, always: ts_us first, for tools that sort or cut lines.
    nlohmann::ordered_json line{{"ts_us", us},
                        {"level", spdlog::level::to_string_view(msg.level).data()},
                        {"pid", pid_},
                        {"gen", generation_},
                        {"msg", std::string(msg.payload.data(), msg.payload.size())}};
    const std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonLineFormatter>(generation_, journal_);
  }

 private:
  unsigned generation_;
  bool journal_;
  pid_t pid_ = ::getpid();
};

// "<N>" before each line: journald reads it as the syslog priority, so
// `journalctl -p warning` finds batond's warnings. Only when stderr goes to
// the journal (systemd sets JOURNAL_STREAM then).
class JournalPriority final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    dest.append(std::string_view(syslog_priority(msg.level)));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<JournalPriority>(); }
};

}  // namespace

void setup_logging(const std::string& level, DaemonOptions::LogFormat format, unsigned generation) {
  auto logger = spdlog::stderr_logger_mt("batond");
  const bool journal = stderr_is_journal();
  if (format == DaemonOptions::LogFormat::Json) {
    logger->set_formatter(std::make_unique<JsonLineFormatter>(generation, journal));
  } else {
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
