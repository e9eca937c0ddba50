// The metrics' parts without a daemon: counters that merge across
// generations, the exposition text, the flight recorder's merge, and the
// /metrics request parser.

#include <gtest/gtest.h>

#include <string>

#include "counters.h"
#include "flight_recorder.h"
#include "handoff_stops.h"
#include "metrics_exposition.h"
#include "metrics_http.h"

namespace baton::daemon {
namespace {

const std::string kAccepted = Counters::series("baton_connections_accepted_total");
const std::string kClosedClient = Counters::series("baton_connections_closed_total", "reason", "client");

TEST(Counters, RaiseToKeepsTheHighestOfEachSeriesAndPlusAdds) {
  Counters inherited;
  inherited.add(kAccepted, 10);
  Counters late;  // an older report arriving after a newer one
  late.add(kAccepted, 7);
  late.add(kClosedClient, 3);
  inherited.raise_to(late);
  EXPECT_EQ(inherited.value(kAccepted), 10u);
  EXPECT_EQ(inherited.value(kClosedClient), 3u);
  Counters own;
  own.add(kAccepted, 5);
  EXPECT_EQ(inherited.plus(own).value(kAccepted), 15u);
  EXPECT_EQ(inherited.value(kAccepted), 10u) << "plus leaves its operand alone";
}

TEST(Counters, SurviveJsonExactlyAndRefuseAnythingElse) {
  Counters c;
  c.add(kAccepted, (uint64_t{1} << 62) + 1);  // beyond a double's exact range
  c.add(Counters::series("x_total", "why", "a\"b\\c\nd"), 1);
  auto back = Counters::from_json(nlohmann::json::parse(c.to_json().dump()));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back.value(), c);
  EXPECT_EQ(Counters::series("x_total", "why", "a\"b\\c\nd"), "x_total{why=\"a\\\"b\\\\c\\nd\"}");
  for (const char* bad : {"[]", "{\"a\":-1}", "{\"a\":1.5}", "{\"a\":\"1\"}", "{\"\":1}", "3"}) {
    SCOPED_TRACE(bad);
    EXPECT_FALSE(Counters::from_json(nlohmann::json::parse(bad)).ok());
  }
}

TEST(Exposition, EachFamilyOnceWithHelpAndTypeAndTheHistogramInOrder) {
  Counters c;
  c.add(kAccepted, 3);
  c.add(Counters::series("baton_unknown_total"), 1);  // a newer generation's: skipped
  observe_upgrade_duration(c, 0.3);
  observe_upgrade_duration(c, 12);
  const auto text = render_exposition(c, {{"baton_generation", 4}});
  EXPECT_NE(text.find("# HELP baton_connections_accepted_total "), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE baton_connections_accepted_total counter\nbaton_connections_accepted_total 3\n"),
            std::string::npos) << text;
  EXPECT_EQ(text.find("baton_unknown_total"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE baton_generation gauge\nbaton_generation 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("baton_upgrade_duration_seconds_bucket{le=\"0.25\"} 0\n"
                      "baton_upgrade_duration_seconds_bucket{le=\"0.5\"} 1\n"),
            std::string::npos) << text;
  EXPECT_NE(text.find("baton_upgrade_duration_seconds_bucket{le=\"10\"} 1\n"
                      "baton_upgrade_duration_seconds_bucket{le=\"30\"} 2\n"
                      "baton_upgrade_duration_seconds_bucket{le=\"+Inf\"} 2\n"
                      "baton_upgrade_duration_seconds_sum 12.3\n"
                      "baton_upgrade_duration_seconds_count 2\n"),
            std::string::npos) << text;
  // Families with no sample are left out entirely.
  EXPECT_EQ(text.find("baton_app_ready"), std::string::npos) << text;
}

TEST(HandoffStops, NearestRankPercentilesAndAtMostAThousandSamplesWithBothEnds) {
  EXPECT_TRUE(summarize_handoff_stops({}).is_null());
  std::vector<std::chrono::microseconds> stops;
  for (int i = 2000; i >= 1; --i) stops.emplace_back(i);  // unsorted on purpose
  auto s = summarize_handoff_stops(stops);
  EXPECT_EQ(s["count"], 2000);
  EXPECT_EQ(s["p50"], 1000);
  EXPECT_EQ(s["p90"], 1800);
  EXPECT_EQ(s["p99"], 1980);
  EXPECT_EQ(s["max"], 2000);
  ASSERT_EQ(s["samples"].size(), kHandoffStopSamples);
  EXPECT_EQ(s["samples"].front(), 1);
  EXPECT_EQ(s["samples"].back(), 2000);
  auto one = summarize_handoff_stops({std::chrono::microseconds(7)});
  EXPECT_EQ(one["p50"], 7);
  EXPECT_EQ(one["max"], 7);
  EXPECT_EQ(one["samples"], nlohmann::json::array({7}));
  EXPECT_EQ(describe_handoff_stops(s), "p50 1.00 ms, p99 1.98 ms, max 2.00 ms over 2000 connection(s)");
}

TEST(FlightRecorder, MergesRecordsByIdKeepingTheFirstTimeOfEachEvent) {
  FlightRecorder old_side;
  const auto id = old_side.begin("upgrade", "SIGUSR2", 100, 1);
  old_side.set_to_pid(id, 101);
  old_side.event(id, "spawned", "", 2000);
  old_side.event(id, "spawned", "", 3000);  // the first counts
  FlightRecorder new_side;
  ASSERT_TRUE(new_side.merge(old_side.to_json()).ok());
  EXPECT_EQ(new_side.upgrade_to(101), id);
  new_side.event(id, "commit_received", "", 5000);
  old_side.event(id, "commit_sent", "", 4000);
  old_side.finish(id, true);
  ASSERT_TRUE(new_side.merge(old_side.to_json()).ok());  // a later report: adds what was missing
  ASSERT_EQ(new_side.records().size(), 1u);
  const auto& r = new_side.records().front();
  EXPECT_EQ(r.outcome, "ok");
  ASSERT_TRUE(r.find("spawned"));
  EXPECT_EQ(r.find("spawned")->at_us, 2000);
  ASSERT_TRUE(r.find("commit_sent") && r.find("commit_received"));
  // In time order.
  for (size_t i = 1; i < r.events.size(); ++i) EXPECT_LE(r.events[i - 1].at_us, r.events[i].at_us);
}

// to_text keeps each record's text until the record changes: never stale.
TEST(FlightRecorder, TextIsTheJsonAfterEveryKindOfChange) {
  const auto text_matches = [](const FlightRecorder& h, size_t last) {
    return h.to_text(last) == h.to_json(last).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  FlightRecorder h;
  EXPECT_EQ(h.to_text(), "[]");
  const auto a = h.begin("upgrade", "SIGUSR2", 100, 1);
  EXPECT_TRUE(text_matches(h, 0));
  h.event(a, "spawned", "bad utf-8 \xff", 2000);
  EXPECT_TRUE(text_matches(h, 0));
  h.set_to_pid(a, 101);
  EXPECT_TRUE(text_matches(h, 0));
  h.finish(a, false, "it died");
  EXPECT_TRUE(text_matches(h, 0));
  FlightRecorder other;
  ASSERT_TRUE(other.merge(h.to_json()).ok());
  other.event(a, "old_exited", "", 9000);
  const auto b = other.begin("restart", "SIGHUP", 200, 1);
  ASSERT_TRUE(h.merge(other.to_json()).ok());  // changes a cached record and adds one
  EXPECT_TRUE(text_matches(h, 0));
  EXPECT_TRUE(h.records().front().find("old_exited"));
  h.event(b, "spawned");
  EXPECT_TRUE(text_matches(h, 1));
  for (int i = 0; i < 40; ++i) {  // the cached ones scroll out
    h.begin("upgrade", "batonctl", 300 + i, 2);
    EXPECT_TRUE(text_matches(h, i % 2 ? 0 : 8)) << i;
  }
}

// A new generation serialises what it received one record at a time, ahead.
TEST(FlightRecorder, WarmsOneRecordAtATimeUntilEveryTextIsKept) {
  FlightRecorder old_side;
  for (int i = 0; i < 3; ++i) old_side.event(old_side.begin("upgrade", "batonctl", 100 + i, 1), "spawned");
  FlightRecorder h;
  ASSERT_TRUE(h.merge(old_side.to_json()).ok());
  int warmed = 0;
  while (h.warm_one()) ++warmed;
  EXPECT_EQ(warmed, 3);
  EXPECT_FALSE(h.warm_one());
  h.event(h.records().back().id, "hello");  // one changes: only it is made again
  EXPECT_TRUE(h.warm_one());
  EXPECT_FALSE(h.warm_one());
  EXPECT_EQ(h.to_text(), h.to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

TEST(FlightRecorder, KeepsTheLatestThirtyTwoAndRefusesAMalformedDocumentWhole) {
  FlightRecorder h;
  for (int i = 0; i < 40; ++i) h.begin("upgrade", "batonctl", 100 + i, 1);
  ASSERT_EQ(h.records().size(), FlightRecorder::kCapacity);
  EXPECT_EQ(h.records().front().from_pid, 108);
  EXPECT_EQ(h.to_json(8).size(), 8u);
  const auto before = h.to_json();
  auto good = h.to_json(1);
  good[0]["id"] = "other";
  auto doc = nlohmann::json::array({good[0], {{"id", "x"}}});  // the second lacks everything
  EXPECT_FALSE(h.merge(doc).ok());
  EXPECT_EQ(h.to_json(), before) << "nothing merged";
  EXPECT_FALSE(h.merge(nlohmann::json::object()).ok());
}

TEST(MetricsRequest, OnlyACompleteGetOfMetricsGetsTheMetrics) {
  struct Case {
    std::string request;
    int status;
  };
  for (const auto& c : std::vector<Case>{
           {"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200},
           {"GET /metrics?x=1 HTTP/1.0\r\n\r\n", 200},
           {"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200},
           {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 404},
           {"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nab", 405},
           {"GET /metrics HTTP/1.1\r\nHost: x\r\n", 0},  // not complete yet
           {"\x16\x03\x01 not http\r\n\r\n", 400},
           {"GET /metrics HTTP/1.1\r\nX: " + std::string(20000, 'a') + "\r\n\r\n", 400},
       }) {
    SCOPED_TRACE(c.request.substr(0, 40));
    MetricsRequestParser p;
    EXPECT_EQ(p.feed(c.request.data(), c.request.size()).status, c.status);
  }
  // HEAD gets no body, whatever the status.
  for (const std::string r : {"HEAD /metrics HTTP/1.1\r\n\r\n", "HEAD /other HTTP/1.1\r\n\r\n"}) {
    MetricsRequestParser p;
    EXPECT_TRUE(p.feed(r.data(), r.size()).head) << r;
  }
  // Byte by byte, as a slow client sends it.
  MetricsRequestParser p;
  const std::string r = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
  int status = 0;
  for (char ch : r) status = p.feed(&ch, 1).status ?: status;
  EXPECT_EQ(status, 200);
}

}  // namespace
}  // namespace baton::daemon
