#!/usr/bin/python3
"""Writes tests/fixtures/ops.safetensors: PyTorch's forward and backward for every
op case that tests/test_ops_fixtures.cpp runs.

Per case NAME it stores NAME.in0, NAME.in1, ... (the inputs), NAME.out (the
output), NAME.w (a fixed weight) and NAME.grad0, ... : the gradient of
sum(out * w) with respect to each floating input. Everything is computed in
float64, so the engine's f64 run can be compared almost exactly and its f32
run with a stated tolerance.

Run with Debian's python3-torch: /usr/bin/python3 tools/reference/make_op_fixtures.py
"""
import os

import torch

from safetensors_io import save_safetensors

torch.manual_seed(1234)
F = torch.float64


def randn(*s):
    return torch.randn(s, dtype=F)


# Cases added after the fixtures were first written draw from here, so that the shared
# generator's sequence (and every earlier case's inputs and weights) stays the same.
LATE = torch.Generator().manual_seed(4321)


def randn_from(gen, *s):
    return torch.randn(s, dtype=F, generator=gen)


def positive(*s):
    return torch.rand(s, dtype=F) + 0.5


def dwconv(x, w, b):
    """Depthwise convolution on channels-last x, as the engine takes it."""
    k = w.shape[-1]
    y = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), w, b, padding=k // 2, groups=x.shape[-1])
    return y.permute(0, 2, 3, 1)


def uniform(*s, low, high):
    return torch.rand(s, dtype=F) * (high - low) + low


def nchw(x):
    return x.permute(0, 3, 1, 2)


def nhwc(x):
    return x.permute(0, 2, 3, 1)


# Drop path's draws for the layer_scale_residual_drop case (tests/op_cases.cpp uses the
# same): an image is kept, scaled by 1 / keep, when its draw is below keep (compared in f32).
DROP_U = torch.tensor([0.1, 0.95, 0.5], dtype=torch.float32)


def drop_scale(u, keep):
    return (u < keep).to(F) / keep


# Running statistics of the eval-mode batch norm case; tests/op_cases.cpp builds the same.
BN_MEAN = torch.arange(6, dtype=F) * 0.1 - 0.2
BN_VAR = torch.arange(6, dtype=F) * 0.25 + 0.5


def conv2d(x, w, b, stride, padding):
    """Dense convolution on channels-last x, as the engine takes it."""
    y = torch.nn.functional.conv2d(x.permute(0, 3, 1, 2), w, b, stride=stride, padding=padding)
    return y.permute(0, 2, 3, 1)


def grid_sample(x, g, align_corners):
    """Bilinear, zeros padding, on channels-last x, as the engine takes it."""
    y = torch.nn.functional.grid_sample(x.permute(0, 3, 1, 2), g, mode="bilinear", padding_mode="zeros",
                                        align_corners=align_corners)
    return y.permute(0, 2, 3, 1)


# name: (inputs, function). Integer / mask inputs are not differentiated.
CASES = {
    "add": ([randn(3, 4), randn(4)], lambda a, b: a + b),
    "add_broadcast_both": ([randn(2, 1, 4), randn(3, 1)], lambda a, b: a + b),
    "sub": ([randn(3, 4), randn(3, 4)], lambda a, b: a - b),
    "mul": ([randn(2, 3, 4), randn(3, 1)], lambda a, b: a * b),
    "div": ([randn(3, 4), positive(4)], lambda a, b: a / b),
    "pow": ([positive(3, 4), randn(3, 4)], lambda a, b: torch.pow(a, b)),
    "maximum": ([randn(3, 4), randn(4)], lambda a, b: torch.maximum(a, b)),
    "add_scalar": ([randn(3, 4)], lambda a: a + 1.5),
    "mul_scalar": ([randn(3, 4)], lambda a: a * -2.5),
    "pow_scalar": ([positive(3, 4)], lambda a: torch.pow(a, 2.5)),
    "neg": ([randn(3, 4)], lambda a: -a),
    "exp": ([randn(3, 4)], lambda a: torch.exp(a)),
    "log": ([positive(3, 4)], lambda a: torch.log(a)),
    "sqrt": ([positive(3, 4)], lambda a: torch.sqrt(a)),
    "relu": ([randn(3, 4)], lambda a: torch.relu(a)),
    "sigmoid": ([randn(3, 4)], lambda a: torch.sigmoid(a)),
    "where": ([(randn(3, 4) > 0).to(torch.uint8), randn(3, 4), randn(4)],
              lambda c, a, b: torch.where(c.bool(), a, b)),
    "sum_all": ([randn(2, 3, 4)], lambda a: a.sum()),
    "sum_dim": ([randn(2, 3, 4)], lambda a: a.sum(1)),
    "sum_dims_keepdim": ([randn(2, 3, 4)], lambda a: a.sum((0, 2), keepdim=True)),
    "mean_dim": ([randn(2, 3, 4)], lambda a: a.mean(-1)),
    "max_dim": ([randn(2, 3, 4)], lambda a: torch.amax(a, -1)),
    "max_all": ([randn(3, 5)], lambda a: torch.amax(a)),
    "matmul": ([randn(3, 4), randn(4, 5)], lambda a, b: a @ b),
    "matmul_batched": ([randn(2, 3, 4), randn(2, 4, 5)], lambda a, b: a @ b),
    "matmul_broadcast": ([randn(2, 3, 4), randn(4, 5)], lambda a, b: a @ b),
    "matmul_transposed": ([randn(4, 3), randn(5, 4)], lambda a, b: a.t() @ b.t()),
    "linear": ([randn(2, 3, 4), randn(5, 4), randn(5)], lambda x, w, b: torch.nn.functional.linear(x, w, b)),
    "softmax": ([randn(3, 7)], lambda a: torch.softmax(a, -1)),
    "log_softmax": ([randn(2, 3, 5)], lambda a: torch.log_softmax(a, -1)),
    "cross_entropy": ([randn(6, 7), torch.tensor([0, 3, 6, 2, 3, 1])],
                      lambda x, t: torch.nn.functional.cross_entropy(x, t, label_smoothing=0.2)),
    "cross_entropy_plain": ([randn(4, 3), torch.tensor([2, 0, 1, 2])],
                            lambda x, t: torch.nn.functional.cross_entropy(x, t)),
    "concat": ([randn(2, 3), randn(2, 2), randn(2, 1)], lambda a, b, c: torch.cat([a, b, c], 1)),
    "index_select": ([randn(5, 3), torch.tensor([4, 0, 4, 2])], lambda a, i: torch.index_select(a, 0, i)),
    "index_select_inner": ([randn(2, 5, 3), torch.tensor([1, 1, 3])], lambda a, i: torch.index_select(a, 1, i)),
    "permute_reshape": ([randn(2, 3, 4)], lambda a: a.permute(2, 0, 1).reshape(4, 6) * 1.0),
    "slice": ([randn(5, 6)], lambda a: a[1:4, 0:6:2] * 1.0),
    "expand": ([randn(3, 1)], lambda a: a.expand(2, 3, 4) * 1.0),
    # The ConvNeXt / EmoNeXt kernels; activations channels-last [N, H, W, C].
    "layer_norm": ([randn(2, 3, 5, 40), randn(40), randn(40)],
                   lambda x, w, b: torch.nn.functional.layer_norm(x, (40,), w, b, 1e-6)),
    "layer_norm_odd": ([randn(4, 41) * 3 + 1, randn(41), randn(41)],
                       lambda x, w, b: torch.nn.functional.layer_norm(x, (41,), w, b, 1e-5)),
    "gelu": ([randn(3, 7) * 2], lambda a: torch.nn.functional.gelu(a)),
    "gelu_tanh": ([randn(3, 7) * 2], lambda a: torch.nn.functional.gelu(a, approximate="tanh")),
    "bias_gelu": ([randn(2, 5, 9), randn(9)], lambda x, b: torch.nn.functional.gelu(x + b)),
    "bias_gelu_tanh": ([randn(3, 2, 16), randn(16)], lambda x, b: torch.nn.functional.gelu(x + b, approximate="tanh")),
    "dwconv7": ([randn(2, 9, 8, 5), randn(5, 1, 7, 7) * 0.2, randn(5)], lambda x, w, b: dwconv(x, w, b)),
    "dwconv7_small_map": ([randn(1, 3, 2, 4), randn(4, 1, 7, 7) * 0.2, randn(4)], lambda x, w, b: dwconv(x, w, b)),
    "dwconv3_no_bias": ([randn(2, 5, 6, 3), randn(3, 1, 3, 3)], lambda x, w: dwconv(x, w, None)),
    "global_avg_pool": ([randn(2, 3, 4, 6)], lambda x: x.mean((1, 2))),
    "se_gate": ([randn(2, 3, 4, 6), randn(2, 6)], lambda x, g: x * g[:, None, None, :]),
    # x + drop_path(gamma * (h + b)): the end of a ConvNeXt block, without and with drop path.
    "layer_scale_residual": ([randn(2, 3, 4, 12), randn(2, 3, 4, 12), randn(12), randn(12)],
                             lambda x, h, b, g: x + (h + b) * g),
    "layer_scale_residual_drop": ([randn(3, 2, 5, 6), randn(3, 2, 5, 6), randn(6), randn(6)],
                                  lambda x, h, b, g: x + (h + b) * g * drop_scale(DROP_U, 0.8)[:, None, None, None]),
    "affine_grid": ([randn(2, 2, 3)], lambda t: torch.nn.functional.affine_grid(t, (2, 1, 5, 7), align_corners=True)),
    "affine_grid_no_align": ([randn(2, 2, 3)], lambda t: torch.nn.functional.affine_grid(t, (2, 1, 4, 3), align_corners=False)),
    "grid_sample": ([randn(2, 5, 6, 3), uniform(2, 4, 7, 2, low=-1.2, high=1.2)], lambda x, g: grid_sample(x, g, True)),
    "grid_sample_no_align": ([randn(1, 4, 5, 2), uniform(1, 6, 3, 2, low=-1.2, high=1.2)], lambda x, g: grid_sample(x, g, False)),
    "conv2d_stn": ([randn(2, 11, 10, 3), randn(8, 3, 7, 7) * 0.1, randn(8)], lambda x, w, b: conv2d(x, w, b, 1, 0)),
    "conv2d_stride_pad": ([randn(2, 7, 9, 4), randn(5, 4, 3, 3) * 0.2, randn(5)], lambda x, w, b: conv2d(x, w, b, 2, 1)),
    "conv2d_patchify": ([randn(1, 8, 8, 3), randn(6, 3, 4, 4) * 0.2], lambda x, w: conv2d(x, w, None, 4, 0)),
    "max_pool2": ([randn(2, 6, 7, 3)], lambda x: nhwc(torch.nn.functional.max_pool2d(nchw(x), 2, 2))),
    "max_pool3_stride2": ([randn(1, 7, 7, 2)], lambda x: nhwc(torch.nn.functional.max_pool2d(nchw(x), 3, 2))),
    "batch_norm_train": ([randn(4, 3, 5, 6) * 2 + 1, randn(6), randn(6)],
                         lambda x, w, b: nhwc(torch.nn.functional.batch_norm(nchw(x), torch.zeros(6, dtype=F), torch.ones(6, dtype=F),
                                                                              w, b, training=True, momentum=0.1, eps=1e-5))),
    "batch_norm_eval": ([randn(2, 3, 4, 6), randn(6), randn(6)],
                        lambda x, w, b: nhwc(torch.nn.functional.batch_norm(nchw(x), BN_MEAN, BN_VAR, w, b, training=False, eps=1e-5))),
    # theta near the identity, with values that put no sample exactly on a pixel boundary
    # (bilinear sampling has a kink there, where finite differences and f32 rounding disagree).
    "stn_sample": ([randn(2, 6, 6, 3), torch.tensor([[[0.913, 0.0717, 0.0531], [-0.1173, 0.8469, -0.0937]],
                                                     [[1.0871, -0.1933, 0.0119], [0.1517, 0.9461, 0.1083]]], dtype=F)],
                   lambda x, t: grid_sample(x, torch.nn.functional.affine_grid(t, (2, 3, 6, 6), align_corners=True), True)),
    # A patchify convolution whose windows leave the last rows and column uncovered (10 x 9 by 4).
    "conv2d_patchify_ragged": ([randn(2, 10, 9, 3), randn(6, 3, 4, 4) * 0.2, randn(6)], lambda x, w, b: conv2d(x, w, b, 4, 0)),
    # The block's pwconv1 -> GELU (tanh) -> pwconv2 without pwconv2's bias (the engine's gelu_mlp,
    # whose f32 run takes the GEMM-epilogue path); 16 hidden channels (the epilogue's multiple of 8).
    # Its own generator: the draws of the cases before it were made, and stay, as they were.
    "gelu_mlp_tanh": ([randn_from(LATE, 2, 3, 6), randn_from(LATE, 16, 6) * 0.5, randn_from(LATE, 16),
                       randn_from(LATE, 5, 16) * 0.5],
                      lambda x, w1, b1, w2: torch.nn.functional.linear(
                          torch.nn.functional.gelu(torch.nn.functional.linear(x, w1, b1), approximate="tanh"), w2)),
}

def main():
    out = {}
    for name, (inputs, fn) in CASES.items():
        xs = [x.clone().requires_grad_(x.dtype == F) for x in inputs]
        y = fn(*xs)
        w = randn(*y.shape)
        (y * w).sum().backward()
        for i, x in enumerate(inputs):
            out[f"{name}.in{i}"] = x
        out[f"{name}.out"] = y.detach()
        out[f"{name}.w"] = w
        for i, x in enumerate(xs):
            if x.dtype == F:
                out[f"{name}.grad{i}"] = x.grad
    path = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "ops.safetensors")
    save_safetensors(path, out)
    print(f"wrote {len(CASES)} cases, {len(out)} tensors to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
