// The learning-rate schedules of the training recipe (REFERENCE.md): vocabulary that the
// kernels (the training step's check computes each step's rate on the device) and the
// trainer share.
#pragma once
#include <cmath>
#include <cstdint>

#include "core/base/macros.h"

namespace emonext {

// The learning-rate schedules, one formula for the host (the trainer's logs) and both
// backends' step check (kernels/kernels.h, step_check_apply), which hands the rate to
// AdamW. The learning rate at optimiser step `step` (0-based):
//   Restarts: the reference's cosine with warm restarts: c = step mod cycle; peak * c / warmup
//             while c < warmup, else peak * (1 + cos(pi (c - warmup) / (cycle - warmup))) / 2
//   Cosine:   linear warm-up over `warmup` steps, then one cosine to 0 at `total` steps
//   Constant: peak
enum class Schedule : int { Restarts, Cosine, Constant };
struct LrSchedule {
  Schedule kind = Schedule::Constant;
  double peak = 0;
  int64_t warmup = 0, cycle = 1, total = 1;
};
EMONEXT_HD double scheduled_lr(const LrSchedule& s, int64_t step) {
  const double pi = 3.14159265358979323846;
  switch (s.kind) {
    case Schedule::Constant: return s.peak;
    case Schedule::Restarts: {
      const int64_t c = step % s.cycle;
      if (c < s.warmup) return s.peak * double(c) / double(s.warmup);
      return s.peak * (1 + ::cos(pi * double(c - s.warmup) / double(s.cycle - s.warmup))) / 2;
    }
    case Schedule::Cosine:
    default: {
      if (step < s.warmup) return s.peak * double(step) / double(s.warmup);
      const int64_t span = s.total - s.warmup > 1 ? s.total - s.warmup : 1;
      const double t = double(step - s.warmup) / double(span);
      return s.peak * (1 + ::cos(pi * (t < 1.0 ? t : 1.0))) / 2;
    }
  }
}

}  // namespace emonext
