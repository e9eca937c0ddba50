#include "config_file.h"

#include <toml++/toml.h>

#include <cmath>
#include <set>

#include "text_file.h"

namespace baton::daemon {
namespace {

class Loader {
 public:
  explicit Loader(std::string path) : path_(std::move(path)) {}

  handoff::Result<SettingsLayer> load() {
    auto text = read_text_file(path_);
    if (!text) return handoff::Error{"cannot read config file " + path_ + ": " + text.error().message};
    toml::table root;
    try {
      root = toml::parse(text.value(), path_);
    } catch (const toml::parse_error& e) {
      return handoff::Error{path_ + ":" + std::to_string(e.source().begin.line) + ": " + std::string(e.description())};
    }
    SettingsLayer s;
    if (auto st = check_keys(root, "", {"log_level", "log_format", "pid_file", "control", "max_connections", "backlog", "listeners",
                                        "drain", "upgrade", "app", "metrics"});
        !st)
      return st.error();
    if (auto v = string_at(root, "log_level"); !v) return v.error();
    else if (*v) {
      if (!valid_log_level(**v)) return at(root["log_level"].node(), "log_level", "must be one of trace, debug, info, warn, error, off");
      s.log_level = **v;
    }
    if (auto v = string_at(root, "log_format"); !v) return v.error();
    else if (*v) {
      s.log_format = parse_log_format(**v);
      if (!s.log_format) return at(root["log_format"].node(), "log_format", "must be text or json");
    }
    if (auto v = string_at(root, "pid_file"); !v) return v.error();
    else if (*v) s.pid_file = **v;
    if (auto v = string_at(root, "control"); !v) return v.error();
    else if (*v) {
      if (auto a = handoff::ListenAddress::parse("unix:" + **v); !a) return at(root["control"].node(), "control", a.error().message);
      s.control_path = **v;
    }
    if (auto v = number_at(root, "max_connections", 1, 10'000'000); !v) return v.error();
    else if (*v) s.max_connections = static_cast<size_t>(**v);
    if (auto v = number_at(root, "backlog", 1, 1'000'000); !v) return v.error();
    else if (*v) s.backlog = static_cast<int>(**v);

    if (auto* t = root["listeners"].as_table()) {
      std::vector<handoff::ListenSpec> listeners;
      for (auto& [key, node] : *t) {
        const std::string name(key.str());
        const std::string where = "listeners." + name;
        auto* addr = node.as_string();
        if (!addr) return at(&node, where, "must be an address string such as \"tcp://127.0.0.1:7000\"");
        // Name and address separately: "name=address" re-parsed would read a
        // key such as "unix:/x" as part of a Unix path.
        if (auto st = handoff::validate_listener_name(name); !st) return at(&node, where, st.error().message);
        auto address = handoff::ListenAddress::parse(addr->get());
        if (!address) return at(&node, where, address.error().message);
        listeners.push_back(handoff::ListenSpec{name, std::move(address).value()});
      }
      if (auto st = check_listeners(listeners, path_); !st) return st.error();
      s.listeners = std::move(listeners);
    } else if (root.contains("listeners")) {
      return at(root["listeners"].node(), "listeners", "must be a table of name = \"address\"");
    }

    if (auto* d = root["drain"].as_table()) {
      if (auto st = check_keys(*d, "drain.", {"mode", "timeout"}); !st) return st.error();
      if (auto v = string_at(*d, "mode", "drain."); !v) return v.error();
      else if (*v) {
        if (**v != "wait" && **v != "handoff") return at((*d)["mode"].node(), "drain.mode", "must be \"wait\" or \"handoff\"");
        s.drain_mode = **v == "handoff" ? DaemonOptions::DrainMode::Handoff : DaemonOptions::DrainMode::Wait;
      }
      if (auto v = number_at(*d, "timeout", 0, 86400, "drain."); !v) return v.error();
      else if (*v) s.drain_timeout = std::chrono::milliseconds(static_cast<long long>(**v * 1000));
    }
    if (auto* u = root["upgrade"].as_table()) {
      if (auto st = check_keys(*u, "upgrade.", {"timeout", "probation", "binary"}); !st) return st.error();
      if (auto v = number_at(*u, "timeout", 0.001, 3600, "upgrade."); !v) return v.error();
      else if (*v) s.upgrade_timeout = std::chrono::milliseconds(static_cast<long long>(**v * 1000));
      if (auto v = number_at(*u, "probation", 0, 3600, "upgrade."); !v) return v.error();
      else if (*v) s.upgrade_probation = std::chrono::milliseconds(static_cast<long long>(**v * 1000));
      if (auto v = string_at(*u, "binary", "upgrade."); !v) return v.error();
      else if (*v) s.binary = **v;
    }
    if (auto* m = root["metrics"].as_table()) {
      if (auto st = check_keys(*m, "metrics.", {"listen"}); !st) return st.error();
      if (auto v = string_at(*m, "listen", "metrics."); !v) return v.error();
      else if (*v) {
        auto address = parse_metrics_address(**v);
        if (!address) return at((*m)["listen"].node(), "metrics.listen", address.error().message);
        s.metrics = std::move(address).value();
      }
    } else if (root.contains("metrics")) {
      return at(root["metrics"].node(), "metrics", "must be a table, such as [metrics] listen = \"tcp://127.0.0.1:9100\"");
    }
    if (auto* a = root["app"].as_table()) {
      if (auto st = check_keys(*a, "app.", {"command", "ready", "ready_timeout", "probation", "drain_timeout", "stop_signal"});
          !st)
        return st.error();
      if (auto* node = a->get("command")) {
        auto* arr = node->as_array();
        std::vector<std::string> command;
        if (arr)
          for (auto& item : *arr) {
            if (!item.as_string()) {
              arr = nullptr;
              break;
            }
            command.push_back(item.as_string()->get());
          }
        if (!arr || command.empty() || command.front().empty())
          return at(node, "app.command", "must be a non-empty array of strings, such as [\"gunicorn\", \"app:app\"]");
        s.app_command = std::move(command);
      }
      if (auto v = string_at(*a, "ready", "app."); !v) return v.error();
      else if (*v) {
        auto ready = parse_app_ready(**v);
        if (!ready) return at((*a)["ready"].node(), "app.ready", ready.error().message);
        s.app_ready_delay = ready.value();
      }
      if (auto v = number_at(*a, "ready_timeout", 0.001, 3600, "app."); !v) return v.error();
      else if (*v) s.app_ready_timeout = std::chrono::milliseconds(static_cast<long long>(**v * 1000));
      if (auto v = number_at(*a, "probation", 0, 3600, "app."); !v) return v.error();
      else if (*v) s.app_probation = std::chrono::milliseconds(static_cast<long long>(**v * 1000));
      if (auto v = number_at(*a, "drain_timeout", 0, 86400, "app."); !v) return v.error();
      else if (*v) s.app_drain_timeout = std::chrono::milliseconds(static_cast<long long>(**v * 1000));
      if (auto v = string_at(*a, "stop_signal", "app."); !v) return v.error();
      else if (*v) {
        auto signo = parse_signal(**v);
        if (!signo) return at((*a)["stop_signal"].node(), "app.stop_signal", signo.error().message);
        s.app_stop_signal = signo.value();
      }
    } else if (root.contains("app")) {
      return at(root["app"].node(), "app", "must be a table");
    }
    return s;
  }

 private:
  handoff::Error at(const toml::node* node, const std::string& key, const std::string& what) const {
    const auto line = node ? node->source().begin.line : 0;
    return handoff::Error{path_ + ":" + std::to_string(line) + ": " + key + ": " + what};
  }

  handoff::Status check_keys(const toml::table& t, const std::string& prefix, std::set<std::string> known) const {
    for (auto& [key, node] : t)
      if (!known.count(std::string(key.str()))) return at(&node, prefix + std::string(key.str()), "unknown key");
    return {};
  }

  handoff::Result<std::optional<std::string>> string_at(const toml::table& t, const char* key,
                                                        const std::string& prefix = "") const {
    auto* node = t.get(key);
    if (!node) return std::optional<std::string>{};
    auto* s = node->as_string();
    if (!s) return at(node, prefix + key, "must be a string");
    return std::optional<std::string>(s->get());
  }

  handoff::Result<std::optional<double>> number_at(const toml::table& t, const char* key, double min, double max,
                                                   const std::string& prefix = "") const {
    auto* node = t.get(key);
    if (!node) return std::optional<double>{};
    std::optional<double> v;
    if (auto* i = node->as_integer()) v = static_cast<double>(i->get());
    else if (auto* f = node->as_floating_point()) v = f->get();
    if (!v) return at(node, prefix + key, "must be a number");
    if (!std::isfinite(*v) || *v < min || *v > max)
      return at(node, prefix + key, "must be between " + toml_number(min) + " and " + toml_number(max));
    return v;
  }

  static std::string toml_number(double v) {
    std::string s = std::to_string(v);
    s.erase(s.find_last_not_of('0') + 1);
    if (s.back() == '.') s.pop_back();
    return s;
  }

  std::string path_;
};

}  // namespace

handoff::Result<SettingsLayer> load_config_file(const std::string& path) { return Loader(path).load(); }

}  // namespace baton::daemon
