// emonext::Error, the one exception the engine throws for bad input, and
// EMONEXT_CHECK, which builds its message from any streamable values.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace emonext {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

[[noreturn]] inline void fail(const std::string& message) { throw Error(message); }

}  // namespace emonext

// EMONEXT_CHECK(cond, "op: what was wrong ", value, ", fix: ...")
#define EMONEXT_CHECK(cond, ...)                                      \
  do {                                                                \
    if (!(cond)) ::emonext::fail(::emonext::detail::concat(__VA_ARGS__)); \
  } while (0)
