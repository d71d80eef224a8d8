#!/usr/bin/python3
"""The PyTorch twin trained on FER2013 at the configuration of the CI training test
(tests/CMakeLists.txt, EMONEXT_CI_RUN_FLAGS), to put its curve and speed beside the
engine's in docs/PERF.md:

  EmoNeXt-atto at 48 x 48, batch 64, AdamW (peak 1e-3, wd 0.01), 128 warm-up steps then
  cosine to 0 at the last step, clip 1.0, label smoothing 0.2 + the attention term,
  horizontal flips and random 48-pixel crops of the image resized to 51 (shifts of up
  to 3 pixels), no rotation, no vertical flip, no EMA, drop path 0, 2 threads.

  /usr/bin/python3 tools/reference/train_twin.py FER2013_DIR [STEPS=900] [THREADS=2]

Validation (centre crop) after each epoch of 448 steps and at the end, as the engine.
Images are decoded once up front (PIL), like the engine's loader it is not timed apart
from the step: images/s counts the training steps' wall time."""
import math
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emonext_twin import EmoNeXt, emonext_loss  # noqa: E402

LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def load_split(root, split):
    xs, ys = [], []
    for c, label in enumerate(LABELS):
        folder = os.path.join(root, split, label)
        for f in sorted(os.listdir(folder)):
            img = Image.open(os.path.join(folder, f)).convert("L").resize((51, 51), Image.BILINEAR)
            xs.append(np.asarray(img, dtype=np.uint8))
            ys.append(c)
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys)


def init(model):
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)
    with torch.no_grad():
        model.fc_loc[2].weight.zero_()
        model.fc_loc[2].bias.copy_(torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float32))


def batch_view(x, train, g):
    """uint8 [B, 51, 51] -> float [B, 3, 48, 48]: random (or centre) crop, flip."""
    b = x.shape[0]
    out = torch.empty(b, 48, 48)
    for i in range(b):
        if train:
            t, l = (int(v) for v in torch.randint(0, 4, (2,), generator=g))
            img = x[i, t:t + 48, l:l + 48]
            if torch.rand(1, generator=g).item() < 0.5:
                img = img.flip(1)
        else:
            img = x[i, 2:50, 2:50]
        out[i] = img.float() / 255
    return out[:, None].expand(b, 3, 48, 48).contiguous()


def evaluate(model, x, y):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), 256):
            logits, _ = model(batch_view(x[i:i + 256], False, None))
            correct += (logits.argmax(1) == y[i:i + 256]).sum().item()
    model.train()
    return correct / len(y)


def main():
    root = sys.argv[1]
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 900
    torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
    torch.manual_seed(0)
    xtr, ytr = load_split(root, "train")
    xva, yva = load_split(root, "val")
    model = EmoNeXt("atto", 7, 48, drop_path_rate=0.0)
    init(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    g = torch.Generator().manual_seed(1)
    per_epoch = len(ytr) // 64
    step, busy = 0, 0.0
    while step < steps:
        order = torch.randperm(len(ytr), generator=g)
        for b in range(per_epoch):
            if step >= steps:
                break
            lr = 1e-3 * step / 128 if step < 128 else 1e-3 * (1 + math.cos(math.pi * (step - 128) / max(1, steps - 128))) / 2
            for group in opt.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            idx = order[b * 64:(b + 1) * 64]
            logits, w = model(batch_view(xtr[idx], True, g))
            loss = emonext_loss(logits, w, ytr[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            busy += time.perf_counter() - t0
            step += 1
            if step % 100 == 0:
                print(f"step {step} loss {loss.item():.4f} {64 * step / busy:.1f} img/s", flush=True)
        print(f"twin step {step}: val accuracy {evaluate(model, xva, yva):.4f}, {64 * step / busy:.1f} images/s", flush=True)


if __name__ == "__main__":
    main()
