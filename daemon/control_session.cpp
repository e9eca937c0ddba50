#include "control_session.h"

#include <spdlog/spdlog.h>

#include <vector>

namespace baton::daemon {
namespace {

uint64_t next_session_id = 1;

struct PendingLine {
  uv_write_t req;
  std::string text;
};

}  // namespace

ControlSession* ControlSessions::find(uint64_t id) const {
  auto it = open_.find(id);
  return it == open_.end() ? nullptr : it->second;
}

void ControlSessions::add(ControlSession* s) { open_[s->id()] = s; }

void ControlSessions::remove(ControlSession* s) { open_.erase(s->id()); }

void ControlSessions::finish_all() {
  std::vector<ControlSession*> all;
  for (auto& [id, s] : open_) all.push_back(s);
  for (auto* s : all) s->finish();
}

ControlSession::ControlSession(Handler handler, ControlSessions& sessions)
    : handler_(std::move(handler)), sessions_(sessions), id_(next_session_id++) {}

void ControlSession::start(uv_loop_t* loop, handoff::UniqueFd fd, Handler handler, ControlSessions& sessions) {
  auto* s = new ControlSession(std::move(handler), sessions);
  if (int rc = uv_pipe_init(loop, &s->pipe_, 0); rc != 0) {
    spdlog::warn("control: init: {}", uv_strerror(rc));
    delete s;
    return;
  }
  s->pipe_.data = s;
  if (int rc = uv_pipe_open(&s->pipe_, fd.get()); rc != 0) {
    spdlog::warn("control: open: {}", uv_strerror(rc));
    s->close();  // `fd` still owns the descriptor and closes it
    return;
  }
  fd.release();
  sessions.add(s);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&s->pipe_), &ControlSession::on_alloc, &ControlSession::on_read);
}

void ControlSession::on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* s = static_cast<ControlSession*>(h->data);
  *buf = uv_buf_init(s->read_chunk_, sizeof s->read_chunk_);
}

void ControlSession::on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  auto* s = static_cast<ControlSession*>(stream->data);
  if (nread < 0) {
    // EOF or error: whatever was asked is answered or moot; close our side.
    if (nread != UV_EOF) spdlog::debug("control: read: {}", uv_strerror(static_cast<int>(nread)));
    s->finish();
    return;
  }
  if (s->finishing_) return;
  s->input_.append(buf->base, static_cast<size_t>(nread));
  s->take_lines();
}

void ControlSession::take_lines() {
  size_t nl;
  while (!finishing_ && (nl = input_.find('\n')) != std::string::npos) {
    std::string line = input_.substr(0, nl);
    input_.erase(0, nl + 1);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > control::kMaxLine) return fail("request line longer than " + std::to_string(control::kMaxLine) + " bytes");
    if (line.empty()) continue;
    auto request = control::parse_request(line);
    if (!request) return fail(request.error().message);
    handler_(*this, request.value());
  }
  if (input_.size() > control::kMaxLine)
    fail("request line longer than " + std::to_string(control::kMaxLine) + " bytes");
}

void ControlSession::fail(const std::string& error) {
  spdlog::warn("control: bad request, closing the connection: {}", error);
  send(control::error_reply(error));
  input_.clear();
  finish();
}

void ControlSession::send(const nlohmann::json& message) {
  if (closing_ || finishing_) return;
  auto* w = new PendingLine{};
  w->text = control::to_line(message);
  w->req.data = this;
  uv_buf_t b = uv_buf_init(w->text.data(), static_cast<unsigned>(w->text.size()));
  if (uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&pipe_), &b, 1, &ControlSession::on_write) != 0) {
    delete w;
    close();
  }
}

void ControlSession::on_write(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<PendingLine*>(req);
  auto* s = static_cast<ControlSession*>(req->data);
  delete w;
  if (status < 0 && status != UV_ECANCELED) s->close();
}

void ControlSession::finish() {
  if (finishing_ || closing_) return;
  finishing_ = true;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&pipe_));
  shutdown_req_.data = this;
  if (uv_shutdown(&shutdown_req_, reinterpret_cast<uv_stream_t*>(&pipe_), &ControlSession::on_shutdown) != 0) close();
}

void ControlSession::on_shutdown(uv_shutdown_t* req, int) { static_cast<ControlSession*>(req->data)->close(); }

void ControlSession::close() {
  if (closing_) return;
  closing_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&pipe_), &ControlSession::on_closed);
}

void ControlSession::on_closed(uv_handle_t* h) {
  auto* s = static_cast<ControlSession*>(h->data);
  s->sessions_.remove(s);
  delete s;
}

}  // namespace baton::daemon
