// The emulation's grid runner: blocks one after another, the threads of a
// block as fibers, in an order that tests can change to expose missing barriers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <cuda_runtime.h>

namespace emonext::emu {

enum class Order { Forward, Reverse, Shuffle };

struct Schedule {
  Order order = Order::Forward;
  uint64_t seed = 0;  // for Shuffle
};

// The order in which runnable threads of a block are resumed between barriers.
// The default comes from EMONEXT_EMU_ORDER = forward | reverse | shuffle[:seed].
void set_schedule(Schedule s);
Schedule schedule();

// The device limits the emulation enforces, as an H100 reports them.
constexpr int kMaxThreadsPerBlock = 1024;
constexpr size_t kSharedPerBlockDefault = 48 * 1024;
constexpr size_t kSharedPerBlockOptin = 227 * 1024;
constexpr int kMultiProcessors = 132;

// Per-kernel opt-in to more dynamic shared memory (cudaFuncSetAttribute).
void set_max_dynamic_shared(const void* kernel, size_t bytes);

// Launches so far (each run to its end or not) of kernels whose name, as
// EMONEXT_LAUNCH spelt it, contains `part`: lets a test see which of an op's kernels ran.
uint64_t launches_named(const std::string& part);

// Runs body once per thread of the grid, at once or, while `stream` is captured, at each
// replay of the graph (body must then hold copies of the kernel's arguments). Returns the
// error a GPU would give for a bad configuration, at the launch; throws emonext::Error on
// a deadlock, naming the kernel.
cudaError_t launch(const char* name, const void* kernel, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                   const std::function<void()>& body);

// Stream capture (CUDA graphs; runtime.cpp): while one stream is captured, the work
// queued on it (kernels, copies, memsets, gemms, fresh memory's 0xFF fill) is recorded
// in order instead of run, and a replay runs the record.
// EMONEXT_EMU_INVALIDATE_CAPTURE=N makes a capture fail as a GPU's does when a call it
// cannot record is made (cuDNN's or a library's host wait, a legacy-stream call): from
// the capture's Nth kernel launch on, launches on the captured stream return
// cudaErrorStreamCaptureInvalidated, and cudaStreamEndCapture returns it with no graph;
// "end" invalidates it at cudaStreamEndCapture only. Tests force the engine's fallback
// with it.
void begin_capture(cudaStream_t stream);
std::vector<std::function<void()>> end_capture();
bool capturing(cudaStream_t stream);
bool capture_invalidated();  // the capture under way was invalidated (or is, at its end)
// Runs `work` now, or records it when `stream` is being captured.
void run_or_record(cudaStream_t stream, std::function<void()> work);

}  // namespace emonext::emu
