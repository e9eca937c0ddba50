// batonctl history: the flight recorder, readable. Per record one line
// (when, what, who asked, from which pid to which, the outcome), then its
// events, each with its time after the request and after the event before.

#include <cstdio>
#include <ctime>
#include <sstream>

#include "commands.h"

namespace baton::cli {
namespace {

std::string local_time(long long unix_ms) {
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03lld", buf, unix_ms % 1000);
  return out;
}

std::string ms(long long us, int width) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%*.3f ms", width, static_cast<double>(us) / 1000.0);
  return buf;
}

}  // namespace

std::string format_history(const nlohmann::json& records) {
  std::ostringstream out;
  if (!records.is_array() || records.empty()) return "no upgrade or restart recorded yet\n";
  for (const auto& r : records) {
    out << local_time(r.value("requested_unix_ms", 0LL)) << "  " << r.value("kind", std::string("?")) << " ("
        << r.value("trigger", std::string("?")) << ")  pid " << r.value("from_pid", 0);
    if (r.value("kind", std::string()) == "upgrade") out << " gen " << r.value("from_generation", 0);
    out << " -> " << (r.value("to_pid", 0) ? "pid " + std::to_string(r.value("to_pid", 0)) : std::string("(none)"))
        << "  " << r.value("outcome", std::string("?"));
    if (!r.value("error", std::string()).empty()) out << ": " << r.value("error", std::string());
    out << "\n";
    long long previous = 0;
    for (const auto& e : r.value("events", nlohmann::json::array())) {
      const long long offset = e.value("offset_us", 0LL);
      char name[32];
      std::snprintf(name, sizeof name, "%-24s", e.value("name", std::string("?")).c_str());
      out << "    " << name << ms(offset, 10) << "  (+" << ms(offset - previous, 9) << ")";
      if (!e.value("detail", std::string()).empty()) out << "  " << e.value("detail", std::string());
      out << "\n";
      previous = offset;
    }
  }
  return out.str();
}

}  // namespace baton::cli
