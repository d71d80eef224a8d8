// What a training run prints while it runs: a redrawn bar on a terminal, a plain line
// every `every` steps otherwise; and the small formatting helpers the trainer's lines use.
#pragma once
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "core/dist.h"

namespace emonext {

using Clock = std::chrono::steady_clock;
inline double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// printf of one number, as a string.
inline std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// Seconds as h:mm:ss.
inline std::string duration(double s) {
  char b[32];
  const int64_t t = int64_t(s);
  std::snprintf(b, sizeof b, "%lld:%02lld:%02lld", (long long)(t / 3600), (long long)(t / 60 % 60), (long long)(t % 60));
  return b;
}

class Progress {
 public:
  // Under mpirun rank 0's stdout is a terminal that mpirun forwards, and interleaves with
  // the other ranks' messages on stderr: plain lines there.
  explicit Progress(int64_t every) : tty_(isatty(fileno(stdout)) != 0 && dist::size() == 1), every_(every) {}
  void step(int64_t epoch, int64_t b, int64_t batches, double loss, double lr, double ips, double eta_s, int64_t step) {
    if (tty_) {
      const int width = 24, done = int(double(width) * double(b) / double(batches > 1 ? batches : 1));
      std::printf("\repoch %lld [%s%s] %lld/%lld loss %.4f lr %.2e %.1f img/s ETA %s   ", (long long)epoch,
                  std::string(size_t(done), '#').c_str(), std::string(size_t(width - done), '.').c_str(), (long long)b,
                  (long long)batches, loss, lr, ips, duration(eta_s).c_str());
      std::fflush(stdout);
    } else if (step % every_ == 0) {
      std::printf("step %lld epoch %lld batch %lld/%lld loss %.4f lr %.3e %.1f img/s ETA %s\n", (long long)step, (long long)epoch,
                  (long long)b, (long long)batches, loss, lr, ips, duration(eta_s).c_str());
      std::fflush(stdout);
    }
  }
  // Ends the bar's line before other output (a no-op without a terminal).
  void end_line() {
    if (tty_) std::printf("\n");
  }

 private:
  bool tty_;
  int64_t every_;
};

}  // namespace emonext
