// The collectives of a data-parallel run on tensors (core/dist.h carries the bytes):
// all_reduce_sum_ in place (the gradient buckets), and the differentiable all_reduce_sum
// and all_gather that --sync-batch's BatchNorm and attention are written with.
#include "core/autograd.h"
#include "core/backend.h"
#include "core/dist.h"
#include "core/op_checks.h"
#include "core/ops.h"

namespace emonext {

void all_reduce_sum_start(Tensor& t, const char* what) {
  if (dist::size() == 1) return;
  EMONEXT_CHECK(t.is_contiguous() && (t.dtype() == DType::F32 || t.dtype() == DType::F64),
                what, ": all-reduces contiguous f32 or f64 tensors, got ", t.str());
  auto reduce = [&](void* p) {
    if (t.dtype() == DType::F32) dist::all_reduce_sum(static_cast<float*>(p), t.numel(), what);
    else dist::all_reduce_sum(static_cast<double*>(p), t.numel(), what);
  };
  if (t.device().is_cpu()) return reduce(t.data_ptr());
#if EMONEXT_CUDA_EMULATION
  // Device memory is host memory in the emulation build: MPI carries it as it is, once
  // the stream has written it.
  kernels::cuda::synchronize(t.device().index);
  reduce(t.data_ptr());
#elif EMONEXT_WITH_NCCL
  // On the GPU, on NCCL's stream beside the device's. The communicator is made at the
  // first sum: rank 0's id sent to the others over MPI.
  const int device = t.device().index;
  if (!kernels::cuda::nccl_ready()) {
    char id[kernels::cuda::kNcclIdBytes] = {};
    if (dist::rank() == 0) kernels::cuda::nccl_unique_id(id);
    dist::broadcast_bytes(id, sizeof id, 0, "NCCL's id");
    kernels::cuda::nccl_init(id, dist::rank(), dist::size(), device);
  }
  kernels::cuda::nccl_all_reduce_sum_start(t.data_ptr(), t.numel(), t.dtype() == DType::F64, device);
#else
  // Through host memory (a GPU without NCCL between the ranks).
  Tensor host = t.to(Device::cpu());
  reduce(host.data_ptr());
  NoGradGuard no_grad;
  t.copy_(host);
#endif
}

void all_reduce_sum_join(Device device) {
#if EMONEXT_WITH_NCCL && !EMONEXT_CUDA_EMULATION
  if (dist::size() > 1 && device.is_cuda()) kernels::cuda::nccl_join(device.index);
#else
  (void)device;
#endif
}

void all_reduce_sum_wait(Device device, const char* what) {
#if EMONEXT_WITH_NCCL && !EMONEXT_CUDA_EMULATION
  if (dist::size() > 1 && device.is_cuda() && !kernels::cuda::nccl_wait(device.index, dist::timeout()))
    dist::abort_timed_out(std::string(what) + " (NCCL)");
#else
  (void)device;
  (void)what;
#endif
}

void all_reduce_sum_(Tensor& t, const char* what) {
  all_reduce_sum_start(t, what);
  all_reduce_sum_join(t.device());
  all_reduce_sum_wait(t.device(), what);
}

namespace {
// x's values summed over the ranks, in f32 (f64 stays f64), on x's device and dtype.
Tensor reduced(const Tensor& x, const char* what) {
  NoGradGuard no_grad;
  const DType wide = x.dtype() == DType::F64 ? DType::F64 : DType::F32;
  Tensor s = x.to(wide).contiguous().clone();
  all_reduce_sum_(s, what);
  return s.to(x.dtype());
}
}  // namespace

Tensor all_reduce_sum(const Tensor& x) {
  check_floating("all_reduce_sum", x);
  Tensor out = reduced(x, "all_reduce_sum");
  // Every rank's loss reads the sum, so x's gradient is the sum of the ranks' gradients.
  return record(out, "all_reduce_sum", {x}, [](const Tensor& g) { return std::vector<Tensor>{reduced(g, "all_reduce_sum backward")}; });
}

Tensor all_gather(const Tensor& x) {
  check_floating("all_gather", x);
  EMONEXT_CHECK(x.dim() >= 1, "all_gather: gathers along dim 0, got ", x.str());
  Tensor out;
  int64_t first = 0;
  {
    NoGradGuard no_grad;
    const Tensor host = x.to(Device::cpu()).contiguous();
    const int64_t row_bytes = host.numel() / std::max<int64_t>(1, x.size(0)) * int64_t(dtype_size(x.dtype()));
    std::vector<int64_t> sizes;
    const std::vector<char> all =
        dist::all_gather_bytes(host.data_ptr(), int64_t(host.numel()) * int64_t(dtype_size(x.dtype())), &sizes, "all_gather");
    for (int r = 0; r < dist::rank(); ++r) first += row_bytes ? sizes[size_t(r)] / row_bytes : 0;
    Shape shape = x.shape();
    shape[0] = row_bytes ? int64_t(all.size()) / row_bytes : 0;
    out = Tensor::from_bytes(all.data(), shape, x.dtype(), x.device());
  }
  const int64_t rows = x.size(0);
  // Each rank's rows feed every rank's loss: their gradient is the ranks' gradients of
  // the gathered tensor summed, then this rank's rows of it.
  return record(out, "all_gather", {x}, [=](const Tensor& g) {
    return std::vector<Tensor>{reduced(g, "all_gather backward").slice(0, first, first + rows)};
  });
}

}  // namespace emonext
