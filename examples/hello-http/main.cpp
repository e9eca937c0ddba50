// hello-http HOST:PORT: an HTTP/1.1 server (keep-alive, pipelining) that
// upgrades itself on SIGUSR2 without a failed request, and stops on SIGTERM.
// What it adds to minimal-echo (docs/embedding.md, "A real server"):
//   - a connection is handed off only between requests: once everything it
//     read is a complete request, answered and written. One caught
//     mid-request is read on until the request is whole;
//   - a connection promised a close (Connection: close, HTTP/1.0) is closed,
//     never handed off;
//   - a connection that stays here (not flushed within the bound, refused by
//     the new process) is closed now if nothing of the client's waits unread,
//     else after the answer to it;
//   - once stopping (SIGTERM) or finishing, it takes no connection handed
//     off by an older generation;
//   - HELLO_HTTP_PROBATION_MS, if set, is the new generation's probation
//     (UpgraderOptions; 1000 ms by default).
//   - it tells who answered: "hello from generation G (pid P)".
// HTTP parsing: Debian's libhttp-parser-dev (nodejs/http-parser).
#include <baton/upgrader.h>
#include <http_parser.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <unordered_set>

namespace {

uv_loop_t* loop;
std::string address;
std::unique_ptr<baton::Upgrader> upgrader;
uv_tcp_t* server = nullptr;
bool finishing = false;  // upgraded or stopping: exit once the last connection is gone
http_parser_settings settings;

class Connection;
std::unordered_set<Connection*> connections;

void exit_if_done() {
  if (finishing && connections.empty()) upgrader->close();  // then the loop ends
}

class Connection final : public baton::HandoffConnection {
 public:
  Connection() {
    uv_tcp_init(loop, &tcp_);
    tcp_.data = this;
    http_parser_init(&parser_, HTTP_REQUEST);
    parser_.data = this;
  }
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }
  uv_tcp_t* tcp() { return &tcp_; }

  void start() {
    connections.insert(this);
    read();
  }

  // SIGTERM: an idle connection closes now, a busy one after its response.
  void stop() {
    if (handoff_) return;  // the hand-off settles it
    close_after_response_ = true;
    if (!in_request_ && writes_ == 0) close();
  }

  void close() {
    if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&tcp_))) return;
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), [](uv_handle_t* h) {
      auto* c = static_cast<Connection*>(h->data);
      if (c->handoff_) c->handoff_->gone(*c);
      connections.erase(c);
      delete c;
      exit_if_done();
    });
  }

  static int on_message_begin(http_parser* p) {
    static_cast<Connection*>(p->data)->in_request_ = true;
    return 0;
  }
  static int on_message_complete(http_parser* p) {
    auto* c = static_cast<Connection*>(p->data);
    c->in_request_ = false;
    c->respond(p->method == HTTP_HEAD, http_should_keep_alive(p) && !c->close_after_response_);
    return 0;
  }

  // baton::HandoffConnection.
  int handoff_fd() const override {
    uv_os_fd_t fd = -1;
    uv_fileno(reinterpret_cast<const uv_handle_t*>(&tcp_), &fd);
    return fd;
  }
  bool begin_handoff(baton::handoff::ConnectionHandoff& handoff) override {
    if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&tcp_)) || close_after_response_) return false;
    handoff_ = &handoff;
    settle_if_between_requests();
    return true;
  }
  void cancel_handoff() override {
    handoff_ = nullptr;
    if (finishing) {
      // No more than the answer owed, then close. Closing with a request
      // unread would reset it: one waiting in the kernel is read and answered.
      close_after_response_ = true;
      char byte;
      const bool unread = ::recv(handoff_fd(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
      if (!in_request_ && writes_ == 0 && !unread) return close();
    }
    if (!reading_) read();
  }
  void close_handed_off() override {
    handoff_ = nullptr;
    close();  // our copy only: uv_close never shuts the socket down
  }

 private:
  void read() {
    reading_ = true;
    uv_read_start(
        stream(), [](uv_handle_t*, size_t, uv_buf_t* b) { *b = uv_buf_init(new char[65536], 65536); },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
          auto* c = static_cast<Connection*>(s->data);
          if (n > 0) c->parse(b->base, static_cast<size_t>(n));
          else if (n < 0) c->close();
          delete[] b->base;
        });
  }

  void parse(const char* data, size_t n) {
    const size_t parsed = http_parser_execute(&parser_, &settings, data, n);
    if (HTTP_PARSER_ERRNO(&parser_) != HPE_OK || parsed != n) {
      uv_read_stop(stream());
      reading_ = false;
      in_request_ = false;
      reply("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", false);
      return;
    }
    // Every byte read so far is parsed: at a request boundary nothing of the
    // client's is held here, and the rest waits in the kernel for the new process.
    if (handoff_) settle_if_between_requests();
  }

  void settle_if_between_requests() {
    // Read on until the request is whole; one promised a close ends here.
    if (in_request_ || close_after_response_) return;
    if (reading_) uv_read_stop(stream());
    reading_ = false;
    if (writes_ == 0) handoff_->flushed(*this);
  }

  void respond(bool head, bool keep_alive) {
    const std::string body = "hello from generation " + std::to_string(upgrader->generation()) + " (pid " +
                             std::to_string(::getpid()) + ")\n";
    std::string r = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
                    (keep_alive ? "\r\n\r\n" : "\r\nConnection: close\r\n\r\n");
    if (!head) r += body;
    reply(r, keep_alive);
  }

  void reply(const std::string& bytes, bool keep_alive) {
    struct Write {
      uv_write_t req;
      std::string bytes;
    };
    auto* w = new Write{{}, bytes};
    w->req.data = w;
    uv_buf_t buf = uv_buf_init(w->bytes.data(), static_cast<unsigned>(w->bytes.size()));
    if (!keep_alive) close_after_response_ = true;
    ++writes_;
    uv_write(&w->req, stream(), &buf, 1, [](uv_write_t* req, int status) {
      auto* c = static_cast<Connection*>(req->handle->data);
      delete static_cast<Write*>(req->data);
      --c->writes_;
      if (status < 0) return c->close();
      if (c->writes_ > 0) return;
      if (c->close_after_response_ && !c->in_request_) return c->close();  // gone(), if it was being handed off
      if (c->handoff_ && !c->reading_) c->handoff_->flushed(*c);
    });
  }

  uv_tcp_t tcp_;
  http_parser parser_;
  baton::handoff::ConnectionHandoff* handoff_ = nullptr;  // while being handed off
  int writes_ = 0;                                        // in flight
  bool reading_ = false;
  bool in_request_ = false;            // part of a request is read, not yet all of it
  bool close_after_response_ = false;  // Connection: close, a stop, or kept after an upgrade
};

void listen() {  // at start, and again when an upgrade failed after we had stopped
  auto fd = upgrader->listener("http", "tcp://" + address);
  if (!fd) {
    std::fprintf(stderr, "hello-http: %s\n", fd.error().message.c_str());
    std::exit(1);
  }
  server = new uv_tcp_t;
  uv_tcp_init(loop, server);
  uv_tcp_open(server, fd->release());
  uv_listen(reinterpret_cast<uv_stream_t*>(server), SOMAXCONN, [](uv_stream_t* s, int) {
    auto* c = new Connection;
    if (uv_accept(s, c->stream()) == 0) c->start();
    else c->close();
  });
}

void stop_accepting() {
  if (!server) return;
  uv_close(reinterpret_cast<uv_handle_t*>(server), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  server = nullptr;
}

bool adopt(baton::UniqueFd fd, baton::ConnectionKind) {
  if (finishing) return false;  // it would never be passed on: the old process keeps it
  auto* c = new Connection;
  if (uv_tcp_open(c->tcp(), fd.get()) != 0) {
    c->close();
    return false;  // the old process keeps it
  }
  fd.release();
  c->start();
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: hello-http HOST:PORT\n");
    return 2;
  }
  address = argv[1];
  loop = uv_default_loop();
  http_parser_settings_init(&settings);
  settings.on_message_begin = &Connection::on_message_begin;
  settings.on_message_complete = &Connection::on_message_complete;

  baton::UpgraderEvents events{
      .stop_accepting = stop_accepting,
      .upgraded =
          [] {
            finishing = true;
            if (auto st = upgrader->hand_off({connections.begin(), connections.end()}); !st)
              std::fprintf(stderr, "hello-http: %s\n", st.error().message.c_str());
            exit_if_done();
          },
      .failed =
          [](const std::string& why, bool listen_again) {
            std::fprintf(stderr, "hello-http: upgrade failed, serving on: %s\n", why.c_str());
            if (!listen_again) return;
            finishing = false;
            listen();
          },
      .adopt = adopt,
  };
  baton::UpgraderOptions options;
  if (const char* ms = std::getenv("HELLO_HTTP_PROBATION_MS")) options.probation = std::chrono::milliseconds(std::atoi(ms));
  auto up = baton::Upgrader::create(loop, argc, argv, std::move(events), options);
  if (!up) {
    std::fprintf(stderr, "hello-http: %s\n", up.error().message.c_str());
    return 1;
  }
  upgrader = std::move(up).value();
  listen();
  if (auto st = upgrader->ready(); !st) {
    std::fprintf(stderr, "hello-http: %s\n", st.error().message.c_str());
    return 1;
  }
  uv_signal_t sigterm;
  uv_signal_init(loop, &sigterm);
  uv_unref(reinterpret_cast<uv_handle_t*>(&sigterm));  // it never keeps the loop alive
  uv_signal_start(
      &sigterm,
      [](uv_signal_t*, int) {
        finishing = true;
        stop_accepting();
        upgrader->close();  // no more upgrades; one not committed yet is killed
        for (auto* c : std::unordered_set<Connection*>(connections)) c->stop();
      },
      SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
  return 0;
}
