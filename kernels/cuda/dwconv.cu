// Depthwise KxK convolution, stride 1, padding K/2, channels-last (CUDA), with the
// weight in PyTorch's layout [C, K*K]; formulas as in kernels/cpu/dwconv.cpp. The
// forward and the input gradient are one correlation (the latter with the kernel
// flipped).
//
// For K = 3, 5, 7 the correlation is tiled: a block of 32 channels x 8 rows of
// threads computes an 8 x 8 tile of outputs for 32 channels. It first stages the
// (8 + K - 1)^2 x 32 input tile in shared memory (each input value read from DRAM
// once per tile, a warp reading 32 consecutive channels), then each thread keeps
// its channel's K*K taps in registers and produces one output row of 8 with a
// sliding window of 8 + K - 1 values. The weight gradient is tiled the same way
// (dwconv_weight_tiled_kernel), and takes the bias gradient (the sums of dy) from
// the dy tile it has staged anyway. For bf16 and f16 (C even) a thread takes two
// channels instead (dwconv_correlate_pairs_kernel, dwconv_weight_pairs_kernel: 32-bit
// loads, 16-bit tiles; DwConv::packed = false keeps the one-channel kernels). Other
// K, and f64, use the simple kernels: one thread per output element, and one per (row
// chunk, tap, channel) for the weight gradient, whose centre tap, which sees every dy,
// sums the bias gradient. Every weight and bias gradient sums fixed chunks and then
// adds the chunks in a fixed order: the same bits run after run.
#include <algorithm>

#include "kernels/cuda/cuda_types.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/pack.cuh"
#include "kernels/cuda/partials.cuh"
#include "kernels/cuda/workspace.cuh"
#include "kernels/dispatch.h"
#include "kernels/kernels.h"

namespace emonext::kernels::cuda {

namespace {

constexpr unsigned kThreads = 256;

constexpr int kTile = 8;          // outputs per tile side
constexpr int kTileChannels = 32;  // one warp's worth

// Loads the (8 + K - 1)^2 x 32 input window whose top-left is (h0 - K/2, w0 - K/2) in
// image n into shared memory, zeros outside the image or past C. Every thread of the
// (32, 8) block takes part; the caller places the barrier.
template <class T, int K>
__device__ void stage_input_tile(acc_t<T>* tile, const T* x, const DwConv& p, int64_t n, int64_t h0, int64_t w0, int64_t c) {
  constexpr int kIn = kTile + K - 1;
  const int64_t pad = K / 2;
  for (int pos = int(threadIdx.y); pos < kIn * kIn; pos += int(blockDim.y)) {
    const int64_t hi = h0 - pad + pos / kIn, wi = w0 - pad + pos % kIn;
    const bool in = c < p.c && hi >= 0 && hi < p.h && wi >= 0 && wi < p.w;
    tile[pos * kTileChannels + threadIdx.x] = in ? load(x[((n * p.h + hi) * p.w + wi) * p.c + c]) : acc_t<T>(0);
  }
}

// y[n,h,w,c] = b[c] + sum_{i,j} x[n, h+i-p, w+j-p, c] * w[c, i*K+j]; with flip the
// taps run (K-1-i, K-1-j). Grid: (tiles of H x W, channel groups, N); block (32, 8).
template <class T, int K>
__global__ void __launch_bounds__(256) dwconv_correlate_tiled_kernel(DwConv p, T* y, const T* x, const T* w, const T* b, bool flip) {
  using A = acc_t<T>;
  constexpr int kIn = kTile + K - 1;
  __shared__ A tile[kIn * kIn * kTileChannels];
  const int lane = int(threadIdx.x), row = int(threadIdx.y);
  const int64_t tiles_w = (p.w + kTile - 1) / kTile;
  const int64_t h0 = int64_t(blockIdx.x) / tiles_w * kTile, w0 = int64_t(blockIdx.x) % tiles_w * kTile;
  const int64_t c = int64_t(blockIdx.y) * kTileChannels + lane, n = blockIdx.z;
  stage_input_tile<T, K>(tile, x, p, n, h0, w0, c);
  __syncthreads();
  if (c >= p.c || h0 + row >= p.h) return;  // after the barrier: every thread helped stage
  // Fully unrolled, so that taps, window and acc live in registers, not local memory.
  A taps[K * K];
#pragma unroll
  for (int t = 0; t < K * K; ++t) taps[t] = load(w[c * (K * K) + (flip ? K * K - 1 - t : t)]);
  A acc[kTile];
  const A bias = b ? load(b[c]) : A(0);
#pragma unroll
  for (int j = 0; j < kTile; ++j) acc[j] = bias;
#pragma unroll
  for (int i = 0; i < K; ++i) {
    A window[kIn];
#pragma unroll
    for (int q = 0; q < kIn; ++q) window[q] = tile[((row + i) * kIn + q) * kTileChannels + lane];
#pragma unroll
    for (int j = 0; j < kTile; ++j)
#pragma unroll
      for (int q = 0; q < K; ++q) acc[j] += window[j + q] * taps[i * K + q];
  }
#pragma unroll
  for (int j = 0; j < kTile; ++j)
    if (w0 + j < p.w) y[((n * p.h + h0 + row) * p.w + w0 + j) * p.c + c] = store<T>(acc[j]);
}

// For two channels per thread: loads the side x side window of src (an [n, h, w, c]
// tensor of p's shape) whose top-left is (top, left) in image n as 16-bit pairs as they
// are (channels c and c + 1 of each pixel, c even), zeros outside the image or past C.
// Every thread of the (32, 8) block takes part; the caller places the barrier.
template <class T, int side>
__device__ void stage_pairs(Pack<T, 2>* tile, const T* src, const DwConv& p, int64_t n, int64_t top, int64_t left, int64_t c) {
  Pack<T, 2> zero;
  zero.v[0] = zero.v[1] = store<T>(0.0f);
  for (int pos = int(threadIdx.y); pos < side * side; pos += int(blockDim.y)) {
    const int64_t hi = top + pos / side, wi = left + pos % side;
    const bool in = c < p.c && hi >= 0 && hi < p.h && wi >= 0 && wi < p.w;
    tile[pos * kTileChannels + threadIdx.x] = in ? load_pack<2>(src + ((n * p.h + hi) * p.w + wi) * p.c + c) : zero;
  }
}

// The same correlation for bf16/f16 with two channels per thread: a block covers 64
// channels, and every global and shared-memory access moves a pair of 16-bit values
// (a warp reads a row's 128 contiguous bytes where the kernel above reads 64, and one
// shared load feeds two channels' FMAs), while the tile keeps the input's 16-bit
// values (25 KB at K = 7, as the f32 tile above). The taps are read one row of K per
// channel at a time, from the weight (L1-resident), so that two channels' windows and
// accumulators fit in the registers that one channel's 49 taps took. The arithmetic is
// the kernel above's, in the same order, in f32: the same bits.
template <class T, int K>
__global__ void __launch_bounds__(256) dwconv_correlate_pairs_kernel(DwConv p, T* y, const T* x, const T* w, const T* b, bool flip) {
  using P = Pack<T, 2>;
  constexpr int kIn = kTile + K - 1;
  __shared__ P tile[kIn * kIn * kTileChannels];
  const int lane = int(threadIdx.x), row = int(threadIdx.y);
  const int64_t tiles_w = (p.w + kTile - 1) / kTile;
  const int64_t h0 = int64_t(blockIdx.x) / tiles_w * kTile, w0 = int64_t(blockIdx.x) % tiles_w * kTile;
  const int64_t c = (int64_t(blockIdx.y) * kTileChannels + lane) * 2, n = blockIdx.z;  // channels c, c + 1
  stage_pairs<T, kIn>(tile, x, p, n, h0 - K / 2, w0 - K / 2, c);
  __syncthreads();
  if (c >= p.c || h0 + row >= p.h) return;  // after the barrier: every thread helped stage
  const T *w_a = w + c * (K * K), *w_b = w_a + K * K;
  float acc_a[kTile], acc_b[kTile];
  const float bias_a = b ? load(b[c]) : 0.0f, bias_b = b ? load(b[c + 1]) : 0.0f;
#pragma unroll
  for (int j = 0; j < kTile; ++j) acc_a[j] = bias_a, acc_b[j] = bias_b;
#pragma unroll
  for (int i = 0; i < K; ++i) {
    float taps_a[K], taps_b[K], window_a[kIn], window_b[kIn];
#pragma unroll
    for (int q = 0; q < K; ++q) {
      const int t = flip ? K * K - 1 - (i * K + q) : i * K + q;
      taps_a[q] = load(w_a[t]), taps_b[q] = load(w_b[t]);
    }
#pragma unroll
    for (int q = 0; q < kIn; ++q) {
      const P v = tile[((row + i) * kIn + q) * kTileChannels + lane];
      window_a[q] = load(v.v[0]), window_b[q] = load(v.v[1]);
    }
#pragma unroll
    for (int j = 0; j < kTile; ++j)
#pragma unroll
      for (int q = 0; q < K; ++q) {
        acc_a[j] += window_a[j + q] * taps_a[q];
        acc_b[j] += window_b[j + q] * taps_b[q];
      }
  }
#pragma unroll
  for (int j = 0; j < kTile; ++j)
    if (w0 + j < p.w) {
      P out;
      out.v[0] = store<T>(acc_a[j]), out.v[1] = store<T>(acc_b[j]);
      store_pack<2>(y + ((n * p.h + h0 + row) * p.w + w0 + j) * p.c + c, out);
    }
}

// Weight gradient, tiled: block (32 channels, 8 rows) for channel group blockIdx.y walks
// output tiles [first, first + tiles_per_block) of the flattened (n, tile) space. Each
// thread sums dy[row][col] * x[row + i][col + j] for its channel over its tile row into
// K*K registers, and dy[row][col] into one more for the bias; at the end the 8 rows are
// added in a fixed order and the block writes its partials, part_w [C, K*K] (through
// shared memory, so that the writes are coalesced) and part_b [C] when wanted, for the
// fixed-order chunk sums.
template <class T, int K>
__global__ void __launch_bounds__(256) dwconv_weight_tiled_kernel(DwConv p, acc_t<T>* part_w, acc_t<T>* part_b, const T* dy,
                                                                  const T* x, int64_t tiles_per_block) {
  using A = acc_t<T>;
  constexpr int kIn = kTile + K - 1;
  __shared__ A xs[kIn * kIn * kTileChannels];
  __shared__ A gs[kTile * kTile * kTileChannels];
  const int lane = int(threadIdx.x), row = int(threadIdx.y);
  const int64_t c = int64_t(blockIdx.y) * kTileChannels + lane;
  const int64_t tiles_w = (p.w + kTile - 1) / kTile, tiles_h = (p.h + kTile - 1) / kTile;
  const int64_t total = p.n * tiles_h * tiles_w, first = int64_t(blockIdx.x) * tiles_per_block;
  A acc[K * K + 1];  // the taps, then the bias
#pragma unroll
  for (int t = 0; t <= K * K; ++t) acc[t] = 0;
  for (int64_t tile = first; tile < first + tiles_per_block && tile < total; ++tile) {
    const int64_t n = tile / (tiles_h * tiles_w), h0 = (tile / tiles_w) % tiles_h * kTile, w0 = tile % tiles_w * kTile;
    __syncthreads();  // the previous tile's reads are done
    stage_input_tile<T, K>(xs, x, p, n, h0, w0, c);
    for (int pos = row; pos < kTile * kTile; pos += blockDim.y) {
      const int64_t ho = h0 + pos / kTile, wo = w0 + pos % kTile;
      const bool in = c < p.c && ho < p.h && wo < p.w;
      gs[pos * kTileChannels + lane] = in ? load(dy[((n * p.h + ho) * p.w + wo) * p.c + c]) : A(0);
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < K; ++i) {
      A window[kIn];
#pragma unroll
      for (int q = 0; q < kIn; ++q) window[q] = xs[((row + i) * kIn + q) * kTileChannels + lane];
#pragma unroll
      for (int col = 0; col < kTile; ++col) {
        const A g = gs[(row * kTile + col) * kTileChannels + lane];
#pragma unroll
        for (int j = 0; j < K; ++j) acc[i * K + j] += g * window[col + j];
      }
    }
#pragma unroll
    for (int col = 0; col < kTile; ++col) acc[K * K] += gs[(row * kTile + col) * kTileChannels + lane];
  }
  // Add the 8 rows' sums in a fixed order, one tap at a time through gs; row 0 keeps the
  // taps' sums in xs as [32 channels, K*K] (the input tile is no longer needed).
  for (int t = 0; t <= K * K; ++t) {
    __syncthreads();
    gs[row * kTileChannels + lane] = acc[t];
    __syncthreads();
    if (row == 0) {
      A sum = 0;
      for (int r = 0; r < kTile; ++r) sum += gs[r * kTileChannels + lane];
      if (t < K * K) xs[lane * (K * K) + t] = sum;
      else if (part_b && c < p.c) part_b[int64_t(blockIdx.x) * p.c + c] = sum;
    }
  }
  __syncthreads();
  // The group's channels are consecutive rows of [C, K*K]: one contiguous run of part_w.
  const int64_t c0 = int64_t(blockIdx.y) * kTileChannels;
  const int64_t run = (std::min<int64_t>(p.c - c0, kTileChannels)) * (K * K);
  A* out = part_w + int64_t(blockIdx.x) * p.c * (K * K) + c0 * (K * K);
  for (int64_t q = row * kTileChannels + lane; q < run; q += kTileChannels * kTile) out[q] = xs[q];
}

// The weight gradient for bf16/f16 with two channels per thread (block: 32 channel pairs
// x 8 rows, 16-bit pair tiles of x and dy as in dwconv_correlate_pairs_kernel). Two
// channels' 49 taps do not fit one thread's registers, so the taps are split by row:
// thread row i < K sums tap row i (K taps for each channel) over every output pixel of
// the block's tiles, row by row and column by column, and thread row K sums dy for the
// bias. Each tap has one owner, so the block writes its partials without a reduction.
// The sums run in another order than the one-channel kernel's (a row of dy at a time,
// not a tile row per thread): the same values to f32 rounding, not the same bits.
template <class T, int K>
__global__ void __launch_bounds__(256) dwconv_weight_pairs_kernel(DwConv p, float* part_w, float* part_b, const T* dy,
                                                                 const T* x, int64_t tiles_per_block) {
  using P = Pack<T, 2>;
  constexpr int kIn = kTile + K - 1;
  __shared__ P xs[kIn * kIn * kTileChannels];
  __shared__ P gs[kTile * kTile * kTileChannels];
  const int lane = int(threadIdx.x), row = int(threadIdx.y);
  const int64_t c = (int64_t(blockIdx.y) * kTileChannels + lane) * 2;  // channels c, c + 1
  const int64_t tiles_w = (p.w + kTile - 1) / kTile, tiles_h = (p.h + kTile - 1) / kTile;
  const int64_t total = p.n * tiles_h * tiles_w, first = int64_t(blockIdx.x) * tiles_per_block;
  float acc_a[K], acc_b[K];  // thread row i < K: taps (i, 0..K-1); row K: acc_a[0], acc_b[0] are the bias sums
#pragma unroll
  for (int q = 0; q < K; ++q) acc_a[q] = 0, acc_b[q] = 0;
  for (int64_t tile = first; tile < first + tiles_per_block && tile < total; ++tile) {
    const int64_t n = tile / (tiles_h * tiles_w), h0 = (tile / tiles_w) % tiles_h * kTile, w0 = tile % tiles_w * kTile;
    __syncthreads();  // the previous tile's reads are done
    stage_pairs<T, kIn>(xs, x, p, n, h0 - K / 2, w0 - K / 2, c);
    stage_pairs<T, kTile>(gs, dy, p, n, h0, w0, c);
    __syncthreads();
    if (row < K) {
      for (int r = 0; r < kTile; ++r) {
        float window_a[kIn], window_b[kIn];
#pragma unroll
        for (int q = 0; q < kIn; ++q) {
          const P v = xs[((r + row) * kIn + q) * kTileChannels + lane];
          window_a[q] = load(v.v[0]), window_b[q] = load(v.v[1]);
        }
#pragma unroll
        for (int col = 0; col < kTile; ++col) {
          const P g = gs[(r * kTile + col) * kTileChannels + lane];
          const float g_a = load(g.v[0]), g_b = load(g.v[1]);
#pragma unroll
          for (int q = 0; q < K; ++q) {
            acc_a[q] += g_a * window_a[col + q];
            acc_b[q] += g_b * window_b[col + q];
          }
        }
      }
    } else if (row == K) {
      for (int pos = 0; pos < kTile * kTile; ++pos) {
        const P g = gs[pos * kTileChannels + lane];
        acc_a[0] += load(g.v[0]), acc_b[0] += load(g.v[1]);
      }
    }
  }
  if (c >= p.c) return;
  const int64_t taps = K * K;
  if (row < K) {
    float* out = part_w + int64_t(blockIdx.x) * p.c * taps + c * taps + row * K;
#pragma unroll
    for (int q = 0; q < K; ++q) out[q] = acc_a[q], out[taps + q] = acc_b[q];
  } else if (row == K && part_b) {
    part_b[int64_t(blockIdx.x) * p.c + c] = acc_a[0], part_b[int64_t(blockIdx.x) * p.c + c + 1] = acc_b[0];
  }
}

// The same correlation, one thread per output element, for any K.
template <class T>
__global__ void dwconv_correlate_kernel(DwConv p, T* y, const T* x, const T* w, const T* b, bool flip) {
  using A = acc_t<T>;
  const int64_t total = p.n * p.h * p.w * p.c, pad = p.k / 2;
  for (int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = t % p.c, wo = (t / p.c) % p.w, h = (t / (p.c * p.w)) % p.h, n = t / (p.c * p.w * p.h);
    A acc = b ? load(b[c]) : A(0);
    for (int64_t i = 0; i < p.k; ++i) {
      const int64_t hi = h + i - pad;
      if (hi < 0 || hi >= p.h) continue;
      for (int64_t j = 0; j < p.k; ++j) {
        const int64_t wi = wo + j - pad;
        if (wi < 0 || wi >= p.w) continue;
        const int64_t tap = flip ? (p.k - 1 - i) * p.k + (p.k - 1 - j) : i * p.k + j;
        acc += load(x[((n * p.h + hi) * p.w + wi) * p.c + c]) * load(w[c * p.k * p.k + tap]);
      }
    }
    y[t] = store<T>(acc);
  }
}

// Thread (tap, c) of chunk blockIdx.y sums dy * x over the image rows (n, h) of that chunk
// into part_w [chunks, C, K*K]; the centre tap's threads, whose window never leaves the
// image, also sum dy into part_b [chunks, C] when it is wanted.
template <class T>
__global__ void dwconv_weight_partial_kernel(DwConv p, acc_t<T>* part_w, acc_t<T>* part_b, const T* dy, const T* x,
                                             int64_t rows_per_chunk) {
  using A = acc_t<T>;
  const int64_t taps = p.k * p.k, pad = p.k / 2;
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= taps * p.c) return;
  const int64_t c = t % p.c, tap = t / p.c, i = tap / p.k, j = tap % p.k;
  const bool centre = i == pad && j == pad && part_b;
  const int64_t first = int64_t(blockIdx.y) * rows_per_chunk, last = std::min(first + rows_per_chunk, p.n * p.h);
  A acc = 0, bias = 0;
  for (int64_t row = first; row < last; ++row) {
    const int64_t n = row / p.h, h = row % p.h, hi = h + i - pad;
    if (hi < 0 || hi >= p.h) continue;
    for (int64_t wo = 0; wo < p.w; ++wo) {
      const int64_t wi = wo + j - pad;
      if (wi < 0 || wi >= p.w) continue;
      const A g = load(dy[((n * p.h + h) * p.w + wo) * p.c + c]);
      acc += g * load(x[((n * p.h + hi) * p.w + wi) * p.c + c]);
      if (centre) bias += g;
    }
  }
  part_w[int64_t(blockIdx.y) * taps * p.c + c * taps + tap] = acc;
  if (centre) part_b[int64_t(blockIdx.y) * p.c + c] = bias;
}


void correlate(const DwConv& p, void* y, const void* x, const void* w, const void* b, bool flip, Stream s) {
  dispatch_floating<Types>(p.dtype, "dwconv", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* out = static_cast<T*>(y);
    const T *in = static_cast<const T*>(x), *wt = static_cast<const T*>(w), *bias = static_cast<const T*>(b);
    const dim3 block(kTileChannels, kTile);
    const unsigned tiles = unsigned(((p.h + kTile - 1) / kTile) * ((p.w + kTile - 1) / kTile));
    const bool tiled = p.n <= 65535 && (p.k == 3 || p.k == 5 || p.k == 7);
    if constexpr (sizeof(T) == 2) {
      const int64_t pair_groups = (p.c + 2 * kTileChannels - 1) / (2 * kTileChannels);
      if (tiled && p.packed && p.c % 2 == 0 && pair_groups <= 65535 && aligned(4, {y, x})) {
        const dim3 grid(tiles, unsigned(pair_groups), unsigned(p.n));
        if (p.k == 7) EMONEXT_LAUNCH((dwconv_correlate_pairs_kernel<T, 7>), grid, block, 0, s, p, out, in, wt, bias, flip);
        else if (p.k == 5) EMONEXT_LAUNCH((dwconv_correlate_pairs_kernel<T, 5>), grid, block, 0, s, p, out, in, wt, bias, flip);
        else EMONEXT_LAUNCH((dwconv_correlate_pairs_kernel<T, 3>), grid, block, 0, s, p, out, in, wt, bias, flip);
        return;
      }
    }
    // f64 (for checks, not speed) would need 50 KB of static shared memory at K = 7: simple kernel.
    if constexpr (!std::is_same_v<T, double>) {
      const dim3 grid(tiles, unsigned((p.c + kTileChannels - 1) / kTileChannels), unsigned(p.n));
      if (grid.y <= 65535 && tiled) {
        if (p.k == 7) EMONEXT_LAUNCH((dwconv_correlate_tiled_kernel<T, 7>), grid, block, 0, s, p, out, in, wt, bias, flip);
        else if (p.k == 5) EMONEXT_LAUNCH((dwconv_correlate_tiled_kernel<T, 5>), grid, block, 0, s, p, out, in, wt, bias, flip);
        else EMONEXT_LAUNCH((dwconv_correlate_tiled_kernel<T, 3>), grid, block, 0, s, p, out, in, wt, bias, flip);
        return;
      }
    }
    EMONEXT_LAUNCH(dwconv_correlate_kernel<T>, blocks_for(p.n * p.h * p.w * p.c, kThreads), kThreads, 0, s, p, out, in, wt, bias, flip);
  });
}

}  // namespace

void dwconv_forward(const DwConv& p, void* y, const void* x, const void* w, const void* b, Stream s) {
  correlate(p, y, x, w, b, false, s);
}

void dwconv_backward_input(const DwConv& p, void* dx, const void* dy, const void* w, Stream s) {
  correlate(p, dx, dy, w, nullptr, true, s);
}

void dwconv_backward_weight(const DwConv& p, void* dw, void* db, const void* dy, const void* x, Stream s) {
  dispatch_floating<Types>(p.dtype, "dwconv_backward_weight", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    const int64_t taps_c = p.k * p.k * p.c;
    const T *g = static_cast<const T*>(dy), *in = static_cast<const T*>(x);
    // Partials per chunk, then the fixed-order sums over the chunks.
    auto sum_chunks = [&](const Workspace& part_w, const Workspace& part_b, int64_t chunks) {
      if (db) sum_partials<T>(static_cast<T*>(dw), part_w.as<A>(), taps_c, static_cast<T*>(db), part_b.as<A>(), p.c, chunks, s);
      else sum_partials<T>(static_cast<T*>(dw), part_w.as<A>(), 1, chunks, taps_c, s);
    };
    const int64_t tiles = p.n * ((p.h + kTile - 1) / kTile) * ((p.w + kTile - 1) / kTile);
    const int64_t tiles_per_block = 16, blocks = (tiles + tiles_per_block - 1) / tiles_per_block;
    const bool tiled = (p.k == 3 || p.k == 5 || p.k == 7) && blocks <= 2147483647;
    if constexpr (sizeof(T) == 2) {
      const int64_t pair_groups = (p.c + 2 * kTileChannels - 1) / (2 * kTileChannels);
      if (tiled && p.packed && p.c % 2 == 0 && pair_groups <= 65535 && aligned(4, {dy, x})) {
        Workspace part_w(size_t(blocks * taps_c) * sizeof(A)), part_b(db ? size_t(blocks * p.c) * sizeof(A) : 0);
        A *pw = part_w.as<A>(), *pb = db ? part_b.as<A>() : nullptr;
        const dim3 grid{unsigned(blocks), unsigned(pair_groups)}, block{kTileChannels, kTile};
        if (p.k == 7) EMONEXT_LAUNCH((dwconv_weight_pairs_kernel<T, 7>), grid, block, 0, s, p, pw, pb, g, in, tiles_per_block);
        else if (p.k == 5) EMONEXT_LAUNCH((dwconv_weight_pairs_kernel<T, 5>), grid, block, 0, s, p, pw, pb, g, in, tiles_per_block);
        else EMONEXT_LAUNCH((dwconv_weight_pairs_kernel<T, 3>), grid, block, 0, s, p, pw, pb, g, in, tiles_per_block);
        sum_chunks(part_w, part_b, blocks);
        return;
      }
    }
    if constexpr (!std::is_same_v<T, double>) {
      const unsigned groups = unsigned((p.c + kTileChannels - 1) / kTileChannels);
      if (tiled && groups <= 65535) {
        Workspace part_w(size_t(blocks * taps_c) * sizeof(A)), part_b(db ? size_t(blocks * p.c) * sizeof(A) : 0);
        A *pw = part_w.as<A>(), *pb = db ? part_b.as<A>() : nullptr;
        const dim3 grid(unsigned(blocks), groups), block(kTileChannels, kTile);
        if (p.k == 7) EMONEXT_LAUNCH((dwconv_weight_tiled_kernel<T, 7>), grid, block, 0, s, p, pw, pb, g, in, tiles_per_block);
        else if (p.k == 5) EMONEXT_LAUNCH((dwconv_weight_tiled_kernel<T, 5>), grid, block, 0, s, p, pw, pb, g, in, tiles_per_block);
        else EMONEXT_LAUNCH((dwconv_weight_tiled_kernel<T, 3>), grid, block, 0, s, p, pw, pb, g, in, tiles_per_block);
        sum_chunks(part_w, part_b, blocks);
        return;
      }
    }
    const int64_t rows = p.n * p.h;
    const int64_t rows_per_chunk = std::max<int64_t>(4, (rows + 65534) / 65535);
    const int64_t chunks = std::max<int64_t>(1, (rows + rows_per_chunk - 1) / rows_per_chunk);
    Workspace part_w(size_t(chunks * taps_c) * sizeof(A)), part_b(db ? size_t(chunks * p.c) * sizeof(A) : 0);
    EMONEXT_LAUNCH(dwconv_weight_partial_kernel<T>, dim3(unsigned((taps_c + kThreads - 1) / kThreads), unsigned(chunks)),
                   kThreads, 0, s, p, part_w.as<A>(), db ? part_b.as<A>() : nullptr, g, in, rows_per_chunk);
    sum_chunks(part_w, part_b, chunks);
  });
}

}  // namespace emonext::kernels::cuda
