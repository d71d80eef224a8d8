// Ctrl-C in a training run: the first asks the loop to finish its step, save and stop;
// a second quits at once without saving.
#pragma once
#include <atomic>

namespace emonext {

// Set by the first Ctrl-C while a SigintToFlag lives; the training loop reads it after each step.
extern std::atomic<bool> g_interrupted;

// While it lives, Ctrl-C only sets g_interrupted (the loop then saves and stops); the
// previous handler comes back however the training loop is left.
class SigintToFlag {
 public:
  SigintToFlag();
  ~SigintToFlag();
  SigintToFlag(const SigintToFlag&) = delete;
  SigintToFlag& operator=(const SigintToFlag&) = delete;

 private:
  void (*previous_)(int) = nullptr;
  void (*previous_term_)(int) = nullptr;
};

}  // namespace emonext
