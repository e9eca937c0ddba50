// plain-echo HOST:PORT: minimal-echo before baton (docs/embedding.md shows the
// diff between the two). kill -TERM: stop. A restart refuses connections and
// resets every open one.
#include <uv.h>
#include <arpa/inet.h>
#include <cstdio>
#include <string>
#include <unordered_set>

static uv_loop_t* loop;
static std::string address;  // HOST:PORT
static uv_tcp_t* server = nullptr;
struct Connection;
static std::unordered_set<Connection*> connections;

struct Connection {
  uv_tcp_t tcp;
  int writes = 0;  // in flight
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
      --c->writes;
    });
  }
  void stop() {  // what is owed, then FIN, then close
    if (uv_is_closing(handle())) return;
    uv_read_stop(stream());
    uv_shutdown(new uv_shutdown_t, stream(), [](uv_shutdown_t* r, int) { static_cast<Connection*>(r->handle->data)->close(), delete r; });
  }
  void close() {
    if (!uv_is_closing(handle())) uv_close(handle(), [](uv_handle_t* h) {
      connections.erase(static_cast<Connection*>(h->data)), delete static_cast<Connection*>(h->data);
    });
  }
};

static void listen() {
  sockaddr_in addr;
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || uv_ip4_addr(address.substr(0, colon).c_str(), std::stoi(address.substr(colon + 1)), &addr))
    std::fprintf(stderr, "plain-echo: bad address %s\n", address.c_str()), std::exit(1);
  uv_tcp_init(loop, server = new uv_tcp_t);
  if (uv_tcp_bind(server, reinterpret_cast<const sockaddr*>(&addr), 0) != 0) std::exit(1);
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
  if (argc != 2) return std::fprintf(stderr, "usage: plain-echo HOST:PORT\n"), 2;
  address = argv[1], loop = uv_default_loop();
  listen();
  uv_signal_t sigterm;  // unref: it never keeps the loop alive
  uv_signal_init(loop, &sigterm), uv_unref(reinterpret_cast<uv_handle_t*>(&sigterm));
  uv_signal_start(&sigterm, [](uv_signal_t*, int) {
    stop_accepting();
    for (auto* c : std::unordered_set<Connection*>(connections)) c->stop();
  }, SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
}
