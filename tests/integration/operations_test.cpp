// Operating batond: the config file and its reload, systemd notification
// (with a fake NOTIFY_SOCKET) and socket activation (LISTEN_FDS).

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "baton/handoff/listen_address.h"
#include "baton/handoff/listener_socket.h"
#include "support/batond.h"
#include "support/client.h"
#include "support/fake_notify_socket.h"

namespace baton::test {
namespace {

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

CommandResult batonctl(const BatondProcess& d, std::vector<std::string> args) {
  args.insert(args.begin(), {batonctl_path(), "--control", d.control_path()});
  return run_command(args, 60s);
}

TEST(ConfigFile, ListenersAndSettingsComeFromTheFileFlagsOverrideThem) {
  TempDir dir;
  const auto conf = dir.file("batond.toml");
  write_file(conf, "max_connections = 7\n[listeners]\necho = \"tcp://127.0.0.1:0\"\nlocal = \"unix:" +
                       dir.file("e.sock") + "\"\n[drain]\nmode = \"handoff\"\ntimeout = 5\n");
  auto d = BatondProcess::start({"--config", conf, "--max-connections", "9"});
  EXPECT_TRUE(d.wait_for_line(d.first_pid(), "max 9 connections")) << d.log();  // the flag wins
  auto tcp = connect_to(d.address("echo"));
  auto unix_conn = connect_to(dir.file("e.sock"));
  EXPECT_TRUE(tcp && echo_roundtrip(tcp.get(), "from the file"));
  EXPECT_TRUE(unix_conn && echo_roundtrip(unix_conn.get(), "unix too"));
}

TEST(ConfigFile, CheckConfigNamesFileLineAndKey) {
  TempDir dir;
  const auto good = dir.file("good.toml");
  write_file(good, "[listeners]\necho = \"tcp://127.0.0.1:7000\"\n");
  auto ok = run_command({batond_path(), "--check-config", good});
  EXPECT_EQ(ok.status.code, 0) << ok.err;
  EXPECT_NE(ok.out.find(good + ": ok"), std::string::npos);

  struct Case {
    std::string text, error;
  };
  for (const auto& c : std::vector<Case>{
           {"[drain]\nmode = \"later\"\n", ":2: drain.mode: must be \"wait\" or \"handoff\""},
           {"[listeners]\necho = \"tcp://127.0.0.1:99999\"\n", ":2: listeners.echo: port '99999' out of range"},
           {"max_conections = 5\n", ":1: max_conections: unknown key"},
           {"[upgrade]\ntimeout = \"soon\"\n", ":2: upgrade.timeout: must be a number"},
           {"this is not toml\n", ":1: "},
       }) {
    const auto bad = dir.file("bad.toml");
    write_file(bad, c.text);
    auto r = run_command({batond_path(), "--check-config", bad});
    EXPECT_EQ(r.status.code, 1) << c.text;
    EXPECT_NE(r.err.find(bad + c.error), std::string::npos) << r.err;
  }
  auto missing = run_command({batond_path(), "--check-config", dir.file("nope.toml")});
  EXPECT_EQ(missing.status.code, 1);
  EXPECT_NE(missing.err.find("No such file or directory"), std::string::npos) << missing.err;
}

TEST(ConfigFile, ReloadAppliesLiveSettingsAndRejectsABadFile) {
  TempDir dir;
  const auto conf = dir.file("batond.toml");
  write_file(conf, "log_level = \"info\"\n[listeners]\necho = \"tcp://127.0.0.1:0\"\n");
  auto d = BatondProcess::start({"--config", conf});
  const pid_t pid = d.first_pid();
  ASSERT_EQ(d.count_lines(pid, "debug batond"), 0);

  write_file(conf, "log_level = \"debug\"\n[listeners]\necho = \"tcp://127.0.0.1:0\"\n");
  auto r = batonctl(d, {"reload"});
  EXPECT_EQ(r.status.code, 0) << r.err;
  EXPECT_NE(r.out.find("applied now: log_level=debug"), std::string::npos) << r.out;
  batonctl(d, {"status"});  // control connections are logged at debug level
  EXPECT_TRUE(d.wait_for_line(pid, "debug batond")) << "log level did not change\n" << d.log();

  write_file(conf, "log_level = \"loud\"\n");
  r = batonctl(d, {"reload"});
  EXPECT_EQ(r.status.code, 1);
  EXPECT_NE(r.err.find(conf + ":1: log_level: must be one of"), std::string::npos) << r.err;
  EXPECT_TRUE(d.wait_for_line(pid, "reload (batonctl) rejected, the running configuration stays"));
  auto conn = connect_to(d.address());
  EXPECT_TRUE(conn && echo_roundtrip(conn.get(), "still serving"));

  // SIGHUP is the same reload.
  write_file(conf, "log_level = \"info\"\n[listeners]\necho = \"tcp://127.0.0.1:0\"\n");
  d.signal_serving(SIGHUP);
  EXPECT_TRUE(d.wait_for_line(pid, "reload (SIGHUP)")) << d.log();
}

TEST(ConfigFile, AListenerAddedToTheFileIsServedAfterTheNextUpgrade) {
  TempDir dir;
  const auto conf = dir.file("batond.toml");
  write_file(conf, "[listeners]\necho = \"tcp://127.0.0.1:0\"\n");
  auto d = BatondProcess::start({"--config", conf});
  write_file(conf, "[listeners]\necho = \"tcp://127.0.0.1:0\"\nextra = \"unix:" + dir.file("extra.sock") + "\"\n");
  auto r = batonctl(d, {"reload"});
  EXPECT_NE(r.out.find("at the next upgrade: listeners"), std::string::npos) << r.out;
  EXPECT_FALSE(connect_to(dir.file("extra.sock"))) << "a listener must not appear before the upgrade";
  const auto echo_addr = d.address("echo");
  auto up = d.upgrade();
  ASSERT_TRUE(up.ok) << d.log();
  EXPECT_TRUE(d.wait_for_line(up.new_pid, "listening name=extra")) << d.log();
  auto extra = connect_to(dir.file("extra.sock"));
  EXPECT_TRUE(extra && echo_roundtrip(extra.get(), "new listener"));
  EXPECT_EQ(d.address("echo"), echo_addr) << "the existing listener must be inherited, same port";
}

TEST(Systemd, NotifiesReadyMainPidReloadingAndStoppingInOrder) {
  TempDir dir;
  FakeNotifySocket systemd(dir.file("notify"));
  const auto conf = dir.file("batond.toml");
  write_file(conf, "[listeners]\necho = \"tcp://127.0.0.1:0\"\n");
  auto d = BatondProcess::start({"--config", conf}, with_env({"NOTIFY_SOCKET=" + systemd.path()}));
  ASSERT_TRUE(systemd.wait_for("READY=1")) << systemd.all();
  EXPECT_NE(systemd.all().find("STATUS=serving: generation 1"), std::string::npos) << systemd.all();

  auto up = d.upgrade();
  ASSERT_TRUE(up.ok);
  ASSERT_TRUE(systemd.wait_for("MAINPID=" + std::to_string(up.new_pid))) << systemd.all();
  ASSERT_TRUE(systemd.wait_for("STATUS=serving: generation 2")) << systemd.all();
  EXPECT_TRUE(d.wait_gone(d.first_pid()));

  ASSERT_EQ(batonctl(d, {"reload"}).status.code, 0);
  ASSERT_TRUE(systemd.wait_for("configuration reloaded")) << systemd.all();
  const int reloading = systemd.index_of("RELOADING=1");
  ASSERT_GE(reloading, 0) << systemd.all();
  EXPECT_NE(systemd.all().find("MONOTONIC_USEC="), std::string::npos);
  EXPECT_GT(systemd.index_of("configuration reloaded"), reloading);

  d.signal_serving(SIGTERM);
  ASSERT_TRUE(systemd.wait_for("STOPPING=1")) << systemd.all();
  // The whole story, in order.
  EXPECT_LT(systemd.index_of("STATUS=serving: generation 1"), systemd.index_of("MAINPID="));
  EXPECT_LT(systemd.index_of("MAINPID="), systemd.index_of("RELOADING=1"));
  EXPECT_LT(systemd.index_of("RELOADING=1"), systemd.index_of("STOPPING=1"));
}

TEST(Systemd, WithoutNotifySocketNothingIsSentAndAllWorks) {
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"}, with_env({"NOTIFY_SOCKET="}));
  EXPECT_EQ(d.count_lines(d.first_pid(), "sd_notify"), 0);
  auto conn = connect_to(d.address());
  EXPECT_TRUE(conn && echo_roundtrip(conn.get(), "ok"));
}

TEST(Systemd, SocketActivatedListenerIsServedAndSurvivesAnUpgrade) {
  auto listener = handoff::bind_listener(*handoff::ListenAddress::parse("tcp://127.0.0.1:0"), 64);
  ASSERT_TRUE(listener);
  const auto addr = handoff::local_address(listener->get())->endpoint();
  ProcessOptions opts;
  opts.fd3 = listener->get();
  opts.listen_pid = true;
  opts.extra_env = {"LISTEN_FDS=1", "LISTEN_FDNAMES=echo"};
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"}, opts);
  listener->reset();  // only batond holds it now
  EXPECT_TRUE(d.wait_for_line(d.first_pid(), "socket activation: listener 'echo' on tcp://" + addr)) << d.log();
  EXPECT_EQ(d.address(), addr);
  auto conn = connect_to(addr);
  ASSERT_TRUE(conn && echo_roundtrip(conn.get(), "activated"));

  auto up = d.upgrade();
  ASSERT_TRUE(up.ok) << d.log();
  EXPECT_TRUE(d.wait_for_line(up.new_pid, "listening name=echo addr=" + addr + " inherited=yes"));
  EXPECT_EQ(d.count_lines(up.new_pid, "socket activation"), 0) << "the variables must not reach the new generation";
  auto after = connect_to(addr);
  EXPECT_TRUE(after && echo_roundtrip(after.get(), "after the upgrade"));
}

// Without --listen, every socket systemd passes is served under its
// FileDescriptorName, and the next generation serves the same ones.
TEST(Systemd, WithoutListenEverySocketSystemdPassesIsServedUnderItsName) {
  auto web = handoff::bind_listener(*handoff::ListenAddress::parse("tcp://127.0.0.1:0"), 64);
  auto api = handoff::bind_listener(*handoff::ListenAddress::parse("tcp://127.0.0.1:0"), 64);
  ASSERT_TRUE(web && api);
  const auto web_addr = handoff::local_address(web->get())->endpoint();
  const auto api_addr = handoff::local_address(api->get())->endpoint();
  ProcessOptions opts;  // as systemd passes them: fds 3 and 4, named in order
  opts.fd3 = web->get();
  opts.fd4 = api->get();
  opts.listen_pid = true;
  opts.extra_env = {"LISTEN_FDS=2", "LISTEN_FDNAMES=web:api"};
  auto d = BatondProcess::start({}, opts);
  web->reset();
  api->reset();
  EXPECT_EQ(d.address("web"), web_addr);
  EXPECT_EQ(d.address("api"), api_addr);
  EXPECT_EQ(d.count_lines(d.first_pid(), "name=tcp://127.0.0.1:7000"), 0) << "the default must not be bound";
  for (const auto& addr : {web_addr, api_addr}) {
    auto c = connect_to(addr);
    EXPECT_TRUE(c && echo_roundtrip(c.get(), "activated " + addr));
  }
  auto up = d.upgrade();
  ASSERT_TRUE(up.ok) << d.log();
  EXPECT_TRUE(d.wait_for_line(up.new_pid, "listening name=web addr=" + web_addr + " inherited=yes")) << d.log();
  EXPECT_TRUE(d.wait_for_line(up.new_pid, "listening name=api addr=" + api_addr + " inherited=yes")) << d.log();
  auto after = connect_to(api_addr);
  EXPECT_TRUE(after && echo_roundtrip(after.get(), "after the upgrade"));
}

// A socket named "control" among those systemd passes (a unit that
// activates the control socket too) is the control listener, matched
// against --control like any other, not a second listener of that name.
TEST(Systemd, AnActivatedSocketNamedControlIsTheControlListener) {
  TempDir dir;
  const auto ctl = dir.file("ctl.sock");
  auto web = handoff::bind_listener(*handoff::ListenAddress::parse("tcp://127.0.0.1:0"), 64);
  auto control = handoff::bind_listener(*handoff::ListenAddress::parse("unix:" + ctl), 16);
  ASSERT_TRUE(web && control);
  const auto web_addr = handoff::local_address(web->get())->endpoint();
  ProcessOptions opts;
  opts.fd3 = web->get();
  opts.fd4 = control->get();
  opts.listen_pid = true;
  opts.extra_env = {"LISTEN_FDS=2", "LISTEN_FDNAMES=web:control"};
  auto d = BatondProcess::start({"--control", ctl}, opts);
  web->reset();
  control->reset();
  EXPECT_TRUE(d.wait_for_line(d.first_pid(), "socket activation: listener 'control' on unix:" + ctl)) << d.log();
  auto c = connect_to(web_addr);
  EXPECT_TRUE(c && echo_roundtrip(c.get(), "activated web"));
  auto st = batonctl(d, {"status", "--json"});
  EXPECT_EQ(st.status.code, 0) << st.out << st.err << d.log();
}

// With --listen, a socket systemd passes that no --listen names would be
// held open by systemd with clients queued on it that nobody accepts: a
// start-up error (exit 2) naming it.
TEST(Systemd, ASocketMatchingNoListenIsAStartupErrorNamingIt) {
  auto stray = handoff::bind_listener(*handoff::ListenAddress::parse("tcp://127.0.0.1:0"), 64);
  ASSERT_TRUE(stray);
  ProcessOptions opts;
  opts.fd3 = stray->get();
  opts.listen_pid = true;
  opts.extra_env = {"LISTEN_FDS=1", "LISTEN_FDNAMES=stray"};
  auto d = BatondProcess::launch({"--listen", "echo=tcp://127.0.0.1:0"}, opts);
  auto status = d.process().wait_exit(10s);
  ASSERT_TRUE(status) << d.log();
  EXPECT_TRUE(status->exited && status->code == 2) << status->describe() << "\n" << d.log();
  EXPECT_TRUE(d.process().wait_for_line("fd 3 named 'stray'", 1s)) << d.log();
  EXPECT_TRUE(d.process().wait_for_line("matches no configured listener", 1s)) << d.log();
}

// batond reads LISTEN_FDS itself (no libsystemd): names that do not match the
// count, or a count that is not one, stop the start with a clear error, as
// an fd that is not open does; LISTEN_PID of another process is ignored.
TEST(Systemd, MalformedSocketActivationVariablesAreAStartupError) {
  auto listener = handoff::bind_listener(*handoff::ListenAddress::parse("tcp://127.0.0.1:0"), 64);
  ASSERT_TRUE(listener);
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"LISTEN_FDS=1", "LISTEN_FDNAMES=a:b"}, "LISTEN_FDNAMES names 2 fd(s), LISTEN_FDS says 1"},
      {{"LISTEN_FDS=one", "LISTEN_FDNAMES=a"}, "LISTEN_FDS='one' is not a number of fds"},
      {{"LISTEN_FDS=2", "LISTEN_FDNAMES=echo:gone"}, "fd 4 of LISTEN_FDS=2: Bad file descriptor"},
  };
  for (const auto& [env, error] : cases) {
    ProcessOptions opts;
    opts.fd3 = listener->get();
    opts.listen_pid = true;
    opts.extra_env = env;
    auto d = BatondProcess::launch({"--listen", "echo=tcp://127.0.0.1:0"}, opts);
    auto status = d.process().wait_exit(10s);
    ASSERT_TRUE(status) << d.log();
    EXPECT_TRUE(status->exited && status->code == 2) << status->describe() << "\n" << d.log();
    EXPECT_TRUE(d.process().wait_for_line(error, 1s)) << error << "\n" << d.log();
  }
  // For another process: not ours to take; batond binds its own listener.
  ProcessOptions other;
  other.fd3 = listener->get();
  other.extra_env = {"LISTEN_PID=1", "LISTEN_FDS=1", "LISTEN_FDNAMES=echo"};
  auto d = BatondProcess::start({"--listen", "echo=tcp://127.0.0.1:0"}, other);
  EXPECT_NE(d.address(), handoff::local_address(listener->get())->endpoint());
  EXPECT_EQ(d.count_lines(d.first_pid(), "socket activation"), 0) << d.log();
  auto conn = connect_to(d.address());
  EXPECT_TRUE(conn && echo_roundtrip(conn.get(), "own listener"));
}

}  // namespace
}  // namespace baton::test

namespace baton::test {
namespace {

TEST(ConfigFile, APidFileMovedInTheFileIsWrittenByTheNextGeneration) {
  TempDir dir;
  const auto conf = dir.file("batond.toml");
  write_file(conf, "pid_file = \"" + dir.file("old.pid") + "\"\n[listeners]\necho = \"tcp://127.0.0.1:0\"\n");
  auto d = BatondProcess::start({"--config", conf});
  EXPECT_EQ(read_pid_file(dir.file("old.pid")), d.first_pid());
  write_file(conf, "pid_file = \"" + dir.file("new.pid") + "\"\n[listeners]\necho = \"tcp://127.0.0.1:0\"\n");
  auto up = d.upgrade();
  ASSERT_TRUE(up.ok) << d.log();
  EXPECT_TRUE(eventually([&] { return read_pid_file(dir.file("new.pid")) == up.new_pid; }));
}

// --log-format json: every line of every generation (they share stderr) is
// one JSON object with a microsecond timestamp, the level, pid, generation
// and message; what tools read instead of the wording.
TEST(Logs, JsonFormatIsOneObjectPerLineFromEveryGeneration) {
  TempDir dir;
  const std::string control = dir.file("ctl.sock");
  auto first = TestProcess::start({batond_path(), "--listen", "echo=tcp://127.0.0.1:0", "--control", control,
                                   "--log-format", "json", "--upgrade-probation", "0.2"});
  auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {batonctl_path(), "--control", control});
    return run_command(args);
  };
  ASSERT_TRUE(eventually([&] { return ctl({"status", "--json"}).status.success(); })) << first.log();
  auto up = ctl({"upgrade"});
  ASSERT_TRUE(up.status.success()) << up.err << first.log();
  auto status = nlohmann::json::parse(ctl({"status", "--json"}).out, nullptr, false);
  ASSERT_TRUE(status.is_object());
  const pid_t second = status["pid"].get<pid_t>();
  first.track_descendant(second);
  ASSERT_TRUE(wait_pid_gone(first.pid(), 15s)) << first.log();
  ::kill(second, SIGTERM);
  ASSERT_TRUE(eventually([&] { return !pid_alive(second); }, 15s));
  reap_zombies();

  std::istringstream in(first.log());
  std::map<pid_t, int64_t> last_us;  // per process, time never goes back
  std::set<unsigned> generations;
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << "not JSON: " << line;
    ASSERT_TRUE(j["ts_us"].is_number_integer() && j["level"].is_string() && j["pid"].is_number_integer() &&
                j["gen"].is_number_integer() && j["msg"].is_string())
        << line;
    const pid_t pid = j["pid"].get<pid_t>();
    EXPECT_TRUE(pid == first.pid() || pid == second) << line;
    EXPECT_GE(j["ts_us"].get<int64_t>(), last_us[pid]) << line;
    last_us[pid] = j["ts_us"].get<int64_t>();
    generations.insert(j["gen"].get<unsigned>());
  }
  EXPECT_GT(lines, 5);
  EXPECT_EQ(generations, (std::set<unsigned>{1, 2}));
  const auto now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch()).count();
  EXPECT_LE(now_us - last_us[second], 60'000'000) << "ts_us is not microseconds since the epoch";
}

// The text format's timestamps carry microseconds; a JOURNAL_STREAM that
// names another file (leaked from a parent shell) is not the journal.
TEST(Logs, TextTimestampsCarryMicroseconds) {
  auto d = BatondProcess::start({"--listen", "tcp://127.0.0.1:0"}, with_env({"JOURNAL_STREAM=1:1"}));
  std::istringstream in(d.log());
  std::string first_line;
  std::getline(in, first_line);
  EXPECT_TRUE(std::regex_search(first_line, std::regex("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6} ")))
      << first_line;
}

// Under journald (JOURNAL_STREAM names stderr's device and inode) every
// line starts with its syslog priority, in both formats, and has no
// timestamp of batond's own; the JSON after it parses. A JOURNAL_STREAM that
// names another file (leaked from a parent) changes nothing.
TEST(Logs, UnderJournaldEveryLineStartsWithItsPriorityInBothFormats) {
  for (const bool json : {false, true}) {
    TempDir dir;
    const std::string log = dir.file("journal"), control = dir.file("ctl.sock");
    write_file(log, "");
    struct stat st {};
    ASSERT_EQ(::stat(log.c_str(), &st), 0);
    TestProcess::Options options;
    options.log_path = log;
    options.extra_env = {"JOURNAL_STREAM=" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino)};
    std::vector<std::string> args{batond_path(), "--listen", "echo=tcp://127.0.0.1:0", "--control", control};
    if (json) args.insert(args.end(), {"--log-format", "json"});
    auto d = TestProcess::start(args, options);
    ASSERT_TRUE(eventually([&] {
      return run_command({batonctl_path(), "--control", control, "status"}).status.success();
    })) << d.log();
    // A warning: an upgrade to a binary that does not exist is refused.
    run_command({batonctl_path(), "--control", control, "upgrade", "--binary", dir.file("missing")});
    d.signal(SIGTERM);
    ASSERT_TRUE(d.wait_exit(15s));
    std::istringstream in(d.log());
    int lines = 0, warnings = 0;
    for (std::string line; std::getline(in, line); ++lines) {
      std::smatch m;
      ASSERT_TRUE(std::regex_search(line, m, std::regex("^<([0-7])>"))) << line;
      const std::string rest = line.substr(3);
      if (json) {
        auto j = nlohmann::json::parse(rest, nullptr, false);
        ASSERT_TRUE(j.is_object()) << line;
        const std::string level = j["level"];
        EXPECT_EQ(m[1], level == "info" ? "6" : level == "warning" ? "4" : level == "error" ? "3" : m[1].str()) << line;
        warnings += m[1] == "4" || m[1] == "3";
      } else {
        EXPECT_TRUE(rest.starts_with("info ") || rest.starts_with("warning ") || rest.starts_with("error ") ||
                    rest.starts_with("critical ") || rest.starts_with("debug "))
            << "a timestamp of batond's own under journald: " << line;
        warnings += m[1] == "4" || m[1] == "3";
      }
    }
    EXPECT_GT(lines, 3);
    EXPECT_GT(warnings, 0) << d.log();
  }
}

}  // namespace
}  // namespace baton::test
