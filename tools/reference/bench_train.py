#!/usr/bin/python3
"""Training speed on the CPU: the engine's `emonext_train --benchmark` beside the PyTorch
twin doing the same steps (train mode, drop path 0.1, the EmoNeXt loss, backward, clip
1.0, AdamW), on random images, in one run.

  /usr/bin/python3 tools/reference/bench_train.py [BUILD_DIR] [THREADS]

Prints steady-state training images/s for EmoNeXt-atto at 48 (batch 64) and EmoNeXt-tiny
at 224 (batch 16): the engine's own figure (after 3 steps, its loader included), the
twin's over the same number of steps after 3 warm-up steps."""
import os
import re
import subprocess
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emonext_twin import EmoNeXt, emonext_loss  # noqa: E402


def bench(build, size, image_size, batch, steps, threads):
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([os.path.join(build, "tools", "emonext_train"), "--benchmark", str(steps + 3), "--synthetic",
                            str(batch * (steps + 4)), "--model", size, "--img-size", str(image_size), "--batch",
                            str(batch), "--device", "cpu", "--workers", "2", "--no-ema", "--out", d],
                           capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)), check=True)
        ours = float(re.search(r"([0-9.]+) images/s", r.stdout).group(1))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = EmoNeXt(size, 7, image_size, drop_path_rate=0.1).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)  # the engine's defaults
    x = torch.rand(batch, 3, image_size, image_size)
    y = torch.randint(0, 7, (batch,))

    def step():
        logits, w = model(x)
        loss = emonext_loss(logits, w, y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    theirs = steps * batch / (time.perf_counter() - t0)
    print(f"EmoNeXt-{size} at {image_size}, batch {batch}, {steps} steps, {threads} threads: engine {ours:.1f} images/s, "
          f"PyTorch {torch.__version__} {theirs:.1f} images/s, ratio {ours / theirs:.2f}", flush=True)


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    bench(build, "atto", 48, 64, 20, threads)
    bench(build, "tiny", 224, 16, 6, threads)


if __name__ == "__main__":
    main()
