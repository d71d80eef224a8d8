#include "core/graph.h"

#include "core/backend.h"
#include "core/base/error.h"

namespace emonext {

#if EMONEXT_WITH_CUDA

GpuGraph::GpuGraph(Device device, const std::function<void()>& queue) : device_(device) {
  EMONEXT_CHECK(device_.is_cuda(), "a GPU graph records a CUDA device's work; ", device_.str(), " is not one");
  kernels::cuda::set_device(device_.index);
  kernels::cuda::begin_capture(device_.index);
  try {
    queue();
  } catch (...) {
    kernels::cuda::abandon_capture(device_.index);
    throw;
  }
  graph_ = kernels::cuda::end_capture(device_.index);
}

GpuGraph::~GpuGraph() { kernels::cuda::graph_destroy(graph_, device_.index); }

void GpuGraph::replay() const {
  kernels::cuda::set_device(device_.index);
  kernels::cuda::replay(graph_, device_.index);
}

#else

GpuGraph::GpuGraph(Device device, const std::function<void()>&) : device_(device) { fail_no_cuda(); }
GpuGraph::~GpuGraph() = default;
void GpuGraph::replay() const { fail_no_cuda(); }

#endif

}  // namespace emonext
