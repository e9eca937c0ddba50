// baton-load: an event-driven echo load generator that never counts as
// success anything it did not verify. See load_generator.h for how a run
// goes, load_report.h for what it prints.

#include <cstdio>
#include <fstream>
#include <optional>
#include <variant>

#include "load_generator.h"
#include "load_options.h"
#include "load_report.h"
#include "sockets.h"

namespace baton::load {
namespace {

// Opened before the run, so an unwritable path is a usage error up front and
// not a lost report after minutes of load.
std::optional<std::ofstream> open_report(const std::string& path) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) return std::nullopt;
  return out;
}

int run(const LoadOptions& options) {
  std::optional<std::ofstream> report;
  if (!options.report_path.empty()) {
    report = open_report(options.report_path);
    if (!report) {
      std::fprintf(stderr, "baton-load: --report: cannot open %s for writing\n", options.report_path.c_str());
      return kExitUsage;
    }
  }
  if (auto st = raise_nofile_limit(); !st) std::fprintf(stderr, "baton-load: %s\n", st.error().message.c_str());
  auto generator = LoadGenerator::create(options);
  if (!generator) {
    std::fprintf(stderr, "baton-load: %s\n", generator.error().message.c_str());
    return kExitFailures;
  }
  auto info = generator->run();
  if (!info) {
    std::fprintf(stderr, "baton-load: %s\n", info.error().message.c_str());
    return kExitFailures;
  }
  const LoadStats& stats = generator->stats();
  print_line(summary_line(stats));
  if (report) {
    *report << report_json(options, stats, info.value()).dump(2) << '\n';
    report->close();
    if (!*report) {
      std::fprintf(stderr, "baton-load: writing %s failed\n", options.report_path.c_str());
      return kExitFailures;
    }
  }
  return exit_status(stats);
}

}  // namespace
}  // namespace baton::load

int main(int argc, char** argv) {
  auto parsed = baton::load::parse_load_options(argc, argv);
  if (auto* code = std::get_if<int>(&parsed)) return *code;
  return baton::load::run(std::get<baton::load::LoadOptions>(parsed));
}
