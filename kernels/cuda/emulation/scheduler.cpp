// Fibers for the threads of a block, barriers, warp exchange.
//
// On x86-64 a fiber switch is a dozen instructions (emonext_emu_switch below:
// callee-saved registers, MXCSR and the x87 control word); glibc's swapcontext,
// used elsewhere, makes a sigprocmask system call at every switch, which made
// barrier-heavy kernels ten times slower.
#include "kernels/cuda/emulation/scheduler.h"

#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <utility>
#include <string>
#include <vector>

#include "core/base/error.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define EMONEXT_EMU_ASAN 1
#else
#define EMONEXT_EMU_ASAN 0
#endif

// The section that holds every __shared__ array (see cuda_emulation.h); the
// linker defines these bounds when at least one kernel declares shared memory.
extern "C" char __start_emonext_emu_shared[] __attribute__((weak));
extern "C" char __stop_emonext_emu_shared[] __attribute__((weak));

#if defined(__x86_64__)
#define EMONEXT_EMU_FAST_SWITCH 1
// Saves the current stack pointer into *save after pushing the callee-saved
// state, then loads `load` and pops the state saved there.
extern "C" void emonext_emu_switch(void** save, void* load);
asm(R"(
    .text
    .globl emonext_emu_switch
    .type emonext_emu_switch, @function
emonext_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emonext_emu_switch, .-emonext_emu_switch
    .section .note.GNU-stack,"",@progbits
    .text
)");
#else
#define EMONEXT_EMU_FAST_SWITCH 0
#endif

namespace emonext::emu {

namespace {

constexpr size_t kStackBytes = 256 * 1024;  // ASan's redzones need room
constexpr unsigned char kSharedFill = 0xFF;  // all-ones: NaN as float, bf16 and f16; -1 as integers

enum class State { Ready, AtBlockBarrier, AtWarpBarrier, Done };

// Where a suspended fiber (or the scheduler) resumes.
struct Context {
#if EMONEXT_EMU_FAST_SWITCH
  void* sp = nullptr;
#else
  ucontext_t uc;
#endif
};

void switch_context(Context& save, Context& load) {
#if EMONEXT_EMU_FAST_SWITCH
  emonext_emu_switch(&save.sp, load.sp);
#else
  swapcontext(&save.uc, &load.uc);
#endif
}

struct Fiber {
  Context context;
  void* stack = nullptr;
  uint3 tid{};
  int linear = 0;
  State state = State::Ready;
  unsigned warp_mask = 0;  // the mask of the warp barrier it waits at
};

struct Block {
  const char* kernel = "";
  const std::function<void()>* body = nullptr;
  uint3 bid{};
  dim3 grid, block;
  std::vector<Fiber> fibers;
  Fiber* current = nullptr;
  Context scheduler;
  std::vector<uint64_t> warp_slots;     // 32 per warp
  std::vector<unsigned char> dynamic;   // dynamic shared memory
  // Round 0 runs the threads in its order one after another on one stack (the chain),
  // each to its end, until one waits at a barrier: that one keeps the chain's stack, the
  // rest start as fibers of their own. Same order as a fiber each, a switch a block.
  std::vector<int> chain;
  size_t chain_at = 0;        // the chain's thread now (or the one that waits)
  bool chain_broken = false;  // a chain thread waited at a barrier
#if EMONEXT_EMU_ASAN
  const void* scheduler_stack = nullptr;
  size_t scheduler_stack_size = 0;
#endif
};

Block* g_block = nullptr;  // the block being run (launches are serialised by g_launch_mutex)
std::mutex g_launch_mutex;
std::vector<void*> g_stacks;  // reused across launches
Schedule g_schedule;
bool g_schedule_read = false;
std::map<const void*, size_t> g_dynamic_optin;
std::map<std::string, uint64_t> g_launches_by_name;

void* map_stack() {
  void* s = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  EMONEXT_CHECK(s != MAP_FAILED, "emulation: cannot map a fiber stack");
  return s;
}

void* stack_at(size_t i) {
  while (g_stacks.size() <= i) g_stacks.push_back(map_stack());
  return g_stacks[i];
}

void* chain_stack() {
  static void* const s = map_stack();
  return s;
}

// Switches from the scheduler into fiber f, and back when it blocks or ends.
void resume(Block& b, Fiber& f) {
  b.current = &f;
#if EMONEXT_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f.stack, kStackBytes);
  switch_context(b.scheduler, f.context);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  switch_context(b.scheduler, f.context);
#endif
  b.current = nullptr;
}

// From inside a fiber: back to the scheduler until released.
void suspend(Block& b, Fiber& f, bool finished = false) {
#if EMONEXT_EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(finished ? nullptr : &fake, b.scheduler_stack, b.scheduler_stack_size);
  switch_context(f.context, b.scheduler);
  __sanitizer_finish_switch_fiber(fake, &b.scheduler_stack, &b.scheduler_stack_size);
#else
  (void)finished;
  switch_context(f.context, b.scheduler);
#endif
}

void fiber_main() {
  Block& b = *g_block;
#if EMONEXT_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &b.scheduler_stack, &b.scheduler_stack_size);
#endif
  (*b.body)();
  Fiber& f = *b.current;
  f.state = State::Done;
  suspend(b, f, true);
}

// The chain (Block::chain): each thread's body in turn, on the stack of the thread that
// began it, until one returns after having waited at a barrier.
void chain_main() {
  Block& b = *g_block;
#if EMONEXT_EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &b.scheduler_stack, &b.scheduler_stack_size);
#endif
  for (; b.chain_at < b.chain.size(); ++b.chain_at) {
    Fiber& f = b.fibers[size_t(b.chain[b.chain_at])];
    f.stack = chain_stack();
    b.current = &f;
    (*b.body)();
    f.state = State::Done;
    if (b.chain_broken) break;  // it was resumed from its barrier: the others run as fibers
  }
  suspend(b, *b.current, true);
}

// Prepares f to begin in `entry` on its stack.
void start_context(Fiber& f, void (*entry)() = fiber_main) {
#if EMONEXT_EMU_FAST_SWITCH
  // The frame emonext_emu_switch pops: FP control words, r15..r12, rbx, rbp, then
  // the "return address" fiber_main, entered with rsp = 8 mod 16 as after a call.
  auto* top = reinterpret_cast<uint64_t*>((reinterpret_cast<uintptr_t>(f.stack) + kStackBytes) & ~uintptr_t(15));
  uint64_t* sp = top - 9;
  uint32_t control[2] = {0, 0};
  asm volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(control[0]), "=m"(control[1]));
  std::memcpy(&sp[0], control, 8);
  for (int r = 1; r <= 6; ++r) sp[r] = 0;
  sp[7] = reinterpret_cast<uint64_t>(entry);
  sp[8] = 0;  // entry never returns
  f.context.sp = sp;
#else
  getcontext(&f.context.uc);
  f.context.uc.uc_stack.ss_sp = f.stack;
  f.context.uc.uc_stack.ss_size = kStackBytes;
  f.context.uc.uc_link = nullptr;
  makecontext(&f.context.uc, entry, 0);
#endif
}

Fiber& self() {
  EMONEXT_CHECK(g_block && g_block->current, "emulation: a device function was called outside a kernel");
  return *g_block->current;
}

std::vector<int> resume_order(int n, uint64_t round) {
  std::vector<int> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  if (g_schedule.order == Order::Reverse) std::reverse(order.begin(), order.end());
  if (g_schedule.order == Order::Shuffle) {
    std::mt19937_64 rng(g_schedule.seed * 0x9E3779B97F4A7C15ull + round);
    std::shuffle(order.begin(), order.end(), rng);
  }
  return order;
}

int lanes_in_warp(const Block& b, int warp) {
  const int n = int(b.fibers.size());
  return std::min(32, n - warp * 32);
}

// The lanes of `warp` that a barrier with `mask` waits for: those in the mask that exist.
unsigned participants(const Block& b, int warp, unsigned mask) {
  const int lanes = lanes_in_warp(b, warp);
  const unsigned existing = lanes >= 32 ? 0xffffffffu : ((1u << lanes) - 1u);
  return mask & existing;
}

[[noreturn]] void deadlock(const Block& b) {
  int at_sync = 0, at_warp = 0, done = 0;
  for (const Fiber& f : b.fibers) {
    at_sync += f.state == State::AtBlockBarrier;
    at_warp += f.state == State::AtWarpBarrier;
    done += f.state == State::Done;
  }
  fail(detail::concat("emulation: deadlock in kernel ", b.kernel, " block (", b.bid.x, ",", b.bid.y, ",", b.bid.z, "): ",
                      at_sync, " thread(s) wait at __syncthreads, ", at_warp, " at a warp barrier, ", done,
                      " exited without reaching it"));
}

// Round 0 in `order`: the chain, then, if a thread of it waits at a barrier, the threads
// after it, each a fiber on its own stack.
void run_first_round(Block& b, std::vector<int> order) {
  b.chain = std::move(order);
  b.chain_at = 0;
  b.chain_broken = false;
  Fiber& first = b.fibers[size_t(b.chain.front())];
  first.stack = chain_stack();
  start_context(first, chain_main);
  resume(b, first);
  b.chain_broken = b.chain_at < b.chain.size();
  for (size_t k = b.chain_at + 1; k < b.chain.size(); ++k) {
    Fiber& f = b.fibers[size_t(b.chain[k])];
    f.stack = stack_at(size_t(b.chain[k]));
    start_context(f);
    resume(b, f);
  }
}

void run_block(Block& b, uint64_t block_number) {
  const int n = int(b.block.x * b.block.y * b.block.z);
  b.fibers.assign(size_t(n), Fiber{});
  b.warp_slots.assign(size_t((n + 31) / 32) * 32, 0);
  if (__start_emonext_emu_shared && __stop_emonext_emu_shared)
    std::memset(__start_emonext_emu_shared, kSharedFill, size_t(__stop_emonext_emu_shared - __start_emonext_emu_shared));
  std::fill(b.dynamic.begin(), b.dynamic.end(), kSharedFill);
  for (int i = 0; i < n; ++i) {
    Fiber& f = b.fibers[size_t(i)];
    f.linear = i;
    f.tid = uint3{unsigned(i) % b.block.x, (unsigned(i) / b.block.x) % b.block.y, unsigned(i) / (b.block.x * b.block.y)};
  }
  for (uint64_t round = 0;; ++round) {
    if (round == 0) run_first_round(b, resume_order(n, block_number * 1000003ull));
    else
      for (int i : resume_order(n, block_number * 1000003ull + round))
        if (b.fibers[size_t(i)].state == State::Ready) resume(b, b.fibers[size_t(i)]);
    // Every fiber now waits at a barrier or is done: release what can be released.
    bool all_done = true, all_at_sync = true, released = false;
    for (const Fiber& f : b.fibers) {
      all_done &= f.state == State::Done;
      all_at_sync &= f.state == State::AtBlockBarrier;
    }
    if (all_done) return;
    if (all_at_sync) {
      for (Fiber& f : b.fibers) f.state = State::Ready;
      continue;
    }
    for (int w = 0; w * 32 < n; ++w) {
      // A warp barrier opens when every participant waits at one with the same mask.
      unsigned waiting = 0, mask = 0;
      for (int l = 0; l < lanes_in_warp(b, w); ++l) {
        const Fiber& f = b.fibers[size_t(w * 32 + l)];
        if (f.state == State::AtWarpBarrier) { waiting |= 1u << l; mask = f.warp_mask; }
      }
      if (waiting && (waiting & participants(b, w, mask)) == participants(b, w, mask)) {
        for (int l = 0; l < lanes_in_warp(b, w); ++l)
          if (waiting & (1u << l)) b.fibers[size_t(w * 32 + l)].state = State::Ready;
        released = true;
      }
    }
    if (!released) deadlock(b);
  }
}

void wait_at(State s, unsigned mask = 0) {
  Block& b = *g_block;
  Fiber& f = self();
  f.state = s;
  f.warp_mask = mask;
  suspend(b, f);
}

}  // namespace

void set_schedule(Schedule s) {
  g_schedule = s;
  g_schedule_read = true;
}

Schedule schedule() {
  if (!g_schedule_read) {
    g_schedule_read = true;
    if (const char* env = std::getenv("EMONEXT_EMU_ORDER")) {
      const std::string v = env;
      if (v == "reverse") g_schedule.order = Order::Reverse;
      else if (v.rfind("shuffle", 0) == 0) {
        g_schedule.order = Order::Shuffle;
        g_schedule.seed = v.size() > 8 ? std::stoull(v.substr(8)) : 1;
      } else EMONEXT_CHECK(v == "forward", "EMONEXT_EMU_ORDER: '", v, "' is not forward, reverse or shuffle[:seed]");
    }
  }
  return g_schedule;
}

void set_max_dynamic_shared(const void* kernel, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  g_dynamic_optin[kernel] = bytes;
}

uint64_t launches_named(const std::string& part) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  uint64_t n = 0;
  for (const auto& [name, count] : g_launches_by_name)
    if (name.find(part) != std::string::npos) n += count;
  return n;
}

namespace {

// Runs the grid: blocks one after another, each block's threads as fibers.
void run_grid(const char* name, dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()>& body) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  schedule();
  Block b;
  b.kernel = name;
  b.body = &body;
  b.grid = grid;
  b.block = block;
  b.dynamic.assign(shared_bytes, kSharedFill);
  g_block = &b;
  struct Reset { ~Reset() { g_block = nullptr; } } reset;
  uint64_t number = 0;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        b.bid = uint3{x, y, z};
        run_block(b, number++);
      }
}

std::mutex g_capture_mutex;
cudaStream_t g_captured = nullptr;  // the stream being captured, if any
std::vector<std::function<void()>> g_recorded;
uint64_t g_captured_launches = 0;  // kernel launches recorded by the capture under way
bool g_invalidated = false;

// EMONEXT_EMU_INVALIDATE_CAPTURE (scheduler.h): -1 unset, 0 "end", else the launch.
int64_t invalidate_capture_at() {
  const char* env = std::getenv("EMONEXT_EMU_INVALIDATE_CAPTURE");
  if (!env || !*env) return -1;
  if (std::string(env) == "end") return 0;
  char* end = nullptr;
  const long long n = std::strtoll(env, &end, 10);
  EMONEXT_CHECK(*end == 0 && n >= 1, "EMONEXT_EMU_INVALIDATE_CAPTURE=", env, ": expected \"end\" or a launch number >= 1");
  return n;
}

}  // namespace

void begin_capture(cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(g_capture_mutex);
  EMONEXT_CHECK(!g_captured, "emulation: a capture began while another was under way");
  g_captured = stream;
  g_recorded.clear();
  g_captured_launches = 0;
  g_invalidated = false;
}

std::vector<std::function<void()>> end_capture() {
  std::lock_guard<std::mutex> lock(g_capture_mutex);
  g_captured = nullptr;
  g_invalidated = false;
  return std::exchange(g_recorded, {});
}

bool capture_invalidated() {
  std::lock_guard<std::mutex> lock(g_capture_mutex);
  return g_captured && (g_invalidated || invalidate_capture_at() == 0);
}

bool capturing(cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(g_capture_mutex);
  return g_captured && g_captured == stream;
}

void run_or_record(cudaStream_t stream, std::function<void()> work) {
  {
    std::lock_guard<std::mutex> lock(g_capture_mutex);
    if (g_captured && g_captured == stream) {
      g_recorded.push_back(std::move(work));
      return;
    }
  }
  work();
}

cudaError_t launch(const char* name, const void* kernel, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                   const std::function<void()>& body) {
  {
    std::lock_guard<std::mutex> lock(g_launch_mutex);
    const uint64_t threads = uint64_t(block.x) * block.y * block.z;
    if (threads == 0 || threads > uint64_t(kMaxThreadsPerBlock) || block.x > 1024 || block.y > 1024 || block.z > 64)
      return cudaErrorInvalidConfiguration;
    if (grid.y > 65535 || grid.z > 65535 || grid.x > 2147483647u) return cudaErrorInvalidConfiguration;
    const auto optin = g_dynamic_optin.find(kernel);
    const size_t limit = optin == g_dynamic_optin.end() ? kSharedPerBlockDefault : std::min(optin->second, kSharedPerBlockOptin);
    if (shared_bytes > limit) return cudaErrorInvalidValue;
  }
  {
    std::lock_guard<std::mutex> lock(g_capture_mutex);
    if (g_captured && g_captured == stream) {
      const int64_t at = invalidate_capture_at();
      if (at > 0 && int64_t(++g_captured_launches) >= at) g_invalidated = true;
      if (g_invalidated) return cudaErrorStreamCaptureInvalidated;
    }
  }
  {
    std::lock_guard<std::mutex> lock(g_launch_mutex);
    ++g_launches_by_name[name];
  }
  run_or_record(stream, [=] { run_grid(name, grid, block, shared_bytes, body); });
  return cudaSuccess;
}

// ---- what cuda_emulation.h declares ----

uint3& thread_idx() { return self().tid; }
uint3& block_idx() { self(); return g_block->bid; }
dim3& block_dim() { self(); return g_block->block; }
dim3& grid_dim() { self(); return g_block->grid; }
int lane_id() { return self().linear % 32; }
void* dynamic_shared() { self(); return g_block->dynamic.data(); }

void syncthreads() { wait_at(State::AtBlockBarrier); }

void syncwarp(unsigned mask) {
  const Fiber& f = self();
  EMONEXT_CHECK(mask & (1u << (f.linear % 32)), "emulation: kernel ", g_block->kernel, ": lane ", f.linear % 32,
                " calls a warp operation with a mask (", mask, ") that does not include it");
  wait_at(State::AtWarpBarrier, mask);
}

uint64_t warp_exchange(unsigned mask, uint64_t bits, int src_lane) {
  Fiber& f = self();
  const int warp = f.linear / 32;
  g_block->warp_slots[size_t(f.linear)] = bits;
  syncwarp(mask);  // every participant has written
  const int src = warp * 32 + src_lane;
  const bool valid = src_lane >= 0 && src_lane < lanes_in_warp(*g_block, warp) && (mask & (1u << src_lane));
  const uint64_t v = valid ? g_block->warp_slots[size_t(src)] : bits;  // an inactive source lane: own value
  syncwarp(mask);  // every participant has read before any slot is written again
  return v;
}

unsigned warp_ballot(unsigned mask, bool predicate) {
  Fiber& f = self();
  const int warp = f.linear / 32;
  g_block->warp_slots[size_t(f.linear)] = predicate ? 1 : 0;
  syncwarp(mask);
  unsigned ballot = 0;
  for (int l = 0; l < lanes_in_warp(*g_block, warp); ++l)
    if ((mask & (1u << l)) && g_block->warp_slots[size_t(warp * 32 + l)]) ballot |= 1u << l;
  syncwarp(mask);
  return ballot;
}

}  // namespace emonext::emu
