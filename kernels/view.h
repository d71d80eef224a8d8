// View: what a kernel knows of a tensor. A typed pointer (already offset),
// a shape and strides in elements. No ownership, no autograd.
#pragma once
#include <cstdint>

#include "core/base/dtype.h"
#include "core/base/macros.h"

namespace emonext::kernels {

constexpr int kMaxDims = 8;

struct View {
  void* data = nullptr;
  DType dtype = DType::F32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};

  EMONEXT_HD int64_t numel() const {
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= shape[d];
    return n;
  }
  // Element offset of the linear (row-major) index i within this view's shape.
  EMONEXT_HD int64_t offset_of(int64_t i) const {
    int64_t off = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      off += (i % shape[d]) * stride[d];
      i /= shape[d];
    }
    return off;
  }
};

// An opaque stream handle: cudaStream_t in the CUDA backend, unused on the CPU.
using Stream = void*;

// Merges adjacent dimensions that are contiguous in every one of the n views
// (which share one shape), so that strided loops divide as little as possible.
// A view whose every dimension merges ends with ndim 1.
inline void coalesce(int n, View* views) {
  View& v0 = views[0];
  if (v0.ndim <= 1) return;
  int out = 0;
  for (int d = 1; d < v0.ndim; ++d) {
    bool mergeable = true;
    for (int k = 0; k < n; ++k)
      if (views[k].stride[out] != views[k].stride[d] * views[k].shape[d]) mergeable = false;
    if (v0.shape[d] == 1) mergeable = true;  // a size-1 dim can always fold in
    if (v0.shape[out] == 1) {                // fold a size-1 leading dim into the next
      for (int k = 0; k < n; ++k) { views[k].shape[out] = views[k].shape[d]; views[k].stride[out] = views[k].stride[d]; }
      continue;
    }
    if (mergeable) {
      for (int k = 0; k < n; ++k) {
        if (views[k].shape[d] != 1) views[k].stride[out] = views[k].stride[d];
        views[k].shape[out] *= views[k].shape[d];
      }
    } else {
      ++out;
      for (int k = 0; k < n; ++k) { views[k].shape[out] = views[k].shape[d]; views[k].stride[out] = views[k].stride[d]; }
    }
  }
  for (int k = 0; k < n; ++k) views[k].ndim = out + 1;
}

}  // namespace emonext::kernels
