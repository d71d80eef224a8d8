#!/usr/bin/python3
"""Why fp16 training of EmoNeXt on FER2013 needs a loss scale below 1: the largest
gradient of the loss with respect to the stem convolution's output, at initialisation,
per kind of image, in f32 with the PyTorch twin. That tensor is 16-bit under PyTorch's
autocast too (conv2d runs in f16 there and a gradient has its tensor's dtype), so the
largest f16 loss scale that keeps it finite, 65504 / max, bounds autocast as it bounds
the engine's `--amp fp16`.

  /usr/bin/python3 tools/reference/fp16_range.py FER2013_DIR [SIZE=tiny] [IMAGE_SIZE=224] [BATCH=16]

The cause is ConvNeXt's LayerNorm (eps 1e-6) over a patch that is one colour in every
channel: at initialisation (zero biases) the stem maps a black patch to 0 in every
channel, the variance is 0, and the LayerNorm multiplies its input gradient by
1/sqrt(eps) = 1000; in a blank image every later LayerNorm does too. It prints the
count of one-colour training images, then the gradient for a batch of ordinary images
as they are, rotated by 20 degrees (the recipe's black corners), and with one blank
image in the batch."""
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emonext_twin import EmoNeXt, emonext_loss  # noqa: E402
from train_twin import LABELS, init  # noqa: E402

F16_MAX = 65504.0


def stem_gradient_max(model, images, labels):
    """max |d loss / d stem output| over the batch, one training step's backward."""
    seen = {}
    stem = model.downsample_layers[0][0]

    def keep_gradient(module, inputs, out):  # returns None: the output stays as it is
        out.register_hook(lambda g: seen.setdefault("g", g))

    handle = stem.register_forward_hook(keep_gradient)
    model.zero_grad()
    logits, w = model(images)
    emonext_loss(logits, w, labels).backward()
    handle.remove()
    return seen["g"].abs().max().item()


def main():
    root = sys.argv[1]
    size = sys.argv[2] if len(sys.argv) > 2 else "tiny"
    image_size = int(sys.argv[3]) if len(sys.argv) > 3 else 224
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 16
    torch.manual_seed(0)

    files, blank = [], []
    for c, label in enumerate(LABELS):
        folder = os.path.join(root, "train", label)
        for f in sorted(os.listdir(folder)):
            a = np.asarray(Image.open(os.path.join(folder, f)).convert("L"))
            (blank if a.min() == a.max() else files).append((os.path.join(folder, f), c))
    print(f"{len(files) + len(blank)} training images, {len(blank)} of one colour: "
          + ", ".join(os.path.basename(p) for p, _ in blank[:4]) + (" ..." if len(blank) > 4 else ""))

    def load(entries, degrees):
        xs = [np.asarray(Image.open(p).convert("L").resize((image_size, image_size), Image.BILINEAR)
                         .rotate(degrees, Image.BILINEAR), dtype=np.float32) / 255 for p, _ in entries]
        x = torch.from_numpy(np.stack(xs))[:, None].expand(len(xs), 3, image_size, image_size).contiguous()
        return x, torch.tensor([c for _, c in entries])

    model = EmoNeXt(size, 7, image_size, drop_path_rate=0.0)
    init(model)
    model.train()
    ordinary = [files[i] for i in torch.randperm(len(files))[:batch].tolist()]
    cases = [("ordinary images", ordinary, 0), ("rotated 20 degrees", ordinary, 20)]
    if blank:
        cases.append(("one blank image among them", ordinary[:-1] + blank[:1], 0))
    print(f"EmoNeXt-{size} at {image_size}, batch {batch}, at initialisation:")
    for name, entries, degrees in cases:
        g = stem_gradient_max(model, *load(entries, degrees))
        scale = 2.0 ** np.floor(np.log2(F16_MAX / g))
        print(f"  {name:28s} max |grad| at the stem output {g:10.3e}  largest f16 loss scale 2^{int(np.log2(scale))}")


if __name__ == "__main__":
    main()
