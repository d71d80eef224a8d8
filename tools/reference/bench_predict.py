#!/usr/bin/python3
"""Predict speed on the CPU: the engine's emonext_predict (tensor mode, eval, one
batch) beside the PyTorch twin on the same weights and images, in one run.

  /usr/bin/python3 tools/reference/bench_predict.py [BUILD_DIR] [THREADS]

Prints images/s for EmoNeXt-tiny at 224 (batch 16) and EmoNeXt-atto at 48 (batch
256), each the best of 3 forward passes after a warm-up (the engine's figure is its
own timing of the forward, printed by the tool)."""
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emonext_twin import EmoNeXt, Philox, parity_fill  # noqa: E402
from safetensors_io import save_safetensors  # noqa: E402

LABELS = "angry,disgust,fear,happy,neutral,sad,surprise"


def bench(build, size, image_size, n, threads):
    torch.set_num_threads(threads)
    model = EmoNeXt(size, 7, image_size)
    parity_fill(model, Philox(1))
    model.eval()
    images = torch.rand(n, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as d:
        ckpt, inp, out = (os.path.join(d, f) for f in ("m.safetensors", "in.safetensors", "out.safetensors"))
        save_safetensors(ckpt, model.state_dict(), {"format": "emonext", "model": size, "classes": 7,
                                                    "image_size": image_size, "labels": LABELS})
        save_safetensors(inp, {"images": images})
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))  # the engine's BLAS is single-threaded
        ours = 0.0
        for _ in range(4):  # the first is a warm-up
            r = subprocess.run([os.path.join(build, "tools", "emonext_predict"), "--device", "cpu", "--weights", ckpt,
                                "--input-tensors", inp, "--output", out], capture_output=True, text=True, env=env, check=True)
            ours = max(ours, float(re.search(r"([0-9.]+) images/s", r.stderr).group(1)))
        theirs = 0.0
        with torch.no_grad():
            model(images)
            for _ in range(3):
                t0 = time.perf_counter()
                model(images)
                theirs = max(theirs, n / (time.perf_counter() - t0))
    print(f"EmoNeXt-{size} at {image_size}, batch {n}, {threads} threads: engine {ours:.1f} images/s, "
          f"PyTorch {torch.__version__} {theirs:.1f} images/s, ratio {ours / theirs:.2f}")


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    bench(build, "tiny", 224, 16, threads)
    bench(build, "atto", 48, 256, threads)


if __name__ == "__main__":
    main()
