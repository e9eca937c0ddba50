#include <cstdio>
#include <sstream>

#include "commands.h"

namespace baton::cli {
namespace {

void row(std::ostringstream& out, const std::string& label, const std::string& value) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%-13s", label.c_str());
  out << buf << value << "\n";
}

std::string fixed1(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

// Supervisor mode: the app's serving instance, its counts, every instance.
void format_app(std::ostringstream& out, const nlohmann::json& a) {
  std::string app = a["pid"].is_number() ? "pid " + std::to_string(a["pid"].get<long>()) : std::string("no instance");
  app += ", " + a.value("state", std::string("?"));
  if (!a.value("status", std::string()).empty()) app += " (" + a.value("status", std::string()) + ")";
  row(out, "app", app);
  row(out, "", std::to_string(a.value("restarts", 0)) + " restart(s), " + std::to_string(a.value("failed_restarts", 0)) +
                   " failed, " + std::to_string(a.value("crashes", 0)) + " crash(es)" +
                   (a.value("restart_in_progress", false) ? "; a restart is in progress" : ""));
  if (a.contains("last_restart") && a["last_restart"].is_object() && !a["last_restart"].value("ok", true)) {
    auto why = a["last_restart"].value("error", std::string("?"));
    row(out, "", "last restart failed: " + why.substr(0, why.find('\n')));
  }
  bool first = true;
  for (const auto& i : a.value("instances", nlohmann::json::array())) {
    row(out, first ? "instances" : "",
        "pid " + std::to_string(i.value("pid", 0)) + " " + i.value("state", std::string("?")) + ", up " +
            fixed1(i.value("uptime_s", 0.0)) + " s");
    first = false;
  }
}

}  // namespace

std::string format_status(const nlohmann::json& s) {
  std::ostringstream out;
  row(out, "pid", std::to_string(s.value("pid", 0)));
  row(out, "generation", std::to_string(s.value("generation", 0)));
  row(out, "version", s.value("version", std::string("?")));
  row(out, "uptime", fixed1(s.value("uptime_s", 0.0)) + " s");
  row(out, "state", s.value("state", std::string("?")));
  bool first = true;
  for (const auto& l : s.value("listeners", nlohmann::json::array())) {
    char buf[256];
    std::snprintf(buf, sizeof buf, "%-10s %s%s", l.value("name", std::string()).c_str(),
                  l.value("address", std::string()).c_str(), l.value("inherited", false) ? "  (inherited)" : "");
    row(out, first ? "listeners" : "", buf);
    first = false;
  }
  const auto& c = s.value("connections", nlohmann::json::object());
  row(out, "connections",
      std::to_string(c.value("open", 0)) + " open, " + std::to_string(c.value("accepted", 0)) + " accepted");
  const auto& u = s.value("upgrade", nlohmann::json::object());
  std::string upgrade = u.value("state", std::string("?"));
  if (u.contains("last") && u["last"].is_object()) {
    const auto& last = u["last"];
    upgrade += last.value("ok", false) ? "; last: ok, pid " + std::to_string(last.value("pid", 0)) + " ready in " +
                                             fixed1(last.value("ms", 0.0)) + " ms"
                                       : "; last: failed: " + last.value("error", std::string("?"));
  }
  row(out, "upgrade", upgrade);
  if (s.contains("drain") && s["drain"].is_object())
    row(out, "drain", s["drain"].value("cause", std::string("?")));
  const auto& older = s.value("draining_generations", nlohmann::json::array());
  if (older.empty()) row(out, "older gens", "none draining");
  first = true;
  for (const auto& g : older) {
    row(out, first ? "older gens" : "",
        "pid " + std::to_string(g.value("pid", 0)) + " (generation " + std::to_string(g.value("generation", 0)) +
            "): " + std::to_string(g.value("connections", 0)) + " connection(s) left");
    first = false;
  }
  if (s.contains("app") && s["app"].is_object()) format_app(out, s["app"]);
  return out.str();
}

}  // namespace baton::cli
