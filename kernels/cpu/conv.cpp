// Dense convolution on the CPU (channels-last), without the batch's im2col matrix.
//
// As unfold + one GEMM, a convolution writes every patch of the batch, kh * kw times the
// input (49x for the spatial transformer's 7x7 convolution: 66 MB at batch 64 and
// 48 x 48, 1.8 GB at 224), and the GEMM reads them back: both passes run at memory speed
// and the product, with its 8 or 10 output channels, does little with each value. Here a
// task is a band of output rows of one image, sized so that its patches stay in cache:
// it is unfolded into the thread's buffer and multiplied there.
//   forward          y[band] = cols(band) W^T
//   weight gradient  dW += dy[band]^T cols(band), in partials over fixed runs of bands,
//                    added in order (the same bits whatever the number of threads)
//   input gradient   dcols = dy[band] W, added back to the pixels the patches came from;
//                    an image's bands run on one thread, so no two write the same dx
// PyTorch's CPU convolution also works an image at a time.
#include <algorithm>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/unfold.h"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cpu {

namespace {

// Patch values per band: 64 Ki, 256 KB in f32, which with the band's outputs stays in a
// core's L2.
constexpr int64_t kBandValues = int64_t(1) << 16;

// Output rows [oy0, oy1) of image n.
struct Band {
  int64_t n, oy0, oy1;
};

struct Bands {
  int64_t k = 0;          // patch length, kh * kw * c
  int64_t ho = 0;         // output rows per image
  int64_t rows = 0;       // output rows per band (the last of an image may have fewer)
  int64_t per_image = 0;  // bands per image
  explicit Bands(const Unfold& p) : k(p.kh * p.kw * p.c), ho(p.ho) {
    rows = std::clamp<int64_t>(kBandValues / std::max<int64_t>(1, p.wo * k), 1, std::max<int64_t>(1, p.ho));
    per_image = (p.ho + rows - 1) / rows;
  }
  // Band t of the batch, image by image.
  Band operator[](int64_t t) const {
    const int64_t oy0 = t % per_image * rows;
    return {t / per_image, oy0, std::min(ho, oy0 + rows)};
  }
};

// The weight gradient's bands go in this many runs of consecutive bands, each summed
// into a partial of its own and the partials then added in order: the same bits
// whatever the number of threads (up to this many share the work).
constexpr int64_t kWeightGroups = 32;

bool worth_threads(const Unfold& p, int64_t cout) { return p.n * p.ho * p.wo * p.kh * p.kw * p.c * cout > (1 << 18); }

// The adjoint of unfold_rows, added into image n of dx: each patch value goes back to
// the pixel it was read from.
template <class T>
void fold_rows_add(const Unfold& p, const T* cols, int64_t n, int64_t oy0, int64_t oy1, T* dx) {
  for_each_window_row(p, n, oy0, oy1, [&](int64_t first, int64_t pixel, int64_t j0, int64_t j1) {
    const T* src = cols + first + j0 * p.c;
    T* dst = dx + pixel * p.c;
    for (int64_t v = 0; v < (j1 - j0) * p.c; ++v) dst[v] += src[v];
  });
}

// The products go to BLAS: f32 and f64 only (core/ops_conv.cpp sends 16-bit maps the
// unfold + GEMM way).
template <class F>
void dispatch_f32_f64(DType dtype, const char* what, F f) {
  if (dtype == DType::F32)
    f(Tag<float>{});
  else if (dtype == DType::F64)
    f(Tag<double>{});
  else
    fail(detail::concat(what, ": f32 and f64 only, got ", dtype));
}

void banded_forward(const Unfold& p, int64_t cout, void* y, const void* x, const void* w) {
  single_threaded_blas();
  dispatch_f32_f64(p.dtype, "conv2d_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Bands b(p);
    const int64_t tasks = p.n * b.per_image;
#pragma omp parallel if (tasks > 1 && worth_threads(p, cout))
    {
      std::vector<T> cols(size_t(b.rows * p.wo * b.k));
#pragma omp for schedule(static)
      for (int64_t t = 0; t < tasks; ++t) {
        const Band r = b[t];
        unfold_rows(p, static_cast<const T*>(x), r.n, r.oy0, r.oy1, cols.data());
        blas_gemm<T>(false, true, (r.oy1 - r.oy0) * p.wo, cout, b.k, T(1), cols.data(), b.k, static_cast<const T*>(w), b.k, T(0),
                     static_cast<T*>(y) + (r.n * p.ho + r.oy0) * p.wo * cout, cout);
      }
    }
  });
}

void banded_backward_weight(const Unfold& p, int64_t cout, void* dw, const void* dy, const void* x) {
  single_threaded_blas();
  dispatch_f32_f64(p.dtype, "conv2d_backward_weight", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Bands b(p);
    const int64_t tasks = p.n * b.per_image, size = cout * b.k, groups = std::min(tasks, kWeightGroups);
    std::vector<T> partial(size_t(groups * size), T(0));
#pragma omp parallel if (groups > 1 && worth_threads(p, cout))
    {
      std::vector<T> cols(size_t(b.rows * p.wo * b.k));
#pragma omp for schedule(static)
      for (int64_t g = 0; g < groups; ++g)
        for (int64_t t = g * tasks / groups; t < (g + 1) * tasks / groups; ++t) {
          const Band r = b[t];
          unfold_rows(p, static_cast<const T*>(x), r.n, r.oy0, r.oy1, cols.data());
          blas_gemm<T>(true, false, cout, b.k, (r.oy1 - r.oy0) * p.wo, T(1),
                       static_cast<const T*>(dy) + (r.n * p.ho + r.oy0) * p.wo * cout, cout, cols.data(), b.k, T(1),
                       partial.data() + g * size, b.k);
        }
    }
    T* out = static_cast<T*>(dw);
    std::copy_n(partial.data(), size, out);
    for (int64_t g = 1; g < groups; ++g)
      for (int64_t v = 0; v < size; ++v) out[v] += partial[size_t(g * size + v)];
  });
}

void banded_backward_input(const Unfold& p, int64_t cout, void* dx, const void* dy, const void* w) {
  single_threaded_blas();
  dispatch_f32_f64(p.dtype, "conv2d_backward_input", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const Bands b(p);
#pragma omp parallel if (p.n > 1 && worth_threads(p, cout))
    {
      std::vector<T> dcols(size_t(b.rows * p.wo * b.k));
#pragma omp for schedule(static)
      for (int64_t n = 0; n < p.n; ++n) {
        T* image = static_cast<T*>(dx) + n * p.h * p.w * p.c;
        std::fill(image, image + p.h * p.w * p.c, T(0));
        for (int64_t t = n * b.per_image; t < (n + 1) * b.per_image; ++t) {
          const Band r = b[t];
          blas_gemm<T>(false, false, (r.oy1 - r.oy0) * p.wo, b.k, cout, T(1),
                       static_cast<const T*>(dy) + (r.n * p.ho + r.oy0) * p.wo * cout, cout, static_cast<const T*>(w), b.k, T(0),
                       dcols.data(), b.k);
          fold_rows_add(p, dcols.data(), r.n, r.oy0, r.oy1, static_cast<T*>(dx));
        }
      }
    }
  });
}

}  // namespace

bool conv2d_forward(const Unfold& p, int64_t cout, void* y, const void* x, const void* w, Stream) {
  if (p.dtype != DType::F32 && p.dtype != DType::F64) return false;
  banded_forward(p, cout, y, x, w);
  return true;
}

bool conv2d_backward(const Unfold& p, int64_t cout, void* dx, void* dw, const void* dy, const void* x, const void* w, Stream) {
  if (p.dtype != DType::F32 && p.dtype != DType::F64) return false;
  if (dx) banded_backward_input(p, cout, dx, dy, w);
  banded_backward_weight(p, cout, dw, dy, x);
  return true;
}

}  // namespace emonext::kernels::cpu
