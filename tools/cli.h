// Command-line reading shared by the tools: walks argv, hands out each flag's value,
// and turns a missing value or a malformed number into the tool's usage message
// (exit code 2) instead of an exception.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace emonext::cli {

class Args {
 public:
  using Usage = void (*)(const std::string& why);  // prints usage and exits; must not return
  Args(int argc, char** argv, Usage usage) : argc_(argc), argv_(argv), usage_(usage) {}

  // The next argument (a flag, or a positional one); false after the last.
  bool next(std::string& arg) {
    if (i_ + 1 >= argc_) return false;
    flag_ = arg = argv_[++i_];
    return true;
  }
  // The value that follows the current flag; another flag ("--...") there means the
  // value was left out, not that the flag is the value.
  std::string value() {
    if (i_ + 1 >= argc_ || std::string(argv_[i_ + 1]).rfind("--", 0) == 0) fail(flag_ + " needs a value");
    return argv_[++i_];
  }
  int64_t integer() { return number<int64_t>([](const std::string& s, size_t* end) { return std::stoll(s, end); }); }
  uint64_t unsigned_integer() { return number<uint64_t>([](const std::string& s, size_t* end) { return std::stoull(s, end); }); }
  double real() { return number<double>([](const std::string& s, size_t* end) { return std::stod(s, end); }); }

 private:
  [[noreturn]] void fail(const std::string& why) {
    usage_(why);
    throw std::logic_error(why);  // not reached: usage exits
  }
  template <class T, class Parse>
  T number(Parse parse) {
    const std::string v = value();
    try {
      size_t end = 0;
      const T x = parse(v, &end);
      if (end == v.size()) return x;
    } catch (const std::logic_error&) {
    }
    fail(flag_ + " takes a number, got '" + v + "'");
  }

  int argc_;
  char** argv_;
  Usage usage_;
  int i_ = 0;
  std::string flag_;
};

}  // namespace emonext::cli
