// parse_options: batond's command line, from argv arrays.

#include "options.h"

#include <unistd.h>

#include <cstdlib>

#include "config_file.h"
#include "baton/handoff/listen_address.h"

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace baton::daemon {
namespace {

using namespace std::chrono_literals;

ParseOutcome parse(std::vector<std::string> args) {
  args.insert(args.begin(), "batond");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  return parse_options(static_cast<int>(args.size()), argv.data());
}

TEST(Options, Defaults) {
  auto r = parse({});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_EQ(r.exit_code, 0);
  const auto& o = *r.options;
  // None configured: batond serves what systemd passes, else kDefaultListen (decided at start-up).
  EXPECT_TRUE(o.listeners.empty());
  EXPECT_EQ(std::string(kDefaultListen), "tcp://127.0.0.1:7000");
  EXPECT_EQ(o.drain_timeout, 30s);
  EXPECT_EQ(o.upgrade_timeout, 10s);
  EXPECT_EQ(o.upgrade_probation, 1s);
  EXPECT_EQ(o.max_connections, 10000u);
  EXPECT_EQ(o.backlog, 1024);
  EXPECT_EQ(o.log_level, "info");
  EXPECT_EQ(o.pid_file, "");
  EXPECT_EQ(o.binary, "");
}

TEST(Options, RepeatableListenWithNames) {
  auto r = parse({"--listen", "echo=tcp://127.0.0.1:0", "--listen", "unix:/tmp/b.sock", "--listen=v6=tcp://[::1]:9"});
  ASSERT_TRUE(r.options.has_value());
  const auto& l = r.options->listeners;
  ASSERT_EQ(l.size(), 3u);
  EXPECT_EQ(l[0].name, "echo");
  EXPECT_EQ(l[0].address.port, 0);
  EXPECT_EQ(l[1].name, "unix:/tmp/b.sock");
  EXPECT_EQ(l[1].address.path, "/tmp/b.sock");
  EXPECT_EQ(l[2].name, "v6");
  EXPECT_EQ(l[2].address.family, handoff::ListenAddress::Family::Tcp6);
}

TEST(Options, EveryOtherOption) {
  auto r = parse({"--max-connections", "5", "--pid-file", "/run/b.pid", "--log-level", "debug", "--binary",
                  "/usr/local/bin/batond", "--backlog", "7", "--upgrade-timeout", "2"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_EQ(r.options->max_connections, 5u);
  EXPECT_EQ(r.options->pid_file, "/run/b.pid");
  EXPECT_EQ(r.options->log_level, "debug");
  EXPECT_EQ(r.options->binary, "/usr/local/bin/batond");
  EXPECT_EQ(r.options->backlog, 7);
  EXPECT_EQ(r.options->upgrade_timeout, 2s);
}

TEST(Options, LogFormatIsTextByDefaultJsonOnAskingAndNothingElse) {
  using F = baton::daemon::DaemonOptions::LogFormat;
  EXPECT_EQ(parse({}).options->log_format, F::Text);
  EXPECT_EQ(parse({"--log-format", "json"}).options->log_format, F::Json);
  EXPECT_EQ(parse({"--log-format", "text"}).options->log_format, F::Text);
  auto bad = parse({"--log-format", "xml"});
  EXPECT_FALSE(bad.options.has_value());
  EXPECT_EQ(bad.exit_code, 2);
}

TEST(Options, FractionalSecondsBecomeMilliseconds) {
  auto r = parse({"--drain-timeout", "1.5", "--upgrade-timeout", "0.25"});
  ASSERT_TRUE(r.options.has_value());
  EXPECT_EQ(r.options->drain_timeout, 1500ms);
  EXPECT_EQ(r.options->upgrade_timeout, 250ms);
  auto zero = parse({"--drain-timeout", "0"});
  ASSERT_TRUE(zero.options.has_value());
  EXPECT_EQ(zero.options->drain_timeout, 0ms);
}

void expect_usage_error(std::vector<std::string> args) {
  auto r = parse(args);
  EXPECT_FALSE(r.options.has_value());
  EXPECT_EQ(r.exit_code, 2);
}

TEST(Options, BadListenIsAUsageError) {
  expect_usage_error({"--listen", "tcp://localhost:7000"});
  expect_usage_error({"--listen", "tcp://127.0.0.1"});
  expect_usage_error({"--listen", "bad name=tcp://127.0.0.1:1"});
  expect_usage_error({"--listen", "tcp://127.0.0.1:1", "--listen", "nope"});
}

TEST(Options, DuplicateNamesAreAUsageError) {
  expect_usage_error({"--listen", "a=tcp://127.0.0.1:1", "--listen", "a=tcp://127.0.0.1:2"});
  expect_usage_error({"--listen", "tcp://127.0.0.1:1", "--listen", "tcp://127.0.0.1:1"});
  // Two spellings of one address are one default name.
  expect_usage_error({"--listen", "tcp://[::1]:1", "--listen", "tcp://[0::1]:1"});
  // Different names for different addresses are fine.
  auto ok = parse({"--listen", "a=tcp://127.0.0.1:1", "--listen", "b=tcp://127.0.0.1:2"});
  EXPECT_TRUE(ok.options.has_value());
}

TEST(Options, UnknownFlagIsAUsageError) {
  expect_usage_error({"--frobnicate"});
  expect_usage_error({"--listen"});  // missing value
  expect_usage_error({"stray-positional"});
}

TEST(Options, OutOfRangeValuesAreUsageErrors) {
  expect_usage_error({"--drain-timeout", "-1"});
  expect_usage_error({"--drain-timeout", "soon"});
  expect_usage_error({"--upgrade-timeout", "0"});
  expect_usage_error({"--max-connections", "0"});
  expect_usage_error({"--backlog", "0"});
  expect_usage_error({"--log-level", "loud"});
}

TEST(Options, HelpAndVersionExitZeroWithoutOptions) {
  for (const char* flag : {"--help", "--version"}) {
    SCOPED_TRACE(flag);
    auto r = parse({flag});
    EXPECT_FALSE(r.options.has_value());
    EXPECT_EQ(r.exit_code, 0);
  }
}

}  // namespace
}  // namespace baton::daemon

// Found by fuzzing (tests/fuzz/regressions): each was accepted before.
namespace {

std::string write_temp(const std::string& text) {
  char path[] = "/tmp/baton-config-XXXXXX";
  int fd = ::mkstemp(path);
  ::write(fd, text.data(), text.size());
  ::close(fd);
  return path;
}

TEST(ConfigFileRegressions, NanIsNotANumberInRange) {
  for (const char* text : {"backlog = nan\n", "max_connections = nan\n", "[drain]\ntimeout = nan\n",
                           "[upgrade]\ntimeout = -nan\n"}) {
    const auto path = write_temp(text);
    auto r = baton::daemon::load_config_file(path);
    ::unlink(path.c_str());
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_NE(r.error().message.find("must be between"), std::string::npos) << r.error().message;
  }
}

TEST(ConfigFile, LogFormatIsTextOrJsonAndAnythingElseNamesTheKey) {
  const auto good = write_temp("log_format = \"json\"\n");
  auto r = baton::daemon::load_config_file(good);
  ::unlink(good.c_str());
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->log_format, baton::daemon::DaemonOptions::LogFormat::Json);
  const auto bad = write_temp("log_format = \"yaml\"\n");
  auto e = baton::daemon::load_config_file(bad);
  ::unlink(bad.c_str());
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().message.find("log_format"), std::string::npos) << e.error().message;
  EXPECT_NE(e.error().message.find("must be text or json"), std::string::npos) << e.error().message;
}

TEST(ConfigFileRegressions, AListenerKeyIsANameNotPartOfAnAddress) {
  const auto path = write_temp("[listeners]\n\"unix:/tmp/x\" = \"tcp://127.0.0.1:7000\"\n");
  auto r = baton::daemon::load_config_file(path);
  ::unlink(path.c_str());
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->listeners->size(), 1u);
  EXPECT_EQ((*r->listeners)[0].name, "unix:/tmp/x");
  EXPECT_EQ((*r->listeners)[0].address.to_string(), "tcp://127.0.0.1:7000");
}

TEST(ListenSpecRegressions, AnAddressThatCannotNameItsListenerAsksForAName) {
  auto r = baton::handoff::ListenSpec::parse("unix:/tmp/a b.sock");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("give it a name: NAME=ADDR"), std::string::npos) << r.error().message;
  EXPECT_TRUE(baton::handoff::ListenSpec::parse("echo=unix:/tmp/a b.sock").ok());
}

}  // namespace
