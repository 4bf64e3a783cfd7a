// The single error type of arclight. Every validation failure (bad shape, dtype, device, argument, file)
// throws arclight::Error with the op or component name first, then what was found and what was expected,
// so a message read out of context still says where it came from.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace arclight {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
inline void format_into(std::ostringstream&) {}
template <typename T, typename... Rest>
void format_into(std::ostringstream& os, T&& first, Rest&&... rest) {
  os << std::forward<T>(first);
  format_into(os, std::forward<Rest>(rest)...);
}
}  // namespace detail

// Concatenates the arguments with operator<< into one string.
template <typename... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream os;
  detail::format_into(os, std::forward<Args>(args)...);
  return os.str();
}

// Throws arclight::Error whose message is "<where>: <message parts...>".
template <typename... Args>
[[noreturn]] void fail(const std::string& where, Args&&... parts) {
  throw Error(where + ": " + str_cat(std::forward<Args>(parts)...));
}

}  // namespace arclight

// ARCLIGHT_CHECK(cond, where, parts...): input validation that stays on in release builds.
#define ARCLIGHT_CHECK(cond, where, ...)            \
  do {                                              \
    if (!(cond)) ::arclight::fail(where, __VA_ARGS__); \
  } while (0)
