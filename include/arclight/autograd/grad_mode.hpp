// Whether ops record the autograd graph on this thread. NoGradGuard turns recording off for a scope
// (inference, optimizer updates, and the backward pass itself, which never builds a graph of its own).
#pragma once

namespace arclight {

namespace detail {
inline bool& grad_enabled_flag() {
  thread_local bool enabled = true;
  return enabled;
}
}  // namespace detail

inline bool grad_enabled() { return detail::grad_enabled_flag(); }

class NoGradGuard {
 public:
  NoGradGuard() : prev_(detail::grad_enabled_flag()) { detail::grad_enabled_flag() = false; }
  ~NoGradGuard() { detail::grad_enabled_flag() = prev_; }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

}  // namespace arclight
