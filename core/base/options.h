// A tool's command line as one table: each option's name, value placeholder, help,
// default, and how its text becomes a checked, typed value. The table parses argv
// (every value checked as it is read: a malformed number, a value out of its range, an
// unknown choice or option is a usage error naming the option, exit code 2), remembers
// which options were given (apart from their values), and writes --help from the same
// rows. Every tool of the engine builds its command line with it.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <limits>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "core/base/error.h"
#include "core/base/limits.h"

namespace emonext::cli {

struct Option {
  std::string name;          // "--batch"
  std::string meta;          // the value's placeholder ("B"); empty for a flag, which takes none
  std::string help;          // one line
  std::string default_text;  // shown after the help; empty for none
  std::string section;       // --help groups the options by section, in order
  std::function<void(const std::string&)> set;  // parses and stores the value; throws emonext::Error saying why not
};

class Options {
 public:
  // `synopsis`: the usage lines after "usage: ".
  Options(std::string tool, std::string synopsis) : tool_(std::move(tool)), synopsis_(std::move(synopsis)) {}

  Options& add(Option o) {
    if (o.section.empty()) o.section = section_;
    rows_.push_back(std::move(o));
    return *this;
  }
  // The section the options added next belong to.
  Options& section(std::string s) {
    section_ = std::move(s);
    return *this;
  }
  Options& text(const std::string& name, const std::string& meta, const std::string& help, std::string* v) {
    return add({name, meta, help, *v, "", [v](const std::string& s) { *v = s; }});
  }
  template <class T>
  Options& integer(const std::string& name, const std::string& meta, const std::string& help, T* v,
                   int64_t lo = std::numeric_limits<int64_t>::min(), int64_t hi = std::numeric_limits<int64_t>::max()) {
    return add({name, meta, help, std::to_string(*v), "",
                [v, lo, hi, name](const std::string& s) { *v = T(limits::parse_int(s, name, lo, hi)); }});
  }
  Options& real(const std::string& name, const std::string& meta, const std::string& help, double* v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", *v);
    return add({name, meta, help, b, "", [v, name](const std::string& s) { *v = limits::parse_real(s, name); }});
  }
  // A flag: given, it sets *v to `value`.
  Options& flag(const std::string& name, const std::string& help, bool* v, bool value = true) {
    return add({name, "", help, "", "", [v, value](const std::string&) { *v = value; }});
  }
  // One of named values (an enum): "--amp off|bf16|fp16".
  template <class E>
  Options& choice(const std::string& name, const std::string& help, E* v, std::vector<std::pair<std::string, E>> values) {
    std::string meta, now;
    for (const auto& [n, e] : values) {
      meta += (meta.empty() ? "" : "|") + n;
      if (e == *v) now = n;
    }
    return add({name, meta, help, now, "", [v, values, name, meta](const std::string& s) {
                  for (const auto& [n, e] : values)
                    if (n == s) {
                      *v = e;
                      return;
                    }
                  fail(name + " is " + meta + ", got '" + s + "'");
                }});
  }
  // The arguments that are not options (files, folders), in order.
  Options& positional(std::vector<std::string>* v) {
    positional_ = v;
    return *this;
  }

  // What --help does after printing, before its exit 0: a tool that must end in order
  // says how (emonext_train under mpirun finalises MPI, as every rank prints the help).
  Options& on_help(std::function<void()> done) {
    on_help_ = std::move(done);
    return *this;
  }

  // Reads argv through the table; --help (or -h) prints help() and exits 0.
  void parse(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        std::cout << help() << std::flush;
        if (on_help_) on_help_();
        std::exit(0);
      }
      const Option* o = find(a);
      if (!o) {
        if (a.rfind("-", 0) != 0 && positional_) {
          positional_->push_back(a);
          continue;
        }
        usage_error("unknown argument " + a);
      }
      std::string value;
      if (!o->meta.empty()) {  // the value that follows; another option there means it was left out
        if (i + 1 >= argc || std::string(argv[i + 1]).rfind("--", 0) == 0) usage_error(a + " needs a value (" + o->meta + ")");
        value = argv[++i];
      }
      try {
        o->set(value);
      } catch (const Error& e) {
        usage_error(e.what());
      }
      given_.insert(a);
    }
  }
  bool given(const std::string& name) const { return given_.count(name) > 0; }

  // Prints why and the usage lines, exits 2.
  [[noreturn]] void usage_error(const std::string& why) const {
    std::cerr << tool_ << ": " << why << "\nusage: " << synopsis_ << "\n(" << tool_ << " --help lists every option)\n";
    std::exit(2);
  }

  std::string help() const {
    std::string out = "usage: " + synopsis_ + "\n";
    std::string section = "\x01";
    for (const Option& o : rows_) {
      if (o.section != section) {
        section = o.section;
        if (!section.empty()) out += section + "\n";
      }
      std::string head = "  " + o.name + (o.meta.empty() ? "" : " " + o.meta);
      if (head.size() < 24) head.resize(24, ' ');
      else head += "\n" + std::string(24, ' ');
      out += head + o.help + (o.default_text.empty() ? "" : " (default " + o.default_text + ")") + "\n";
    }
    return out;
  }

 private:
  const Option* find(const std::string& name) const {
    for (const Option& o : rows_)
      if (o.name == name) return &o;
    return nullptr;
  }

  std::string tool_, synopsis_, section_;
  std::vector<Option> rows_;
  std::vector<std::string>* positional_ = nullptr;
  std::function<void()> on_help_;
  std::set<std::string> given_;
};

}  // namespace emonext::cli
