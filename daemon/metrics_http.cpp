#include "metrics_http.h"

#include <spdlog/spdlog.h>

#include "baton/handoff/uv_handle.h"
#include "metrics_exposition.h"

namespace baton::daemon {

// ---- one connection ------------------------------------------------------------------------

class MetricsHttpConnection {
 public:
  MetricsHttpConnection(MetricsHttpConnections& all) : all_(all) {}

  bool open(uv_loop_t* loop, handoff::UniqueFd fd) {
    if (int rc = uv_tcp_init(loop, &tcp_); rc != 0) {
      spdlog::warn("metrics: uv_tcp_init: {}", uv_strerror(rc));
      return false;
    }
    tcp_.data = this;
    all_.open_.insert(this);
    if (int rc = uv_tcp_open(&tcp_, fd.get()); rc != 0) {
      spdlog::warn("metrics: uv_tcp_open: {}", uv_strerror(rc));
      close();  // `fd` still owns the descriptor
      return true;
    }
    fd.release();
    idle_.init(uv_timer_init, loop, this);
    uv_timer_start(idle_.get(), [](uv_timer_t* t) { static_cast<MetricsHttpConnection*>(t->data)->close(); },
                   kIdleMs, 0);
    uv_read_start(stream(), &MetricsHttpConnection::on_alloc, &MetricsHttpConnection::on_read);
    return true;
  }

  void close() {
    if (closing_) return;
    closing_ = true;
    idle_.close();
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), [](uv_handle_t* h) {
      auto* c = static_cast<MetricsHttpConnection*>(h->data);
      c->all_.open_.erase(c);
      delete c;
    });
  }

 private:
  // Prometheus sends its request as it connects: a connection silent this
  // long holds one of the kMaxOpen places for nothing.
  static constexpr uint64_t kIdleMs = 3000;
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }

  static void on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
    auto* c = static_cast<MetricsHttpConnection*>(h->data);
    *buf = uv_buf_init(c->chunk_, sizeof c->chunk_);
  }

  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
    auto* c = static_cast<MetricsHttpConnection*>(s->data);
    if (nread < 0) return c->close();  // the client went before asking
    if (nread == 0 || c->answered_) return;
    auto answer = c->parser_.feed(buf->base, static_cast<size_t>(nread));
    if (answer.status) c->respond(answer);
  }

  void respond(const HttpAnswer& a) {
    answered_ = true;
    uv_read_stop(stream());
    std::string body, type = "text/plain; charset=utf-8";
    if (a.status == 200) {
      body = all_.render_();
      type = kExpositionContentType;
      ++all_.served_;
    } else {
      body = a.reason + "\n";
      spdlog::debug("metrics: answered {}: {}", a.status, a.reason);
    }
    const char* status_text = a.status == 200 ? "OK" : a.status == 404 ? "Not Found" : a.status == 405 ? "Method Not Allowed" : "Bad Request";
    response_ = "HTTP/1.1 " + std::to_string(a.status) + " " + status_text + "\r\nContent-Type: " + type +
                "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n" +
                (a.status == 405 ? "Allow: GET, HEAD\r\n" : "") + "\r\n";
    if (!a.head) response_ += body;
    write_.data = this;
    uv_buf_t b = uv_buf_init(response_.data(), static_cast<unsigned>(response_.size()));
    if (uv_write(&write_, stream(), &b, 1, &MetricsHttpConnection::on_written) != 0) close();
  }

  static void on_written(uv_write_t* req, int status) {
    auto* c = static_cast<MetricsHttpConnection*>(req->data);
    if (status < 0 || c->closing_) return c->close();
    // FIN after the response, then close: the client reads it all first.
    c->shutdown_.data = c;
    if (uv_shutdown(&c->shutdown_, c->stream(), [](uv_shutdown_t* r, int) {
          static_cast<MetricsHttpConnection*>(r->data)->close();
        }) != 0)
      c->close();
  }

  MetricsHttpConnections& all_;
  uv_tcp_t tcp_{};
  uv_write_t write_{};
  uv_shutdown_t shutdown_{};
  handoff::UvHandle<uv_timer_t> idle_;
  MetricsRequestParser parser_;
  std::string response_;
  char chunk_[4096];
  bool answered_ = false;
  bool closing_ = false;
};

void MetricsHttpConnections::start(uv_loop_t* loop, handoff::UniqueFd fd) {
  if (open_.size() >= kMaxOpen) {
    spdlog::debug("metrics: {} scrapes open already; closed a new connection", open_.size());
    return;  // `fd` closes here
  }
  auto* c = new MetricsHttpConnection(*this);
  if (!c->open(loop, std::move(fd))) delete c;
}

void MetricsHttpConnections::close_all() {
  std::vector<MetricsHttpConnection*> all(open_.begin(), open_.end());
  for (auto* c : all) c->close();
}

}  // namespace baton::daemon
