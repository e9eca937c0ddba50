#include <cstdio>
#include <iostream>
#include <thread>
#include <variant>

#include "commands.h"
#include "control_client.h"

namespace baton::cli {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr double kDefaultUpgradeTimeoutS = 10;
constexpr double kDefaultDrainTimeoutS = 30;

Clock::time_point after_seconds(double s) {
  return Clock::now() + std::chrono::milliseconds(static_cast<long long>(s * 1000));
}

// Connects and sends; on failure returns the exit code to use.
std::variant<ControlClient, int> open_and_send(const std::string& path, const control::Request& request) {
  auto client = ControlClient::connect(path);
  if (!client) return fail(kUnreachable, client.error().message);
  if (auto st = client->send(request); !st) return fail(kUnreachable, st.error().message);
  return std::move(client).value();
}

// Reads lines until the final reply (one with "ok"), passing events to on_event.
template <class OnEvent>
// `deadline` is read afresh for every line: an event may move it.
std::variant<nlohmann::json, int> final_reply(ControlClient& client, const Clock::time_point& deadline, OnEvent&& on_event) {
  for (;;) {
    auto line = client.next(deadline);
    if (!line) return fail(kFailed, line.error().message);
    if (!line.value()) return fail(kFailed, "batond closed the connection before answering");
    auto& j = *line.value();
    if (j.contains("ok")) return j;
    on_event(j);
  }
}

std::string error_text(const nlohmann::json& reply) {
  return reply.value("error", std::string("batond reported a failure without a reason"));
}

}  // namespace

namespace {
// One request, one reply (no progress events); `print` shows an ok reply.
int ask(const std::string& path, control::Command command, const std::function<void(const nlohmann::json&)>& print) {
  auto opened = open_and_send(path, control::Request{command, {}, {}});
  if (auto* code = std::get_if<int>(&opened)) return *code;
  auto reply = final_reply(std::get<ControlClient>(opened), after_seconds(10), [](const nlohmann::json&) {});
  if (auto* code = std::get_if<int>(&reply)) return *code;
  auto& j = std::get<nlohmann::json>(reply);
  if (!j.value("ok", false)) return fail(kFailed, error_text(j));
  print(j);
  return kDone;
}
}  // namespace

int status_over_control(const std::string& path, bool json) {
  return ask(path, control::Command::Status, [json](const nlohmann::json& j) {
    if (json) std::cout << j.dump(2) << "\n";
    else std::cout << format_status(j);
  });
}

int metrics_over_control(const std::string& path) {
  return ask(path, control::Command::Metrics,
             [](const nlohmann::json& j) { std::cout << j.value("text", std::string()) << std::flush; });
}

int history_over_control(const std::string& path, bool json) {
  return ask(path, control::Command::History, [json](const nlohmann::json& j) {
    const auto records = j.value("records", nlohmann::json::array());
    if (json) std::cout << records.dump(2) << "\n";
    else std::cout << format_history(records);
  });
}

int upgrade_over_control(const std::string& path, const std::string& binary, std::optional<double> timeout_s) {
  control::Request request{control::Command::Upgrade, binary, timeout_s};
  auto opened = open_and_send(path, request);
  if (auto* code = std::get_if<int>(&opened)) return *code;
  // The daemon enforces the timeout and reports; ours only guards against a
  // daemon that never answers. Once it says which timeout it applies (its
  // configured one, when we gave none), that one plus a margin is ours.
  auto deadline = after_seconds(timeout_s.value_or(kDefaultUpgradeTimeoutS) + 15);
  auto reply = final_reply(std::get<ControlClient>(opened), deadline, [&deadline](const nlohmann::json& e) {
    const auto name = e.value("event", std::string());
    if (name == "spawned") {
      if (e.contains("timeout_ms")) deadline = after_seconds(e.value("timeout_ms", 0.0) / 1000.0 + 15);
      std::cout << "upgrade: spawned pid " << e.value("pid", 0) << std::endl;
    } else if (name == "ready") {
      char ms[32];
      std::snprintf(ms, sizeof ms, "%.1f", e.value("ms", 0.0));
      std::cout << "upgrade: pid " << e.value("pid", 0) << " ready after " << ms << " ms (generation "
                << e.value("generation", 0) << ")" << std::endl;
    } else if (name == "draining") {
      std::cout << "upgrade: old pid " << e.value("pid", 0) << " draining " << e.value("connections", 0)
                << " connection(s)" << std::endl;
    }
  });
  if (auto* code = std::get_if<int>(&reply)) return *code;
  auto& j = std::get<nlohmann::json>(reply);
  if (!j.value("ok", false)) return fail(kFailed, "upgrade failed: " + error_text(j));
  std::cout << "upgrade: done; pid " << j.value("pid", 0) << " serves as generation " << j.value("generation", 0)
            << std::endl;
  return kDone;
}

int stop_over_control(const std::string& path, std::optional<double> timeout_s) {
  auto opened = open_and_send(path, control::Request{control::Command::Stop, {}, timeout_s});
  if (auto* code = std::get_if<int>(&opened)) return *code;
  auto& client = std::get<ControlClient>(opened);
  auto reply = final_reply(client, after_seconds(10), [](const nlohmann::json&) {});
  if (auto* code = std::get_if<int>(&reply)) return *code;
  auto& j = std::get<nlohmann::json>(reply);
  if (!j.value("ok", false)) return fail(kFailed, error_text(j));
  const int pid = j.value("pid", 0);
  std::cout << "stop: pid " << pid << " stopped accepting; draining " << j.value("connections", 0)
            << " connection(s)" << std::endl;
  // The daemon closes this connection as it exits; then the pid goes away.
  const auto deadline = after_seconds(timeout_s.value_or(kDefaultDrainTimeoutS) + 15);
  for (;;) {
    auto line = client.next(deadline);
    if (!line) return fail(kFailed, "pid " + std::to_string(pid) + " did not exit: " + line.error().message);
    if (!line.value()) break;
  }
  while (pid_alive(pid)) {
    if (Clock::now() > deadline) return fail(kFailed, "pid " + std::to_string(pid) + " did not exit in time");
    std::this_thread::sleep_for(10ms);
  }
  std::cout << "stop: pid " << pid << " exited" << std::endl;
  return kDone;
}

int restart_over_control(const std::string& path) {
  auto opened = open_and_send(path, control::Request{control::Command::Restart, {}, {}});
  if (auto* code = std::get_if<int>(&opened)) return *code;
  // batond enforces the app's ready timeout and probation and reports; this
  // deadline only guards against a batond that never answers.
  auto deadline = after_seconds(kDefaultUpgradeTimeoutS + 60);
  auto reply = final_reply(std::get<ControlClient>(opened), deadline, [&deadline](const nlohmann::json& e) {
    const auto name = e.value("event", std::string());
    if (name == "spawned") {
      if (e.contains("timeout_ms")) deadline = after_seconds(e.value("timeout_ms", 0.0) / 1000.0 + 15);
      std::cout << "restart: started new app pid " << e.value("pid", 0) << std::endl;
    } else if (name == "ready") {
      char ms[32];
      std::snprintf(ms, sizeof ms, "%.1f", e.value("ms", 0.0));
      std::cout << "restart: pid " << e.value("pid", 0) << " ready after " << ms << " ms; on probation" << std::endl;
    }
  });
  if (auto* code = std::get_if<int>(&reply)) return *code;
  auto& j = std::get<nlohmann::json>(reply);
  if (!j.value("ok", false)) return fail(kFailed, "restart failed: " + error_text(j));
  std::cout << "restart: done; app pid " << j.value("pid", 0) << " serves";
  if (j.value("old_pid", 0) != 0) std::cout << "; old pid " << j.value("old_pid", 0) << " was told to stop";
  std::cout << std::endl;
  return kDone;
}

int reload_over_control(const std::string& path) {
  auto opened = open_and_send(path, control::Request{control::Command::Reload, {}, {}});
  if (auto* code = std::get_if<int>(&opened)) return *code;
  auto reply = final_reply(std::get<ControlClient>(opened), after_seconds(10), [](const nlohmann::json&) {});
  if (auto* code = std::get_if<int>(&reply)) return *code;
  auto& j = std::get<nlohmann::json>(reply);
  if (!j.value("ok", false)) return fail(kFailed, "reload failed: " + error_text(j));
  auto list = [&](const char* key) {
    std::string s;
    for (const auto& v : j.value(key, nlohmann::json::array())) s += (s.empty() ? "" : ", ") + v.get<std::string>();
    return s.empty() ? std::string("nothing") : s;
  };
  std::cout << "reload: applied now: " << list("applied") << "; at the next upgrade: " << list("at_next_upgrade")
            << std::endl;
  return kDone;
}

}  // namespace baton::cli
