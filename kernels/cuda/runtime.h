// The CUDA runtime as the engine uses it, with no CUDA header in sight so that
// core/ can include it in every build. One stream per device carries all of
// the engine's work on that device; memory comes from that device's
// stream-ordered pool (cudaMallocAsync), which keeps freed blocks for reuse.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/view.h"

namespace emonext::kernels::cuda {

// Number of usable GPUs; 0 (never an exception) when no driver or device answers.
int device_count();
// Why device_count() is 0, in words, for skip messages and errors.
std::string unavailable_reason();

void set_device(int device);
int current_device();
Stream stream(int device);

void* allocate(size_t bytes, int device);
void deallocate(void* ptr, int device);

enum class CopyKind { HostToDevice, DeviceToHost, DeviceToDevice };
// Ordered on the device's stream; returns once the host side may be reused or read.
void memcpy(void* dst, const void* src, size_t bytes, CopyKind kind, int device);
void synchronize(int device);
// Times the host has waited for a GPU's queue so far (all devices): synchronize() and
// every copy to or from pageable host memory. A training step aims at none.
uint64_t host_waits();

// ---- the training input's way up without a host wait (core/staging.h) ----
// Page-locked host memory: a copy from it runs on the GPU's copy engine while the host
// goes on.
void* allocate_pinned(size_t bytes);
void free_pinned(void* p) noexcept;
// An event (a cudaEvent_t without timing): a point in a stream's work.
using Event = void*;
Event event_create();
void event_destroy(Event e) noexcept;
// Queues dst <- src (`bytes` of pinned host memory) on the device's copy stream, a second
// stream beside the one that computes: after the compute stream's work up to `after`
// (an event record_event put there; one never recorded holds nothing back), and records
// `done` there after the copy.
void copy_in_async(void* dst, const void* src, size_t bytes, int device, Event after, Event done);
// Records e on the device's compute stream, after the work queued there so far.
void record_event(Event e, int device);
// The compute stream's later work waits for e: a wait on the GPU, not on the host.
void stream_wait_event(Event e, int device);
// The host waits for e; counted in host_waits() when e had not completed.
void host_wait_event(Event e);

// ---- CUDA graphs (core/graph.h): a stream's work recorded once, replayed many times ----
// While the device's compute stream is captured, the work queued on it is recorded, not
// run. The memory allocated meanwhile is the graph's (the same addresses at every
// replay, no values kept from one replay to the next) and must be freed before the
// capture ends; memory from before the capture that is freed meanwhile is released
// after the graph's first replay (the graph may still read it until then). A host wait
// meanwhile (a copy to or from pageable host memory, synchronize) or work on the copy
// stream is an error that names what was tried.
using Graph = void*;
void begin_capture(int device);
// Ends the capture; returns the graph, ready to replay. Fails (discarding it) when the
// capture was invalidated or memory allocated during it is still held. A discarded
// capture's blocks that are still held are abandoned: their addresses were the graph's,
// so freeing them later only drops them from the bookkeeping (no cudaFreeAsync).
Graph end_capture(int device);
// Ends a capture that failed, discarding what it recorded (as above). Never throws.
void abandon_capture(int device) noexcept;
void replay(Graph g, int device);
void graph_destroy(Graph g, int device) noexcept;

// The engine's allocations (bytes its tensors hold, now and at most), and what the device
// holds for them by CUDA's own count: the stream-ordered pool's reserved memory (freed
// blocks stay there for reuse) and the CUDA graphs' memory (a graph's allocations have
// memory of their own, beside the pool), each now and at most (0 where CUDA cannot say).
struct MemoryStats {
  size_t in_use = 0, peak = 0, allocations = 0;
  size_t pool_reserved = 0, pool_reserved_peak = 0, graph_reserved = 0, graph_reserved_peak = 0;
};
MemoryStats memory_stats(int device);
// Returns the pool's unused memory to the device (what an eager warm-up left once a
// graph replays the step with memory of its own).
void trim_pool(int device);

// Work this process has put on GPU streams, all devices together: kernels launched
// through EMONEXT_LAUNCH plus calls into cuBLAS and cuDNN (each of which launches
// one or more kernels of its own). A step made of many small launches is bound by
// the host's launch rate, not by the GPU; the training benchmark reports the count.
uint64_t launches();
// Called after each launch (`name`: the kernel or library call). It counts it, and when
// EMONEXT_SYNC_LAUNCHES=1 is set in the environment (a debugging switch: every launch
// then waits for the GPU) it waits for the device and fails naming `name` if the GPU
// reports an error, so that a fault is named at the launch that caused it rather than
// at the next copy to the host.
void count_launch(const char* name);
bool sync_launches();

}  // namespace emonext::kernels::cuda
