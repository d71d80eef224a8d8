// Argument checks shared by the ops: each failure names the op, the tensors
// and the fix.
#pragma once
#include "core/tensor.h"

namespace emonext {

void check_floating(const char* op, const Tensor& t);
// Same dtype and device; the message says which differs and how to convert.
void check_same(const char* op, const Tensor& a, const Tensor& b);
Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b);
// In-place changes of a tensor that requires grad are refused while grad mode is on.
void check_inplace(const char* op, const Tensor& t);

}  // namespace emonext
