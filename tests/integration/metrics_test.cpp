// Metrics and the flight recorder against the real batond: Prometheus's own
// promtool accepts the exposition, a scraper hitting /metrics through 20
// upgrades under load never fails and never sees a counter go back, and the
// history explains every upgrade.

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "support/batond.h"
#include "support/client.h"
#include "support/load.h"

namespace baton::test {
namespace {

CommandResult batonctl(const BatondProcess& d, std::vector<std::string> args) {
  args.insert(args.begin(), {batonctl_path(), "--control", d.control_path()});
  return run_command(args, 60s);
}

// One scrape, as Prometheus does it: GET /metrics, the whole response.
struct Scrape {
  bool ok = false;
  std::string error;
  std::string body;
};

Scrape scrape(const std::string& endpoint, const std::string& request = "GET /metrics HTTP/1.1\r\nHost: baton\r\n\r\n") {
  Scrape s;
  auto fd = connect_to(endpoint);
  if (!fd) return {false, std::string("connect: ") + std::strerror(errno), {}};
  if (!send_all(fd.get(), request)) return {false, "send failed", {}};
  std::string response;
  char buf[8192];
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  for (;;) {
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 200) < 0 || std::chrono::steady_clock::now() > deadline) return {false, "timed out", response};
    if (!(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0) return {false, std::string("recv: ") + std::strerror(errno), response};
    if (n == 0) break;
    response.append(buf, static_cast<size_t>(n));
  }
  const auto head_end = response.find("\r\n\r\n");
  if (head_end == std::string::npos) return {false, "no complete response head", response};
  s.body = response.substr(head_end + 4);
  const auto head = response.substr(0, head_end);
  if (!head.starts_with("HTTP/1.1 200 ")) return {false, "status line: " + head.substr(0, head.find('\r')), s.body};
  const auto cl = head.find("Content-Length: ");
  if (cl == std::string::npos || std::stoul(head.substr(cl + 16)) != s.body.size())
    return {false, "body shorter than its Content-Length", s.body};
  s.ok = true;
  return s;
}

// Samples of the counter families (names ending _total, _bucket, _count, _sum).
std::map<std::string, double> counter_samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto sp = line.rfind(' ');
    const std::string series = line.substr(0, sp);
    const std::string family = series.substr(0, series.find('{'));
    if (family.ends_with("_total") || family.ends_with("_bucket") || family.ends_with("_count") || family.ends_with("_sum"))
      out[series] = std::stod(line.substr(sp + 1));
  }
  return out;
}

double sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with(series + " ")) return std::stod(line.substr(series.size() + 1));
  return -1;
}

CommandResult promtool_check(const TempDir& dir, const std::string& text) {
  const auto path = dir.file("metrics.txt");
  std::ofstream(path) << text;
  return run_command({"/bin/sh", "-c", "promtool check metrics < '" + path + "'"}, 60s);
}

TEST(Metrics, PromtoolAcceptsTheExpositionAndBatonctlPrintsTheSame) {
  TempDir dir;
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--metrics", "tcp://127.0.0.1:0"});
  auto conn = connect_to(d.address());
  ASSERT_TRUE(echo_roundtrip(conn.get(), "hello"));
  auto s = scrape(d.address("metrics"));
  ASSERT_TRUE(s.ok) << s.error << "\n" << s.body;
  auto check = promtool_check(dir, s.body);
  EXPECT_EQ(check.status.code, 0) << check.out << check.err << "\n" << s.body;
  EXPECT_EQ(sample(s.body, "baton_connections_accepted_total"), 1) << s.body;
  EXPECT_EQ(sample(s.body, "baton_bytes_echoed_total"), 5) << s.body;
  EXPECT_EQ(sample(s.body, "baton_open_connections"), 1) << s.body;
  EXPECT_EQ(sample(s.body, "baton_generation"), 1) << s.body;

  auto r = batonctl(d, {"metrics"});
  ASSERT_EQ(r.status.code, 0) << r.err;
  check = promtool_check(dir, r.out);
  EXPECT_EQ(check.status.code, 0) << check.out << check.err << "\n" << r.out;
  EXPECT_EQ(sample(r.out, "baton_bytes_echoed_total"), 5) << r.out;

  // Anything but GET /metrics is refused, and the endpoint serves on.
  for (const auto& [request, status] : std::vector<std::pair<std::string, std::string>>{
           {"GET /other HTTP/1.1\r\nHost: b\r\n\r\n", "HTTP/1.1 404 "},
           {"POST /metrics HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\n\r\n", "HTTP/1.1 405 "},
           {"\x01\x02 garbage\r\n\r\n", "HTTP/1.1 400 "}}) {
    auto fd = connect_to(d.address("metrics"));
    ASSERT_TRUE(send_all(fd.get(), request));
    std::string got;
    recv_exact(fd.get(), 1 << 20, 5s, &got);
    EXPECT_TRUE(got.starts_with(status)) << request << " -> " << got;
  }
  EXPECT_TRUE(scrape(d.address("metrics")).ok);

  // Idle scrapers hold at most 32 connections: the next one is closed at
  // accept, and the echo service and the endpoint serve on.
  std::vector<UniqueFd> idle;
  for (int i = 0; i < 32; ++i) idle.push_back(connect_to(d.address("metrics")));
  ASSERT_TRUE(eventually([&] {
    auto extra = connect_to(d.address("metrics"));
    return wait_closed(extra.get(), 2s);
  })) << "a 33rd idle scrape was not closed";
  ASSERT_TRUE(echo_roundtrip(conn.get(), "still"));
  idle.clear();
  EXPECT_TRUE(eventually([&] { return scrape(d.address("metrics")).ok; }));
}

TEST(Metrics, ScrapesThroughTwentyUpgradesUnderLoadNeverFailAndNoCounterGoesBack) {
  TempDir dir;
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--metrics", "tcp://127.0.0.1:0", "--drain",
                                 "handoff", "--upgrade-probation", "0.2"});
  const std::string endpoint = d.address("metrics");
  auto load = LoadRun::start("tcp://" + d.address(), {"--connections", "8", "--pipeline", "2", "--rate", "200",
                                                      "--churn-rate", "50"});
  std::atomic<bool> done{false};
  std::vector<std::string> problems;
  int scrapes = 0;
  std::string last;
  std::thread scraper([&] {
    std::map<std::string, double> previous;
    // Bounded: about 20 scrapes a second, at most 10 minutes' worth.
    for (int i = 0; i < 12000 && !done; ++i) {
      auto s = scrape(endpoint);
      ++scrapes;
      if (!s.ok) {
        problems.push_back("scrape " + std::to_string(i) + " failed: " + s.error);
      } else {
        for (const auto& [series, v] : counter_samples(s.body)) {
          auto it = previous.find(series);
          if (it != previous.end() && v < it->second)
            problems.push_back("scrape " + std::to_string(i) + ": " + series + " went from " +
                               std::to_string(it->second) + " to " + std::to_string(v));
          previous[series] = v;
        }
        last = s.body;
      }
      std::this_thread::sleep_for(50ms);  // a scrape interval, not a wait for anything
    }
  });
  for (int i = 0; i < 20; ++i) {
    auto r = d.upgrade();
    if (!r.ok) {
      done = true;
      scraper.join();
      FAIL() << "upgrade " << i << ": " << r.line << "\n" << d.log();
    }
  }
  // The last old generation gone: every total has reached the newest one.
  auto status = nlohmann::json::parse(batonctl(d, {"status", "--json"}).out, nullptr, false);
  EXPECT_TRUE(eventually([&] {
    auto j = nlohmann::json::parse(batonctl(d, {"status", "--json"}).out, nullptr, false);
    return j.is_object() && j["draining_generations"].empty();
  }, 30s));
  auto report = load.stop();
  auto final_scrape = scrape(endpoint);
  done = true;
  scraper.join();
  EXPECT_TRUE(problems.empty()) << problems.size() << " problem(s) in " << scrapes << " scrapes, the first: "
                                << (problems.empty() ? "" : problems.front());
  EXPECT_GT(scrapes, 20);
  EXPECT_EQ(report.failures, 0) << report.summary;
  ASSERT_TRUE(final_scrape.ok) << final_scrape.error;
  EXPECT_EQ(sample(final_scrape.body, "baton_upgrades_total{outcome=\"ok\"}"), 20) << final_scrape.body;
  EXPECT_EQ(sample(final_scrape.body, "baton_upgrade_duration_seconds_count"), 20) << final_scrape.body;
  EXPECT_EQ(sample(final_scrape.body, "baton_generation"), 21) << final_scrape.body;
  EXPECT_GT(sample(final_scrape.body, "baton_connections_handed_off_total"), 0) << final_scrape.body;
  EXPECT_GT(sample(final_scrape.body, "baton_bytes_echoed_total"), 0) << final_scrape.body;
  auto check = promtool_check(dir, final_scrape.body);
  EXPECT_EQ(check.status.code, 0) << check.out << check.err;
}

// A new generation that dies takes its own counts with it, but the old one,
// resuming, never shows less than the new one showed: the new one tells it
// before every scrape. `past_probation`: it dies after the upgrade passed
// (the old one still drains a client), else inside the probation window.
void expect_no_decrease_when_the_new_generation_dies(bool past_probation) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--metrics", "tcp://127.0.0.1:0",
                                 "--upgrade-probation", past_probation ? "0.1" : "60"});
  const pid_t gen1 = d.serving_pid();
  auto lingering = connect_to(d.address());  // keeps generation 1 draining after a hand-off
  ASSERT_TRUE(echo_roundtrip(lingering.get(), "old"));
  pid_t gen2 = 0;
  if (past_probation) {
    auto r = d.upgrade();
    ASSERT_TRUE(r.ok) << r.line << "\n" << d.log();
    gen2 = r.new_pid;
  } else {
    d.signal_serving(SIGUSR2);
    gen2 = d.wait_commit(gen1);
  }
  ASSERT_GT(gen2, 0) << d.log();
  // Clients and a scrape, all served by the new generation.
  for (int i = 0; i < 5; ++i) {
    auto c = connect_to(d.address());
    ASSERT_TRUE(echo_roundtrip(c.get(), "from the new generation"));
  }
  std::string shown;
  ASSERT_TRUE(eventually([&] {
    auto s = scrape(d.address("metrics"));
    shown = s.body;
    return s.ok && sample(s.body, "baton_connections_accepted_total") >= 6;
  })) << shown;
  ASSERT_EQ(sample(shown, "baton_generation"), 2) << "the scrape should have reached the new generation";
  ASSERT_EQ(::kill(gen2, SIGKILL), 0);
  ASSERT_TRUE(d.wait_for_line(gen1, "resumes serving")) << d.log();
  auto after = scrape(d.address("metrics"));
  ASSERT_TRUE(after.ok) << after.error;
  EXPECT_EQ(sample(after.body, "baton_generation"), 1);
  for (const auto& [series, v] : counter_samples(shown))
    EXPECT_GE(sample(after.body, series), v) << series << " went back after the resume\n" << after.body;
  // Nor is anything counted twice: the new generation's accepts are there once.
  EXPECT_EQ(sample(after.body, "baton_connections_accepted_total"), sample(shown, "baton_connections_accepted_total"))
      << after.body;
}

TEST(Metrics, AResumingGenerationNeverShowsLessThanTheDeadOneShowed) {
  expect_no_decrease_when_the_new_generation_dies(false);
}

TEST(Metrics, AResumingGenerationNeverShowsLessThanADeadOneThatHadPassedItsProbation) {
  expect_no_decrease_when_the_new_generation_dies(true);
}

// The steps every successful upgrade's timeline must have.
const std::vector<std::string> kSteps = {"requested", "spawned", "exec", "hello", "listeners_sent",
                                         "listeners_received", "ready_sent", "ready", "commit_sent",
                                         "old_stopped_accepting", "commit_received", "serving", "first_accept",
                                         "probation_passed", "old_drained", "old_exited"};

// Each upgrade waits for the old generation's exit: then every count it
// made reached the newest generation, and the totals are exact.
TEST(History, FiveUpgradesUnderLoadGiveFiveCompleteTimelinesAndExactTotals) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--upgrade-probation", "0.2", "--drain",
                                 "handoff", "--metrics", "tcp://127.0.0.1:0"});
  auto load = LoadRun::start("tcp://" + d.address(), {"--connections", "4", "--rate", "100", "--churn-rate", "100"});
  std::vector<pid_t> pids{d.serving_pid()};
  for (int i = 0; i < 5; ++i) {
    auto r = d.upgrade();
    ASSERT_TRUE(r.ok) << r.line << "\n" << d.log();
    pids.push_back(r.new_pid);
    ASSERT_TRUE(d.wait_gone(pids[i]));
  }
  nlohmann::json records;
  // The last old generation's exit reaches the record a moment after it exits.
  auto complete = [](const nlohmann::json& r) {
    for (const auto& e : r["events"])
      if (e["name"] == "old_exited") return true;
    return false;
  };
  EXPECT_TRUE(eventually([&] {
    auto r = batonctl(d, {"history", "--json"});
    records = nlohmann::json::parse(r.out, nullptr, false);
    return records.is_array() && records.size() == 5 && std::all_of(records.begin(), records.end(), complete);
  }, 20s)) << records.dump(2);
  ASSERT_EQ(records.size(), 5u) << records.dump(2);
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    SCOPED_TRACE("record " + std::to_string(i) + ": " + r.dump());
    EXPECT_EQ(r["kind"], "upgrade");
    EXPECT_EQ(r["trigger"], "SIGUSR2");
    EXPECT_EQ(r["outcome"], "ok");
    EXPECT_EQ(r["from_pid"], pids[i]);
    EXPECT_EQ(r["to_pid"], pids[i + 1]);
    EXPECT_EQ(r["from_generation"], i + 1);
    std::map<std::string, long long> at;
    for (const auto& e : r["events"]) at[e["name"]] = e["offset_us"];
    for (const auto& step : kSteps) EXPECT_TRUE(at.count(step)) << "no '" << step << "'";
    // The order that matters: nobody accepts before COMMIT, the old one stops only then.
    EXPECT_LE(at["requested"], at["spawned"]);
    EXPECT_LE(at["hello"], at["ready"]);
    EXPECT_LE(at["commit_sent"], at["commit_received"]);
    EXPECT_LE(at["commit_received"], at["first_accept"]);
    EXPECT_LE(at["old_drained"], at["old_exited"]);
  }
  auto human = batonctl(d, {"history"});
  EXPECT_EQ(human.status.code, 0) << human.err;
  EXPECT_NE(human.out.find("upgrade (SIGUSR2)  pid " + std::to_string(pids[4])), std::string::npos) << human.out;
  auto report = load.stop();
  EXPECT_EQ(report.failures, 0) << report.summary;
  // Every byte the load had echoed was counted by some generation, once.
  EXPECT_TRUE(eventually([&] { return scrape(d.address("metrics")).ok; }));
  auto s = scrape(d.address("metrics"));
  EXPECT_GE(sample(s.body, "baton_bytes_echoed_total"), static_cast<double>(report.bytes_verified)) << s.body << report.summary;
  EXPECT_EQ(sample(s.body, "baton_upgrades_total{outcome=\"ok\"}"), 5) << s.body;
}

// What the upgrade cost the old generation's loop (issue: "the old loop is
// never blocked by an upgrade for more than 1 ms": this is where it shows)
// reaches the new generation's status, which is the one batonctl asks.
// No bound is asserted on the figures: that is the benchmark's job.
TEST(LoopLag, TheOldGenerationsLoopCostOfTheUpgradeIsInTheNewOnesStatus) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--upgrade-probation", "0.2", "--drain",
                                 "handoff"});
  auto load = LoadRun::start("tcp://" + d.address(), {"--connections", "4", "--rate", "100"});
  auto first = nlohmann::json::parse(batonctl(d, {"status", "--json"}).out, nullptr, false);
  ASSERT_TRUE(first.is_object());
  for (const char* k : {"last", "max", "p99", "blocked_max", "blocked_p99"})
    EXPECT_TRUE(first["loop_lag_ms"][k].is_number()) << k << ": " << first["loop_lag_ms"];
  EXPECT_TRUE(first["loop_lag_ms"]["last_upgrade"].is_null()) << "no upgrade yet: " << first["loop_lag_ms"];
  const pid_t old = d.serving_pid();
  auto r = d.upgrade();
  ASSERT_TRUE(r.ok) << r.line << "\n" << d.log();
  ASSERT_TRUE(d.wait_gone(old));
  nlohmann::json window;
  EXPECT_TRUE(eventually([&] {
    auto j = nlohmann::json::parse(batonctl(d, {"status", "--json"}).out, nullptr, false);
    window = j.is_object() ? j["loop_lag_ms"]["last_upgrade"] : nlohmann::json();
    return window.is_object();
  })) << d.log();
  ASSERT_TRUE(window.is_object());
  EXPECT_EQ(window["pid"].get<pid_t>(), old) << window;
  EXPECT_EQ(window["generation"].get<unsigned>(), 1u) << window;
  // From the request to the end of the hand-off, through a 0.2 s probation: many loop turns.
  EXPECT_GT(window["iterations"].get<uint64_t>(), 1u) << window;
  EXPECT_GE(window["blocked_max"].get<double>(), window["blocked_p99"].get<double>()) << window;
  EXPECT_GE(window["lag_max"].get<double>(), 0.0) << window;
  // The request, the steps, COMMIT, the outcome and the hand-off ran upgrade
  // code, in turns of their own or shared with the service's.
  EXPECT_GE(window["upgrade_turns"].get<uint64_t>(), 3u) << window;
  EXPECT_LE(window["upgrade_turns"].get<uint64_t>(), window["iterations"].get<uint64_t>()) << window;
  EXPECT_LE(window["upgrade_turn_max"].get<double>(), window["blocked_max"].get<double>()) << window;
  EXPECT_LE(window["upgrade_turn_cpu_max"].get<double>(), window["cpu_max"].get<double>()) << window;
  EXPECT_GT(window["cpu_max"].get<double>(), 0.0) << window;
  // The upgrade's own code, timed: within the turns that ran it.
  EXPECT_GT(window["upgrade_work_max"].get<double>(), 0.0) << window;
  EXPECT_LE(window["upgrade_work_max"].get<double>(), window["upgrade_turn_max"].get<double>()) << window;
  EXPECT_GE(window["upgrade_work_max"].get<double>(), window["upgrade_work_p99"].get<double>()) << window;
  EXPECT_LE(window["upgrade_work_cpu_max"].get<double>(), window["upgrade_turn_cpu_max"].get<double>()) << window;
  // Less its wait for a core: within its wall time (null only without schedstat).
  ASSERT_TRUE(window.contains("upgrade_work_held_max")) << window;
  if (!window["upgrade_work_held_max"].is_null())
    EXPECT_LE(window["upgrade_work_held_max"].get<double>(), window["upgrade_work_max"].get<double>()) << window;
  EXPECT_EQ(load.stop().failures, 0);
}

// Each handed-off connection's stop (read by neither process) is measured by
// the old generation and shown by the new one's status.
TEST(HandoffStop, EachHandedOffConnectionsStopIsInTheNewGenerationsStatus) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--upgrade-probation", "0.2", "--drain",
                                 "handoff"});
  std::vector<UniqueFd> held;
  for (int i = 0; i < 5; ++i) {
    held.push_back(connect_to(d.address()));
    ASSERT_TRUE(held.back() && echo_roundtrip(held.back().get(), "before")) << d.log();
  }
  auto status = [&] { return nlohmann::json::parse(batonctl(d, {"status", "--json"}).out, nullptr, false); };
  ASSERT_TRUE(status().contains("handoff_stop_us"));
  EXPECT_TRUE(status()["handoff_stop_us"].is_null()) << "no hand-off yet";
  const pid_t old = d.serving_pid();
  auto r = d.upgrade();
  ASSERT_TRUE(r.ok) << r.line << "\n" << d.log();
  ASSERT_TRUE(d.wait_gone(old)) << d.log();  // it exits once every connection is handed off
  nlohmann::json stops;
  EXPECT_TRUE(eventually([&] {
    stops = status()["handoff_stop_us"];
    return stops.is_object();
  })) << d.log();
  ASSERT_TRUE(stops.is_object());
  EXPECT_EQ(stops["pid"].get<pid_t>(), old) << stops;
  EXPECT_EQ(stops["generation"].get<unsigned>(), 1u) << stops;
  EXPECT_EQ(stops["count"].get<size_t>(), 5u) << stops;
  EXPECT_EQ(stops["samples"].size(), 5u) << stops;
  EXPECT_GT(stops["max"].get<int64_t>(), 0) << stops;
  EXPECT_LE(stops["p50"].get<int64_t>(), stops["p99"].get<int64_t>()) << stops;
  EXPECT_LE(stops["p99"].get<int64_t>(), stops["max"].get<int64_t>()) << stops;
  for (auto& fd : held) EXPECT_TRUE(echo_roundtrip(fd.get(), "after")) << d.log();
}

TEST(History, AFailedUpgradeIsRecordedWithItsCauseAndCounted) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0", "--metrics", "tcp://127.0.0.1:0"});
  auto r = batonctl(d, {"upgrade", "--binary", "/bin/false"});
  EXPECT_EQ(r.status.code, 1) << r.out;
  auto history = nlohmann::json::parse(batonctl(d, {"history", "--json"}).out, nullptr, false);
  ASSERT_EQ(history.size(), 1u) << history.dump(2);
  EXPECT_EQ(history[0]["outcome"], "failed");
  EXPECT_EQ(history[0]["trigger"], "batonctl");
  EXPECT_NE(history[0]["error"].get<std::string>().find("exit status 1"), std::string::npos) << history.dump(2);
  auto s = scrape(d.address("metrics"));
  ASSERT_TRUE(s.ok) << s.error;
  EXPECT_EQ(sample(s.body, "baton_upgrades_total{outcome=\"failed\"}"), 1) << s.body;
  EXPECT_EQ(sample(s.body, "baton_upgrades_total{outcome=\"ok\"}"), 0) << s.body;
}

TEST(Metrics, AnAddressThatIsNotTcpIsAUsageErrorAndABadConfigIsRejected) {
  TempDir dir;
  auto r = run_command({batond_path(), "--metrics", "unix:/tmp/x.sock"});
  EXPECT_EQ(r.status.code, 2);
  EXPECT_NE(r.err.find("--metrics 'unix:/tmp/x.sock' is not a tcp:// address"), std::string::npos) << r.err;
  const auto conf = dir.file("batond.toml");
  for (const std::string body : {"[metrics]\nlisten = \"unix:/tmp/x.sock\"\n", "[metrics]\nport = 9100\n",
                                  "metrics = \"tcp://127.0.0.1:9100\"\n", "[listeners]\nmetrics = \"tcp://127.0.0.1:0\"\n"}) {
    std::ofstream(conf) << body;
    auto c = run_command({batond_path(), "--check-config", conf});
    EXPECT_EQ(c.status.code, 1) << body;
    EXPECT_NE(c.err.find("metrics"), std::string::npos) << body << c.err;
  }
}

}  // namespace
}  // namespace baton::test
