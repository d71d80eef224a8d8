#!/usr/bin/env python3
"""Weight files written by the real timm and torchvision, and their own logits, for the
import tests (tests/test_import.cpp). Runs in the PyTorch 2 environment that
tools/reference/setup_pytorch2.sh makes:

  .venv-pytorch2/bin/python tools/reference/library_weights.py DIR
  .venv-pytorch2/bin/python tools/reference/library_weights.py --names FILE

DIR receives
  timm_atto/model.safetensors, timm_atto/pytorch_model.bin, timm_atto/config.json
      timm.create_model("convnext_atto") saved by timm's own hub writer (save_for_hf);
      atto keeps its MLP as 1x1 convolutions (conv_mlp)
  timm_tiny/...          the same for "convnext_tiny" (its MLP as Linear layers)
  torchvision.pth        torch.save of torchvision.models.convnext_tiny()'s state dict
  images.safetensors     "images": a fixed batch [2, 3, 64, 64] in [0, 1]
  logits.safetensors     "timm_atto", "timm_tiny", "torchvision": each library's own model
                         on those images (eval mode, f32, its ImageNet head)

The models keep their libraries' own initialisation of every weight matrix and
convolution; the 1-D tensors (biases, norms, layer scales) are then drawn at random,
because the libraries start them at 0, 1 and 1e-6: with layer scales at 1e-6 the blocks
would not move the logits, and a bias or norm taken from the wrong place would not show.

--names writes the tensor names, dtypes and shapes of timm's convnext_atto and
convnext_tiny and torchvision's convnext_tiny state dicts, one per line
("scheme size name dtype d0,d1,..."): tests/fixtures/library_names.txt, which the test
suite checks against the importer with no PyTorch at all.
"""
import os
import sys

import torch
import timm
import torchvision
from safetensors.torch import save_file
from timm.models import save_for_hf


def randomise_vectors(model, gen):
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.dim() == 1 or name.endswith("layer_scale"):  # torchvision's layer scale is [C, 1, 1]
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (1.0 if "bias" not in name else 0.0))


def write(out):
    gen = torch.Generator().manual_seed(20261208)
    torch.manual_seed(1)  # the libraries' own initialisation draws from the global generator
    models = {"timm_atto": timm.create_model("convnext_atto").eval(), "timm_tiny": timm.create_model("convnext_tiny").eval(),
              "torchvision": torchvision.models.convnext_tiny().eval()}
    for name, m in models.items():
        randomise_vectors(m, gen)
        if name.startswith("timm"):
            os.makedirs(os.path.join(out, name), exist_ok=True)
            save_for_hf(m, os.path.join(out, name), safe_serialization="both")
    torch.save(models["torchvision"].state_dict(), os.path.join(out, "torchvision.pth"))
    images = torch.rand(2, 3, 64, 64, generator=gen)
    with torch.no_grad():
        logits = {name: m(images).contiguous() for name, m in models.items()}
    save_file({"images": images}, os.path.join(out, "images.safetensors"))
    save_file(logits, os.path.join(out, "logits.safetensors"))
    print(f"timm {timm.__version__}, torchvision {torchvision.__version__}, torch {torch.__version__}: {out}")


def names(path):
    models = [("timm", "atto", timm.create_model("convnext_atto")), ("timm", "tiny", timm.create_model("convnext_tiny")),
              ("torchvision", "tiny", torchvision.models.convnext_tiny())]
    with open(path, "w") as f:
        f.write(f"# timm {timm.__version__}, torchvision {torchvision.__version__}: "
                "tools/reference/library_weights.py --names\n")
        for scheme, size, m in models:
            for k, v in m.state_dict().items():
                f.write(f"{scheme} {size} {k} {str(v.dtype).removeprefix('torch.')} {','.join(map(str, v.shape))}\n")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--names":
        names(sys.argv[2])
    elif len(sys.argv) == 2:
        write(sys.argv[1])
    else:
        sys.exit(__doc__)
