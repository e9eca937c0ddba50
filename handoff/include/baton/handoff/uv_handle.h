#pragma once
// UvHandle<T>: the one owner of a libuv handle. libuv keeps pointing at a
// handle until its close callback has run, so the memory is freed there and
// never in a destructor: destroying a UvHandle starts uv_close and lets go.
// Owners that put `this` in handle->data must not move (libuv holds the
// pointer); after uv_close no callback but the close callback runs.

#include <uv.h>

#include <utility>

namespace baton::handoff {

template <class T>
class UvHandle {
 public:
  UvHandle() = default;
  ~UvHandle() { close(); }
  UvHandle(UvHandle&& o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
  UvHandle& operator=(UvHandle&& o) noexcept {
    if (this != &o) {
      close();
      h_ = std::exchange(o.h_, nullptr);
    }
    return *this;
  }
  UvHandle(const UvHandle&) = delete;
  UvHandle& operator=(const UvHandle&) = delete;

  // Allocates the handle and runs `init(loop, handle, args...)`. On failure
  // the handle never reached libuv and is freed at once.
  template <class Init, class... Args>
  int init(Init init_fn, uv_loop_t* loop, void* data, Args&&... args) {
    close();
    T* h = new T{};
    int rc = init_fn(loop, h, std::forward<Args>(args)...);
    if (rc != 0) {
      delete h;
      return rc;
    }
    h->data = data;
    h_ = h;
    return 0;
  }

  T* get() const { return h_; }
  explicit operator bool() const { return h_ != nullptr; }
  uv_handle_t* handle() const { return reinterpret_cast<uv_handle_t*>(h_); }

  void close() {
    if (!h_) return;
    uv_close(handle(), [](uv_handle_t* h) { delete reinterpret_cast<T*>(h); });
    h_ = nullptr;
  }

 private:
  T* h_ = nullptr;
};

}  // namespace baton::handoff
