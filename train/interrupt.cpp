#include "train/interrupt.h"

#include <unistd.h>

#include <csignal>

#include "core/dist.h"

namespace emonext {

std::atomic<bool> g_interrupted{false};

namespace {

// The first Ctrl-C asks the loop to finish its step, save and stop (a step of tiny at 224
// on a CPU takes seconds); a second quits at once. Quitting mid-save loses only that save:
// checkpoints are renamed into place whole. Only async-signal-safe calls in here.
void on_sigint(int) {
  if (g_interrupted.exchange(true)) {
    constexpr char kQuit[] = "\nemonext_train: second Ctrl-C: quitting without saving\n";
    (void)!write(STDERR_FILENO, kQuit, sizeof kQuit - 1);
    _exit(130);
  }
  constexpr char kSaving[] = "\nemonext_train: Ctrl-C: saving after this step (Ctrl-C again quits without saving)\n";
  (void)!write(STDERR_FILENO, kSaving, sizeof kSaving - 1);
}

}  // namespace

SigintToFlag::SigintToFlag() {
  g_interrupted = false;
  previous_ = std::signal(SIGINT, on_sigint);
  // Ctrl-C on mpirun reaches the ranks as SIGTERM (then SIGKILL after a grace time).
  if (dist::size() > 1) previous_term_ = std::signal(SIGTERM, on_sigint);
}

SigintToFlag::~SigintToFlag() {
  std::signal(SIGINT, previous_);
  if (dist::size() > 1) std::signal(SIGTERM, previous_term_);
}

}  // namespace emonext
