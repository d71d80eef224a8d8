#!/usr/bin/python3
"""Which GELU does a GEMM's fused GELU epilogue compute? ConvNeXt's pwconv1 is followed by
the exact GELU, 0.5 x (1 + erf(x / sqrt(2))); a cuBLASLt GEMM with the GELU epilogue
(CUBLASLT_EPILOGUE_GELU_AUX_BIAS) would remove a pass over the block's widest tensor, but
only keeps PyTorch parity if its GELU is that one and not the tanh approximation. PyTorch's
torch._addmm_activation(bias, x, w, use_gelu=True) runs that epilogue on CUDA where it can;
this prints how far its result is from each form, and the kernels the call ran (on a GPU,
a cuBLASLt kernel with a GELU epilogue in its name says the epilogue was used).

  python3 tools/reference/cublaslt_gelu.py [--device cuda|cpu]

At ConvNeXt-T's stage 1 (x [rows, 96] @ w [96, 384] + b), in f32 and bf16."""
import argparse

import torch
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rows", type=int, default=8192)
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    print(f"torch {torch.__version__} on {dev}" + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""))
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(args.rows, 96, device=dev, dtype=dtype)
        w = torch.randn(384, 96, device=dev, dtype=dtype) * 0.1
        b = torch.randn(384, device=dev, dtype=dtype) * 0.1
        with torch.profiler.profile() as prof:
            y = torch._addmm_activation(b, x, w.t(), use_gelu=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()
        pre = torch.addmm(b.float(), x.float(), w.t().float())
        ref_exact, ref_tanh = F.gelu(pre), F.gelu(pre, approximate="tanh")
        exact = (y.float() - ref_exact).abs().max().item()
        tanh = (y.float() - ref_tanh).abs().max().item()
        # In 16 bits the output's rounding hides the forms' difference (<= 5e-4): count the
        # values equal to each form rounded to the dtype instead.
        same_exact = (y == ref_exact.to(dtype)).float().mean().item()
        same_tanh = (y == ref_tanh.to(dtype)).float().mean().item()
        kernels = sorted({e.name for e in prof.events() if "gemm" in e.name.lower() or "gelu" in e.name.lower()})
        closer_exact = exact < tanh if dtype == torch.float32 else same_exact > same_tanh
        verdict = "exact (erf)" if closer_exact else "tanh approximation"
        print(f"{str(dtype):15} max |fused - gelu exact| {exact:.3g}, |fused - gelu tanh| {tanh:.3g}; equal to the exact form "
              f"{100 * same_exact:.1f}%, to the tanh form {100 * same_tanh:.1f}%: closer to the {verdict}")
        for k in kernels[:4]:
            print(f"    kernel: {k[:140]}")


if __name__ == "__main__":
    main()
