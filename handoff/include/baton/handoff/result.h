#pragma once
// Errors as values: every fallible call in handoff returns a Result that says
// what failed ("recvmsg: control data truncated (MSG_CTRUNC)"), never throws,
// and leaves the logging to whoever is at the top.

#include <string>
#include <utility>
#include <variant>

namespace baton::handoff {

struct Error {
  std::string message;
};

// "<what>: <strerror(err)>", for a failed syscall.
Error sys_error(const std::string& what, int err);
// The same with the current errno.
Error errno_error(const std::string& what);

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error error) : v_(std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  const T& value() const& { return std::get<0>(v_); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), failed_(true) {}

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const { return error_; }

 private:
  Error error_;
  bool failed_ = false;
};

using Status = Result<void>;

// Prefixes an error with context: "listener 'echo': " + "SO_ACCEPTCONN is 0".
inline Error with_context(const std::string& context, const Error& e) {
  return Error{context + ": " + e.message};
}

}  // namespace baton::handoff
