#!/usr/bin/python3
"""The PyTorch twin of the engine's EmoNeXt: the model exactly as
../shared/docs/REFERENCE.md describes the reference code (NCHW, Facebook's ConvNeXt
names), used to produce parity fixtures and to check the engine's checkpoints.
Reference only: the engine never runs Python.

  emonext_twin.py fixtures
      writes tests/fixtures/parity_atto48.safetensors and parity_tiny224.safetensors,
      and the small torch.save files that test the engine's reader (torch_*.pt)
  emonext_twin.py pretrained OUTDIR
      writes a random ConvNeXt-atto in Facebook's, timm's (safetensors and .bin) and
      torchvision's forms, EmoNeXt's own checkpoint forms, and broken files, for the
      import tests (made at test time: 15 MB each)
  emonext_twin.py overfit CKPT BATCH K OUT
      K training steps on one batch, as emonext_train --overfit-batch (float64)
  emonext_twin.py gradcam CKPT IMAGES STAGE OUT
      Grad-CAM (train/explain.cpp's definition) of stage STAGE for each image's predicted
      class, in float64, into OUT ("cam" [N, h, w], "predicted" [N])
  emonext_twin.py check CKPT IMAGES LOGITS
      loads the engine's checkpoint CKPT with load_state_dict(strict=True), runs
      images [N,3,H,W] from IMAGES (safetensors "images") in eval mode and prints the
      largest |logits - engine logits| / max |logits| against LOGITS ("logits")

Parity weights: both sides fill every tensor, in sorted-name order, from the
engine's Philox4x32-10 generator (philox_rand below mirrors core/base/philox.h and
the CPU random kernel bit for bit) with the ranges in fill_range(), so a fixture
holds only inputs and outputs, not 30 million weights. tests/test_parity.cpp has the
C++ side of the same rule.

Run with Debian's python3-torch: /usr/bin/python3 tools/reference/emonext_twin.py fixtures
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from safetensors_io import load_safetensors, save_safetensors

SIZES = {
    "atto": ([2, 2, 6, 2], [40, 80, 160, 320]), "femto": ([2, 2, 6, 2], [48, 96, 192, 384]),
    "pico": ([2, 2, 6, 2], [64, 128, 256, 512]), "nano": ([2, 2, 8, 2], [80, 160, 320, 640]),
    "tiny": ([3, 3, 9, 3], [96, 192, 384, 768]), "small": ([3, 3, 27, 3], [96, 192, 384, 768]),
    "base": ([3, 3, 27, 3], [128, 256, 512, 1024]), "large": ([3, 3, 27, 3], [192, 384, 768, 1536]),
    "xlarge": ([3, 3, 27, 3], [256, 512, 1024, 2048]),
}


# ---- the model ----------------------------------------------------------------
class LayerNorm(nn.Module):
    """Facebook's LayerNorm: over the last dim, or over channels of an NCHW map."""

    def __init__(self, c, eps=1e-6, channels_first=False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps, self.channels_first, self.c = eps, channels_first, (c,)

    def forward(self, x):
        if not self.channels_first:
            return F.layer_norm(x, self.c, self.weight, self.bias, self.eps)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class SE(nn.Module):
    def __init__(self, c, r=16):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(c, c // r, bias=False), nn.ReLU(), nn.Linear(c // r, c, bias=False), nn.Sigmoid())

    def forward(self, x):
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


def drop_path(x, p, training):
    if p == 0.0 or not training:
        return x
    keep = 1 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class Block(nn.Module):
    def __init__(self, dim, drop_path_rate=0.0):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = LayerNorm(dim, 1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))
        self.drop_path_rate = drop_path_rate

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + drop_path(y.permute(0, 3, 1, 2), self.drop_path_rate, self.training)


class SelfAttention(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.norm = nn.LayerNorm(d)  # eps 1e-5
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.d = d

    def forward(self, x):
        x = self.norm(x)
        q, k, v = self.query(x), self.key(x), self.value(x)
        w = torch.softmax((q @ k.t()) * self.d ** -0.25, dim=-1)
        return w @ v, w


class EmoNeXt(nn.Module):
    def __init__(self, size="tiny", classes=7, image_size=224, drop_path_rate=0.1):
        super().__init__()
        depths, dims = SIZES[size]
        s = ((image_size - 6) // 2 - 4) // 2
        self.s = s
        self.localization = nn.Sequential(nn.Conv2d(3, 8, 7), nn.BatchNorm2d(8), nn.MaxPool2d(2, 2), nn.ReLU(True),
                                          nn.Conv2d(8, 10, 5), nn.BatchNorm2d(10), nn.MaxPool2d(2, 2), nn.ReLU(True))
        self.fc_loc = nn.Sequential(nn.Linear(10 * s * s, 32), nn.ReLU(True), nn.Linear(32, 6))
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm(dims[0], 1e-6, True))] +
            [nn.Sequential(LayerNorm(dims[i - 1], 1e-6, True), nn.Conv2d(dims[i - 1], dims[i], 2, 2), SE(dims[i]))
             for i in range(1, 4)])
        rates = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths))]
        self.stages, b = nn.ModuleList(), 0
        for i in range(4):
            self.stages.append(nn.Sequential(*[Block(dims[i], rates[b + j]) for j in range(depths[i])]))
            b += depths[i]
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], classes)
        self.attention = SelfAttention(dims[-1])

    def stn(self, x):
        xs = self.localization(x).reshape(-1, 10 * self.s * self.s)
        theta = self.fc_loc(xs).view(-1, 2, 3)
        grid = F.affine_grid(theta, x.size(), align_corners=True)
        return F.grid_sample(x, grid, align_corners=True)

    def forward(self, x):
        x = self.stn(x)
        for i in range(4):
            x = self.stages[i](self.downsample_layers[i](x))
        f = self.norm(x.mean((-2, -1)))
        _, w = self.attention(f)
        return self.head(f), w


def emonext_loss(logits, w, labels, smoothing=0.2):
    return F.cross_entropy(logits, labels, label_smoothing=smoothing) + ((w - w.mean()) ** 2).mean()


# ---- the engine's generator, bit for bit ---------------------------------------------
class Philox:
    """core/base/philox.h and Generator: element i of a fill uses block counter + i // 4, lane i % 4."""

    def __init__(self, seed):
        self.seed, self.counter = seed, 0

    def _blocks(self, first, count):
        c0 = (np.arange(first, first + count, dtype=np.uint64) & 0xFFFFFFFF).astype(np.uint64)
        c1 = ((np.arange(first, first + count, dtype=np.uint64) >> np.uint64(32)) & 0xFFFFFFFF).astype(np.uint64)
        c2 = np.zeros(count, np.uint64)
        c3 = np.zeros(count, np.uint64)
        k0, k1 = self.seed & 0xFFFFFFFF, (self.seed >> 32) & 0xFFFFFFFF
        m32 = np.uint64(0xFFFFFFFF)
        for _ in range(10):
            p0 = np.uint64(0xD2511F53) * c0
            p1 = np.uint64(0xCD9E8D57) * c2
            hi0, lo0 = p0 >> np.uint64(32), p0 & m32
            hi1, lo1 = p1 >> np.uint64(32), p1 & m32
            c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
            k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
        return np.stack([c0, c1, c2, c3], axis=1).reshape(-1)

    def rand(self, shape, low, high):
        n = int(np.prod(shape)) if len(shape) else 1
        blocks = (n + 3) // 4
        u32 = self._blocks(self.counter, blocks)[:n].astype(np.uint32)
        self.counter += blocks
        u = (u32 >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / 16777216.0)
        x = np.float32(low) + np.float32(high - low) * u
        return torch.from_numpy(x.astype(np.float32).reshape(shape))


def fill_range(name, shape):
    """The parity fill: (low, high) for a tensor, or None to leave it (the i64 counter)."""
    if name.endswith("num_batches_tracked"):
        return None
    if name == "fc_loc.2.weight":
        return (-0.02, 0.02)
    if name.endswith("running_var"):
        return (0.5, 1.5)
    if name.endswith("running_mean"):
        return (-0.2, 0.2)
    if name.endswith("gamma"):
        return (0.2, 0.6)
    if len(shape) >= 2:
        fan_in = int(np.prod(shape)) // shape[0]
        b = 1.0 / math.sqrt(fan_in)
        return (-b, b)
    if name.endswith(".bias"):
        return (-0.1, 0.1)
    return (0.5, 1.5)  # norm weights


def parity_fill(model, gen):
    sd = model.state_dict()
    with torch.no_grad():
        for name in sorted(sd):
            r = fill_range(name, list(sd[name].shape))
            if r is None:
                continue
            v = gen.rand(list(sd[name].shape), *r)
            if name == "fc_loc.2.bias":
                v = v + torch.tensor([1, 0, 0, 0, 1, 0], dtype=torch.float32)
            sd[name].copy_(v)


def smooth_images(gen, n, size):
    """[n, size, size, 3] float32: per image and channel a bilinear ramp
    a0 + a1 u + a2 v + a3 u v with u, v in [0, 1], coefficients from gen (the same
    float32 operations in the same order as tests/test_parity.cpp)."""
    a = gen.rand([n, 3, 4], 0.0, 0.25).numpy()
    u = (np.arange(size, dtype=np.float32) / np.float32(size - 1))[:, None]  # along H
    v = (np.arange(size, dtype=np.float32) / np.float32(size - 1))[None, :]  # along W
    out = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        for c in range(3):
            a0, a1, a2, a3 = (np.float32(x) for x in a[i, c])
            out[i, :, :, c] = ((a0 + a1 * u) + a2 * v) + (a3 * u) * v
    return torch.from_numpy(out)


# ---- fixtures ---------------------------------------------------------------------
GRAD_SAMPLES = 1024


def sample(t):
    """Every step-th element of the flattened tensor, at most GRAD_SAMPLES of them."""
    flat = t.reshape(-1)
    step = max(1, flat.numel() // GRAD_SAMPLES)
    return flat[::step][:GRAD_SAMPLES]


def make_parity_fixture(path, size, image_size, n, seed, smooth):
    model = EmoNeXt(size, 7, image_size, drop_path_rate=0.0)
    gen = Philox(seed)
    parity_fill(model, gen)
    images = smooth_images(gen, n, image_size) if smooth else gen.rand([n, image_size, image_size, 3], 0.0, 1.0)
    labels = torch.from_numpy(np.minimum((gen.rand([n], 0.0, 7.0).numpy()).astype(np.int64), 6))
    model = model.double()
    x = images.double().permute(0, 3, 1, 2)
    out = {"images": images, "labels": labels}
    model.eval()
    with torch.no_grad():
        out["eval.logits"], out["eval.attention"] = (t.float() for t in model(x))
    model.train()
    logits, w = model(x)
    loss = emonext_loss(logits, w, labels)
    loss.backward()
    out["train.logits"], out["train.attention"] = logits.detach().float(), w.detach().float()
    out["train.loss"] = loss.detach().reshape(1)
    for name, p in model.named_parameters():
        if p.grad is None:
            continue  # attention.value.*: its output is discarded
        out["grad." + name] = sample(p.grad)
        out["gradnorm." + name] = p.grad.norm().reshape(1)
    for name, b in model.named_buffers():
        if "running" in name:
            out["buffer." + name] = b.detach().float()
    meta = {"size": size, "image_size": image_size, "seed": seed, "smooth": int(smooth), "grad_samples": GRAD_SAMPLES}
    save_safetensors(path, out, meta)
    print(f"wrote {os.path.normpath(path)}: EmoNeXt-{size} at {image_size}, batch {n}, loss {loss.item():.6f}")


def make_torch_file_fixtures(fixtures):
    """Small torch.save files for the engine's zip/pickle reader: every stored dtype it
    reads, views with offsets and strides sharing one storage, objects it must skip,
    and an old (pre-1.6, non-zip) file it must refuse."""
    import argparse
    import collections
    g = torch.Generator().manual_seed(5)
    base = torch.randn(4, 6, generator=g)
    sd = collections.OrderedDict()
    sd["f32"] = torch.randn(3, 5, generator=g)
    sd["f64"] = torch.randn(2, 3, generator=g, dtype=torch.float64)
    sd["f16"] = torch.randn(7, generator=g).half()
    sd["bf16"] = torch.randn(2, 2, generator=g).bfloat16()
    sd["i64"] = torch.tensor([3, -1, 1 << 40])
    sd["u8"] = torch.tensor([0, 7, 255], dtype=torch.uint8)
    sd["scalar"] = torch.tensor(2.5)
    sd["view.transposed"] = base.t()             # strides (1, 6)
    sd["view.slice"] = base[1:3, 2:5]            # storage offset 8
    sd["param"] = torch.nn.Parameter(torch.randn(3, generator=g))
    obj = {"model": sd, "epoch": 12, "lr": 1e-3, "args": argparse.Namespace(model="tiny", flag=True),
           "history": [1, 2.5, "x", None, (True, False)], "big": -(1 << 40)}
    torch.save(obj, os.path.join(fixtures, "torch_zip.pt"))
    torch.save({"model": {"w": torch.ones(2)}}, os.path.join(fixtures, "torch_legacy.pt"), _use_new_zipfile_serialization=False)
    expect = collections.OrderedDict((k, v.detach().to(torch.float64 if v.dtype != torch.int64 else torch.int64).contiguous())
                                     for k, v in sd.items())
    save_safetensors(os.path.join(fixtures, "torch_zip_expected.safetensors"), expect)
    rewrite_as_zip64(os.path.join(fixtures, "torch_zip.pt"), os.path.join(fixtures, "torch_zip64.pt"))
    print("wrote torch_zip.pt, torch_zip64.pt, torch_legacy.pt and torch_zip_expected.safetensors")


def rewrite_as_zip64(src, dst):
    """The same torch.save archive with every size and offset in zip64 records, the form
    torch.save writes past 4 GiB: the central directory's 32-bit fields all 0xFFFFFFFF,
    the values in zip64 extra fields, and a zip64 end record with its locator. Checked
    by Python's zipfile and by torch.load before it is kept."""
    import struct
    import zipfile
    with zipfile.ZipFile(src) as z:
        entries = [(i, z.read(i)) for i in z.infolist()]
    out, central = bytearray(), bytearray()
    for info, data in entries:
        assert info.compress_type == zipfile.ZIP_STORED
        name = info.filename.encode()
        y, mo, d, h, mi, sec = info.date_time
        dos_time, dos_date = (h << 11) | (mi << 5) | (sec // 2), ((y - 1980) << 9) | (mo << 5) | d
        crc, offset, flags = zipfile.crc32(data), len(out), info.flag_bits & ~0x08
        extra = struct.pack("<HHQQ", 1, 16, len(data), len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, flags, 0, dos_time, dos_date, crc, 0xFFFFFFFF, 0xFFFFFFFF,
                           len(name), len(extra)) + name + extra + data
        extra = struct.pack("<HHQQQ", 1, 24, len(data), len(data), offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, flags, 0, dos_time, dos_date, crc, 0xFFFFFFFF,
                               0xFFFFFFFF, len(name), len(extra), 0, 0, 0, 0, 0xFFFFFFFF) + name + extra
    cd_offset = len(out)
    out += central
    end64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(entries), len(entries), len(central), cd_offset)
    out += struct.pack("<IIQI", 0x07064B50, 0, end64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(dst, "wb") as f:
        f.write(out)
    with zipfile.ZipFile(dst) as z:
        assert z.testzip() is None and [i.filename for i in z.infolist()] == [i.filename for i, _ in entries]
    a, b = torch.load(src), torch.load(dst)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def timm_name(n):
    """Facebook's ConvNeXt name -> timm's."""
    import re
    m = re.fullmatch(r"downsample_layers\.0\.([01])\.(.*)", n)
    if m:
        return f"stem.{m[1]}.{m[2]}"
    m = re.fullmatch(r"downsample_layers\.(\d)\.([01])\.(.*)", n)
    if m:
        return f"stages.{m[1]}.downsample.{m[2]}.{m[3]}"
    m = re.fullmatch(r"stages\.(\d)\.(\d+)\.(dwconv|norm|pwconv1|pwconv2|gamma)(\..*)?", n)
    if m:
        part = {"dwconv": "conv_dw", "norm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2", "gamma": "gamma"}[m[3]]
        return f"stages.{m[1]}.blocks.{m[2]}.{part}{m[4] or ''}"
    if n.startswith("norm."):
        return "head.norm." + n[5:]
    return "head.fc." + n[5:]  # head.*


def torchvision_name(n, t):
    import re
    m = re.fullmatch(r"downsample_layers\.(\d)\.([01])\.(.*)", n)
    if m:
        return f"features.{2 * int(m[1])}.{m[2]}.{m[3]}", t
    m = re.fullmatch(r"stages\.(\d)\.(\d+)\.(dwconv|norm|pwconv1|pwconv2|gamma)(\..*)?", n)
    if m:
        f = 2 * int(m[1]) + 1
        if m[3] == "gamma":
            return f"features.{f}.{m[2]}.layer_scale", t.reshape(-1, 1, 1)
        part = {"dwconv": "0", "norm": "2", "pwconv1": "3", "pwconv2": "5"}[m[3]]
        return f"features.{f}.{m[2]}.block.{part}{m[4]}", t
    if n.startswith("norm."):
        return "classifier.0." + n[5:], t
    return "classifier.2." + n[5:], t


def make_pretrained_files(out):
    """A random ConvNeXt-atto backbone with a 1000-class head in the three schemes,
    plus EmoNeXt's own checkpoint forms and broken files for the refusals."""
    import collections
    g = torch.Generator().manual_seed(9)
    emo = EmoNeXt("atto", 7, 48)
    fb = collections.OrderedDict()
    for n, t in emo.state_dict().items():
        if n.startswith(("localization", "fc_loc", "attention", "head")) or ".2.fc." in n:
            continue
        fb[n] = torch.randn(t.shape, generator=g) * 0.05 + (1.0 if n.endswith("norm.weight") or ".1.weight" in n and t.ndim == 1 else 0.0)
    fb["head.weight"] = torch.randn(1000, 320, generator=g) * 0.02
    fb["head.bias"] = torch.zeros(1000)
    torch.save({"model": fb, "epoch": 299}, os.path.join(out, "facebook.pth"))
    torch.save({"model": collections.OrderedDict((k, v.half()) for k, v in fb.items())}, os.path.join(out, "facebook_f16.pth"))
    timm = collections.OrderedDict((timm_name(k), v) for k, v in fb.items())
    save_safetensors(os.path.join(out, "model.safetensors"), timm)
    torch.save(timm, os.path.join(out, "pytorch_model.bin"))
    tv = collections.OrderedDict(torchvision_name(k, v) for k, v in fb.items())
    torch.save(tv, os.path.join(out, "torchvision.pth"))
    save_safetensors(os.path.join(out, "original.safetensors"), fb)  # the engine-named truth
    # EmoNeXt's own checkpoints: "model", and "ema" with ema_model.-prefixed keys.
    sd = emo.state_dict()
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}}, os.path.join(out, "emonext.pth"))
    torch.save({"ema": collections.OrderedDict(("ema_model." + k, v) for k, v in sd.items())}, os.path.join(out, "emonext_ema.pth"))
    # Broken ones.
    missing = collections.OrderedDict(fb)
    del missing["stages.2.3.pwconv1.weight"]
    torch.save({"model": missing}, os.path.join(out, "missing.pth"))
    extra = collections.OrderedDict(fb)
    extra["stages.1.0.extra_thing"] = torch.zeros(3)
    torch.save({"model": extra}, os.path.join(out, "unexpected.pth"))
    wrong = collections.OrderedDict(fb)
    wrong["stages.1.0.pwconv1.weight"] = torch.zeros(320, 81)
    torch.save({"model": wrong}, os.path.join(out, "mismatch.pth"))
    print(f"wrote the pretrained-weight test files to {out}")


def overfit(ckpt, batch_path, steps, out_path, lr=1e-3):
    """emonext_train --overfit-batch's twin: K steps of AdamW (wd 0.01, betas 0.9/0.999,
    eps 1e-8) at a constant lr with gradient clipping at 1.0, in float64, from the
    engine's checkpoint; writes loss [K], the first step's logits and gradients."""
    weights, meta = load_safetensors(ckpt)
    model = EmoNeXt(meta["model"], int(meta["classes"]), int(meta["image_size"]), drop_path_rate=0.0)
    model.load_state_dict(weights, strict=True)
    model = model.double()
    model.train()
    batch = load_safetensors(batch_path)[0]
    x, y = batch["images"].double(), batch["labels"]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    out, losses = {}, []
    for step in range(int(steps)):
        logits, w = model(x)
        loss = emonext_loss(logits, w, y)
        opt.zero_grad()
        loss.backward()
        losses.append(loss.item())
        if step == 0:
            out["logits"] = logits.detach()
            for name, p in model.named_parameters():
                if p.grad is not None:
                    out["grad." + name] = p.grad.detach().clone()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    out["loss"] = torch.tensor(losses, dtype=torch.float64)
    save_safetensors(out_path, out)
    print("twin losses:", " ".join(f"{v:.6f}" for v in losses))


def check(ckpt, images_path, logits_path):
    weights, meta = load_safetensors(ckpt)
    model = EmoNeXt(meta["model"], int(meta["classes"]), int(meta["image_size"]))
    model.load_state_dict(weights, strict=True)
    model.eval()
    images = load_safetensors(images_path)[0]["images"]
    want = load_safetensors(logits_path)[0]["logits"]
    with torch.no_grad():
        logits, _ = model(images)
    err = ((logits - want).abs().max() / logits.abs().max()).item()
    print(f"max |torch - engine| / max |torch| = {err:.3e}")
    return err


def gradcam(ckpt, images_path, stage, out_path):
    """Grad-CAM as train/explain.cpp defines it, with a hook on stage `stage`'s output, in
    float64: for each image's predicted class, the logit's gradient with respect to that
    output, averaged over its height and width, weights its channels; ReLU of the weighted
    sum, divided by its maximum."""
    weights, meta = load_safetensors(ckpt)
    model = EmoNeXt(meta["model"], int(meta["classes"]), int(meta["image_size"]))
    model.load_state_dict(weights, strict=True)
    model = model.double().eval()
    images = load_safetensors(images_path)[0]["images"].double()
    kept = {}
    model.stages[int(stage)].register_forward_hook(lambda m, i, o: kept.update(a=o))
    logits, _ = model(images)
    kept["a"].retain_grad()
    predicted = logits.argmax(1)
    logits.gather(1, predicted[:, None]).sum().backward()
    a, g = kept["a"], kept["a"].grad
    cam = torch.relu((g.mean((2, 3))[:, :, None, None] * a).sum(1))
    top = cam.flatten(1).max(1).values
    cam = torch.where(top[:, None, None] > 0, cam / top.clamp_min(1e-300)[:, None, None], torch.zeros_like(cam))
    save_safetensors(out_path, {"cam": cam.detach().float(), "predicted": predicted})


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    fixtures = os.path.join(here, "..", "..", "tests", "fixtures")
    if len(sys.argv) >= 2 and sys.argv[1] == "fixtures":
        torch.set_num_threads(2)
        make_parity_fixture(os.path.join(fixtures, "parity_atto48.safetensors"), "atto", 48, 4, 11, smooth=False)
        make_parity_fixture(os.path.join(fixtures, "parity_tiny224.safetensors"), "tiny", 224, 2, 12, smooth=True)
        make_torch_file_fixtures(fixtures)
    elif len(sys.argv) == 6 and sys.argv[1] == "overfit":
        overfit(*sys.argv[2:6])
    elif len(sys.argv) == 3 and sys.argv[1] == "pretrained":
        make_pretrained_files(sys.argv[2])
    elif len(sys.argv) == 6 and sys.argv[1] == "gradcam":
        gradcam(*sys.argv[2:6])
    elif len(sys.argv) == 5 and sys.argv[1] == "check":
        sys.exit(0 if check(*sys.argv[2:5]) <= 1e-4 else 1)
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
