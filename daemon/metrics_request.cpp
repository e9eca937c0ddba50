#include "metrics_request.h"

#include <http_parser.h>

namespace baton::daemon {

// ---- the request ---------------------------------------------------------------------------

struct MetricsRequestParser::State {
  http_parser parser{};
  http_parser_settings settings{};
  std::string url;
  size_t header_bytes = 0;
  bool complete = false;
  static constexpr size_t kMaxHead = 16 * 1024;  // a scrape's request is a few hundred bytes
};

MetricsRequestParser::MetricsRequestParser() : state_(std::make_shared<State>()) {
  http_parser_init(&state_->parser, HTTP_REQUEST);
  state_->parser.data = state_.get();
  http_parser_settings_init(&state_->settings);
  state_->settings.on_url = [](http_parser* p, const char* at, size_t len) {
    auto* s = static_cast<State*>(p->data);
    s->url.append(at, len);
    return s->url.size() > State::kMaxHead ? 1 : 0;
  };
  auto count = [](http_parser* p, const char*, size_t len) {
    auto* s = static_cast<State*>(p->data);
    s->header_bytes += len;
    return s->header_bytes > State::kMaxHead ? 1 : 0;
  };
  state_->settings.on_header_field = count;
  state_->settings.on_header_value = count;
  state_->settings.on_message_complete = [](http_parser* p) {
    static_cast<State*>(p->data)->complete = true;
    http_parser_pause(p, 1);  // one request per connection: the rest is not ours to read
    return 0;
  };
}

HttpAnswer MetricsRequestParser::feed(const char* data, size_t len) {
  auto& s = *state_;
  if (s.complete) return {};
  http_parser_execute(&s.parser, &s.settings, data, len);
  const auto err = HTTP_PARSER_ERRNO(&s.parser);
  // A malformed request may still have said HEAD before it went wrong.
  if (!s.complete && err != HPE_OK) return {400, http_errno_name(err), s.parser.method == HTTP_HEAD};
  if (!s.complete) return {};
  http_parser_url u{};
  http_parser_url_init(&u);
  std::string path = s.url;
  if (http_parser_parse_url(s.url.data(), s.url.size(), 0, &u) == 0 && (u.field_set & (1 << UF_PATH)))
    path = s.url.substr(u.field_data[UF_PATH].off, u.field_data[UF_PATH].len);
  const bool head = s.parser.method == HTTP_HEAD;
  if (path != "/metrics") return {404, "not found: only /metrics is served here", head};
  if (s.parser.method != HTTP_GET && !head) return {405, "only GET and HEAD", false};
  return {200, "", head};
}

}  // namespace baton::daemon
