// minimal-echo HOST:PORT: the smallest upgradable echo server (docs/embedding.md). kill -USR2: upgrade
// to the binary on disk, handing every connection to the new process; kill -TERM: stop.
#include <baton/upgrader.h>
#include <cstdio>
#include <unordered_set>

static uv_loop_t* loop;
static std::string address;  // HOST:PORT
static std::unique_ptr<baton::Upgrader> upgrader;
static uv_tcp_t* server = nullptr;
static bool finishing = false;  // upgraded or stopped: exit once the last connection is gone
struct Connection;
static std::unordered_set<Connection*> connections;
static void exit_if_done() { if (finishing && connections.empty()) upgrader->close(); }  // the loop ends

struct Connection final : baton::HandoffConnection {
  uv_tcp_t tcp;
  int writes = 0;  // in flight; flushed when none is
  baton::handoff::ConnectionHandoff* handoff = nullptr;
  Connection() { uv_tcp_init(loop, &tcp), tcp.data = this; }
  uv_handle_t* handle() { return reinterpret_cast<uv_handle_t*>(&tcp); }
  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp); }
  void start() { connections.insert(this), read(); }
  void read() {
    uv_read_start(stream(), [](uv_handle_t*, size_t n, uv_buf_t* b) { *b = uv_buf_init(new char[n], n); },
                  [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
                    if (n > 0) return static_cast<Connection*>(s->data)->echo(b->base, n);
                    delete[] b->base;
                    if (n < 0) static_cast<Connection*>(s->data)->close();
                  });
  }
  void echo(char* data, size_t n) {  // takes `data`
    uv_buf_t buf = uv_buf_init(data, n);
    ++writes, uv_write(new uv_write_t{.data = data}, stream(), &buf, 1, [](uv_write_t* req, int) {
      auto* c = static_cast<Connection*>(req->handle->data);
      delete[] static_cast<char*>(req->data), delete req;
      if (--c->writes == 0 && c->handoff) c->handoff->flushed(*c);
    });
  }
  void stop() {  // what is owed, then FIN, then close
    if (handoff || uv_is_closing(handle()) || !uv_is_writable(stream())) return;  // not twice
    uv_read_stop(stream());
    uv_shutdown(new uv_shutdown_t, stream(), [](uv_shutdown_t* r, int) { static_cast<Connection*>(r->handle->data)->close(), delete r; });
  }
  void close() {
    if (!uv_is_closing(handle())) uv_close(handle(), [](uv_handle_t* h) {
      auto* c = static_cast<Connection*>(h->data);
      if (c->handoff) c->handoff->gone(*c);
      connections.erase(c), delete c, exit_if_done();
    });
  }
  // The hand-off (baton::HandoffConnection): stop reading, report once flushed.
  int handoff_fd() const override { uv_os_fd_t fd = -1; return uv_fileno(reinterpret_cast<const uv_handle_t*>(&tcp), &fd), fd; }
  bool begin_handoff(baton::handoff::ConnectionHandoff& h) override {
    if (uv_is_closing(handle())) return false;
    uv_read_stop(stream()), handoff = &h;
    if (writes == 0) h.flushed(*this);
    return true;
  }
  void cancel_handoff() override { handoff = nullptr, finishing ? stop() : read(); }
  void close_handed_off() override { handoff = nullptr, close(); }
};

static void listen() {  // at start, and again when an upgrade failed after we had stopped
  auto fd = upgrader->listener("echo", "tcp://" + address);
  if (!fd) std::fprintf(stderr, "minimal-echo: %s\n", fd.error().message.c_str()), std::exit(1);
  uv_tcp_init(loop, server = new uv_tcp_t), uv_tcp_open(server, fd->release());
  uv_listen(reinterpret_cast<uv_stream_t*>(server), SOMAXCONN, [](uv_stream_t* s, int) {
    auto* c = new Connection;
    uv_accept(s, c->stream()) == 0 ? c->start() : c->close();
  });
}
static void stop_accepting() {
  if (server) uv_close(reinterpret_cast<uv_handle_t*>(server), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  server = nullptr;
}

int main(int argc, char** argv) {
  if (argc != 2) return std::fprintf(stderr, "usage: minimal-echo HOST:PORT\n"), 2;
  address = argv[1], loop = uv_default_loop();
  auto up = baton::Upgrader::create(loop, argc, argv, {
      .stop_accepting = stop_accepting,
      .upgraded = [] { finishing = true, (void)upgrader->hand_off({connections.begin(), connections.end()}), exit_if_done(); },
      .failed = [](const std::string&, bool listen_again) { if (listen_again) finishing = false, listen(); },
      .adopt = [](baton::UniqueFd fd, baton::ConnectionKind) {
        if (finishing) return false;  // the old process keeps it
        auto* c = new Connection;
        return uv_tcp_open(&c->tcp, fd.get()) == 0 ? (fd.release(), c->start(), true) : (c->close(), false);
      }});
  if (!up) return std::fprintf(stderr, "minimal-echo: %s\n", up.error().message.c_str()), 1;
  upgrader = std::move(up).value(), listen();
  if (auto st = upgrader->ready(); !st) return std::fprintf(stderr, "minimal-echo: %s\n", st.error().message.c_str()), 1;
  uv_signal_t sigterm;  // unref: it never keeps the loop alive
  uv_signal_init(loop, &sigterm), uv_unref(reinterpret_cast<uv_handle_t*>(&sigterm));
  uv_signal_start(&sigterm, [](uv_signal_t*, int) {
    finishing = true, stop_accepting(), upgrader->close();  // no more upgrades
    for (auto* c : std::unordered_set<Connection*>(connections)) c->stop();
  }, SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
}
