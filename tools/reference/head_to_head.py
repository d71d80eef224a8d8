#!/usr/bin/env python3
"""Training speed head to head: the engine's `emonext_train --benchmark` beside the same
training step in PyTorch (the twin of tools/reference/emonext_twin.py, and timm's
convnext_tiny for the bare backbone), on one device, in one run.

  head_to_head.py --engine build/tools/emonext_train --out DIR [--device cuda|cpu] [--smoke] [--extra]
                  [--pairs N] [--threads T] [--only NAME]
  head_to_head.py --warm-compile [--device cuda]

Every row trains the same thing: synthetic images, the same batch and image size,
drop path 0.1, the loss (EmoNeXt's: cross-entropy with label smoothing 0.2 plus the
attention term; the backbone: the cross-entropy), backward, the gradient norm clipped
at 1.0, AdamW (lr 1e-3, weight decay 0.01, PyTorch's default implementation), no EMA.
Images/s is the steady state: the engine's own figure (the steps after its first 3, its
loader threads running beside them), PyTorch's over the timed steps after the warm-up
steps (which include compilation).
Peak memory is what the tensors held (the engine's pool statistics, PyTorch's
max_memory_allocated) and what the device reserved for them at most (the engine's pool
peak plus its CUDA graph's memory, CUDA's own figures; PyTorch's max_memory_reserved).
PyTorch's batch sits on the device; the engine's goes through
its loader and a host-to-device copy each step (its data wait is not in its step time,
the copy is).

Configurations (--smoke: tiny shapes and a few steps, for CI on a CPU):
  on a GPU
  EmoNeXt-tiny at 224, batch 128   engine f32, bf16; PyTorch f32 (TF32 off), bf16 autocast
                                   channels_last eager, and torch.compile of it
  EmoNeXt-atto at 48, batch 256    the same rows
  ConvNeXt-T at 224, batch 128     engine --backbone bf16; timm convnext_tiny bf16 autocast
                                   channels_last, eager and compiled
  --extra: EmoNeXt-tiny at 224, batch 64, engine --amp fp16 beside PyTorch autocast fp16
           with a GradScaler (eager)
  on the CPU (--threads threads each side: OMP_NUM_THREADS, torch.set_num_threads)
  EmoNeXt-atto at 48, batch 64     engine f32, bf16; PyTorch f32 and bf16 autocast, both
  EmoNeXt-tiny at 224, batch 16    channels_last, each eager and compiled
  ConvNeXt-T at 224, batch 16      engine --backbone f32, bf16; timm the same four rows

--pairs N times each configuration's rows in turn N times over (engine, PyTorch eager,
compiled, engine, ...), each PyTorch model built and compiled once: on a machine whose
speed drifts, the ratios of one pass are what compare. Ratios compare rows of the same
precision.

Writes DIR/head_to_head.csv and DIR/head_to_head.md after every row, so a run cut short
keeps the rows it finished. --warm-compile runs each compiled model for two steps and
writes nothing: started while the engine builds, it fills PyTorch's compile caches so
that the timed run's compilation is short.

Runs under PyTorch 2 (with CUDA: the GPU check; on the CPU: the environment of
tools/reference/setup_pytorch2.sh) and under Debian's PyTorch 1.13 on a CPU (--smoke
--device cpu, in CI), where torch.compile and timm are absent and those rows say so.
"""
import argparse
import contextlib
import csv
import gc
import os
import re
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emonext_twin import EmoNeXt, emonext_loss  # noqa: E402

FIELDS = ["config", "impl", "precision", "mode", "pass", "batch", "image_size", "images_per_s", "ms_per_step", "peak_mb",
          "reserved_mb", "compile_s", "status"]


class Config:
    def __init__(self, name, model, image_size, batch, warmup, steps, backbone=False):
        self.name, self.model, self.image_size, self.batch = name, model, image_size, batch
        self.warmup, self.steps, self.backbone = warmup, steps, backbone


def configs(smoke, extra, device):
    if smoke:
        out = [Config("EmoNeXt-tiny/32", "tiny", 32, 4, 1, 2), Config("EmoNeXt-atto/48", "atto", 48, 8, 1, 2),
               Config("ConvNeXt-T/32 backbone", "tiny", 32, 4, 1, 2, backbone=True)]
        if extra:
            out.append(Config("EmoNeXt-tiny/32 fp16", "tiny", 32, 4, 1, 2))
        return out
    if device == "cpu":
        return [Config("EmoNeXt-atto/48", "atto", 48, 64, 3, 20), Config("EmoNeXt-tiny/224", "tiny", 224, 16, 2, 5),
                Config("ConvNeXt-T/224 backbone", "tiny", 224, 16, 2, 5, backbone=True)]
    out = [Config("EmoNeXt-tiny/224", "tiny", 224, 128, 5, 20), Config("EmoNeXt-atto/48", "atto", 48, 256, 5, 40),
           Config("ConvNeXt-T/224 backbone", "tiny", 224, 128, 5, 20, backbone=True)]
    if extra:
        out.append(Config("EmoNeXt-tiny/224 fp16", "tiny", 224, 64, 5, 20))
    return out


def rows_for(cfg, device):
    """(impl, precision, mode) of each row of a configuration, engine rows first."""
    if cfg.name.endswith("fp16"):
        return [("engine", "fp16", ""), ("engine", "bf16", ""), ("pytorch", "fp16", "eager")]
    if device == "cpu":  # f32 is the CPU's own precision: both sides in both
        impl = "timm" if cfg.backbone else "pytorch"
        mode = "--backbone" if cfg.backbone else ""
        return [("engine", "f32", mode), ("engine", "bf16", mode), (impl, "f32", "eager"), (impl, "f32", "compiled"),
                (impl, "bf16", "eager"), (impl, "bf16", "compiled")]
    if cfg.backbone:
        return [("engine", "bf16", "--backbone"), ("timm", "bf16", "eager"), ("timm", "bf16", "compiled")]
    return [("engine", "f32", ""), ("engine", "bf16", ""), ("pytorch", "f32", "eager"), ("pytorch", "bf16", "eager"),
            ("pytorch", "bf16", "compiled")]


# ---- the engine ------------------------------------------------------------------------
def engine_row(engine, cfg, precision, device, threads=None):
    with tempfile.TemporaryDirectory() as d:
        cmd = [engine, "--benchmark", str(cfg.steps + 3), "--model", cfg.model, "--img-size", str(cfg.image_size), "--batch",
               str(cfg.batch), "--device", device, "--amp", "off" if precision == "f32" else precision, "--no-ema",
               "--drop-path", "0.1", "--out", d]
        if cfg.backbone:
            cmd.append("--backbone")
        try:  # a row that hangs must not take the other rows' time
            env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120 if device == "cuda" else 600, env=env)
        except subprocess.TimeoutExpired:
            return {"status": "FAILED: no result in time"}
    line = next((x for x in r.stdout.splitlines() if x.startswith("benchmark:")), None)
    if r.returncode != 0 or line is None:
        why = (r.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": f"FAILED (exit {r.returncode}): {why}"}
    m = re.search(r"([0-9.]+) images/s, ([0-9.]+) ms/step.*peak tensor memory on \S+ ([0-9.]+) MB", line)
    reserved = re.search(r"device memory reserved at most ([0-9.]+) MB", line)
    launches = re.search(r"([0-9]+) GPU launches per step", line)
    replayed = re.search(r"([0-9]+) of the [0-9]+ steps replayed from a CUDA graph", line)
    # A capture the GPU refused: the run went on eagerly (the engine says why on stderr).
    graph_failed = next((x for x in r.stderr.splitlines() if "could not be captured as a CUDA graph" in x), None)
    return {"images_per_s": float(m.group(1)), "ms_per_step": float(m.group(2)), "peak_mb": float(m.group(3)),
            "reserved_mb": float(reserved.group(1)) if reserved else "",
            "status": "ok" + (f", {launches.group(1)} launches/step" if launches else "") +
                      (f", {replayed.group(1)} steps replayed from a CUDA graph" if replayed else "") +
                      (f"; the graph FAILED, eager steps: {graph_failed}" if graph_failed else "")}


# ---- PyTorch -----------------------------------------------------------------------------
def make_torch_model(impl, cfg):
    if impl == "timm":
        import timm  # the GPU machine's image has it; Debian's PyTorch does not
        return timm.create_model("convnext_tiny" if cfg.model == "tiny" else f"convnext_{cfg.model}", num_classes=7,
                                 drop_path_rate=0.1)
    return EmoNeXt(cfg.model, 7, cfg.image_size, drop_path_rate=0.1)


class TorchRun:
    """One PyTorch row: its model, optimiser and batch, built, compiled and warmed up once
    (`status` says why when the row cannot run here); time() times its steps."""

    def __init__(self, impl, cfg, precision, mode, device, warmup=None):
        self.cfg, self.device, self.mode, self.status = cfg, device, mode, None
        if mode == "compiled" and not hasattr(torch, "compile"):
            self.status = f"skipped: torch.compile needs PyTorch 2 (this is {torch.__version__})"
            return
        if device == "cpu" and precision != "f32" and not hasattr(torch, "compile"):
            self.status = (f"skipped: PyTorch {torch.__version__}'s CPU autocast has no rule for LayerNorm (bf16 input, "
                           "f32 weight) and no fp16")
            return
        try:
            model = make_torch_model(impl, cfg).to(device).train()
        except ImportError as e:
            self.status = f"skipped: {e}"
            return
        low = precision in ("bf16", "fp16")
        # channels_last: on a GPU the 16-bit rows (tensor cores); on the CPU every row (f32 1.2-1.4x
        # NCHW's speed there, EmoNeXt-atto/48 and tiny/224, PyTorch 2.15, 2 threads)
        last = low or device == "cpu"
        if last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        # dynamic=False: a model compiled again at another configuration's shapes would
        # otherwise be recompiled with symbolic shapes, which Inductor then failed on
        # (affine_grid's backward, EmoNeXt-tiny/224 after atto/48, PyTorch 2.15 on the CPU)
        run = torch.compile(model, dynamic=False) if mode == "compiled" else model
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.rand(cfg.batch, 3, cfg.image_size, cfg.image_size, generator=g).to(device)
        y = torch.randint(0, 7, (cfg.batch,), generator=g).to(device)
        if last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        scaler = None
        if precision == "fp16" and device == "cuda":
            scaler = torch.amp.GradScaler("cuda") if hasattr(torch.amp, "GradScaler") else torch.cuda.amp.GradScaler()

        def step():
            with torch.autocast(device_type=device, dtype=dtype) if low else contextlib.nullcontext():
                out = run(x)
                loss = F.cross_entropy(out, y, label_smoothing=0.2) if impl == "timm" else emonext_loss(*out, y)
            opt.zero_grad(set_to_none=True)
            if scaler:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()

        self.step = step
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(cfg.warmup if warmup is None else warmup):
            step()
        self.sync()
        self.warm_s = time.perf_counter() - t0

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def time(self):
        if self.status:
            return {"status": self.status}
        t0 = time.perf_counter()
        for _ in range(self.cfg.steps):
            self.step()
        self.sync()
        s = time.perf_counter() - t0
        row = {"images_per_s": self.cfg.steps * self.cfg.batch / s, "ms_per_step": 1000 * s / self.cfg.steps, "status": "ok",
               "compile_s": round(self.warm_s, 1) if self.mode == "compiled" else ""}
        if self.device == "cuda":
            row["peak_mb"] = torch.cuda.max_memory_allocated() / 1e6
            row["reserved_mb"] = torch.cuda.max_memory_reserved() / 1e6
        return row


def release(device):
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


# ---- the report ----------------------------------------------------------------------------
def fmt(v, f="{:.1f}"):
    return f.format(v) if isinstance(v, (int, float)) else (v or "")


def write_report(out_dir, rows, header):
    with open(os.path.join(out_dir, "head_to_head.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in FIELDS})
    lines = [header, "", "| configuration | implementation | precision | images/s | ms/step | peak MB | reserved MB |"
             " vs PyTorch eager | vs compiled | note |", "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    key = (lambda r: (r["config"], r["impl"], r["precision"], r["mode"]))
    groups = {}  # a row of the table per configuration and implementation; its passes in order
    for r in rows:
        groups.setdefault(key(r), []).append(r)

    def ratios(passes, mode):  # an engine row against PyTorch's row of the same precision and pass
        out = []
        for r in passes:
            o = next((o for o in rows if o["config"] == r["config"] and o["impl"] != "engine" and o["mode"] == mode and
                      o["precision"] == r["precision"] and o["pass"] == r["pass"] and o.get("images_per_s")), None)
            if r["impl"] == "engine" and o and r.get("images_per_s"):
                out.append(f"{r['images_per_s'] / o['images_per_s']:.2f}x")
        return " / ".join(out)

    for (config, impl, precision, mode), passes in groups.items():
        r = passes[-1]
        def joined(field, f="{:.1f}"):  # the passes' values, or nothing where none has one
            values = [fmt(p.get(field), f) for p in passes]
            return " / ".join(values) if any(values) else ""

        name = impl + (f" {mode}" if mode else "")
        note = "; ".join(dict.fromkeys(p.get("status", "") for p in passes))
        if r.get("compile_s") not in ("", None):
            note += f", compiled in {passes[0]['compile_s']} s (incl. warm-up)"
        lines.append(f"| {config}, batch {r['batch']} | {name} | {precision} | {joined('images_per_s')} | "
                     f"{joined('ms_per_step')} | {joined('peak_mb', '{:.0f}')} | {joined('reserved_mb', '{:.0f}')} | "
                     f"{ratios(passes, 'eager')} | {ratios(passes, 'compiled')} | {note} |")
    with open(os.path.join(out_dir, "head_to_head.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", help="the emonext_train binary")
    ap.add_argument("--out", help="folder for head_to_head.csv and .md")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, a few steps (CI, on a CPU)")
    ap.add_argument("--extra", action="store_true", help="also the fp16 configuration")
    ap.add_argument("--pairs", type=int, default=1, help="time each configuration's rows in turn this many times")
    ap.add_argument("--threads", type=int, help="CPU threads each side (default: as the libraries choose)")
    ap.add_argument("--only", help="the configurations whose name contains this, e.g. tiny/224")
    ap.add_argument("--warm-compile", action="store_true", help="compile each compiled row's model and stop")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # f32 as the engine computes it (no TF32 anywhere)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True  # what a user who cares for speed sets
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.warm_compile:
        for cfg in configs(a.smoke, False, a.device):
            for impl, precision, mode in rows_for(cfg, a.device):
                if mode == "compiled":
                    r = TorchRun(impl, cfg, precision, mode, a.device, warmup=2)
                    print(f"warm-compile {cfg.name} {impl}: {r.status or f'warmed in {r.warm_s:.1f} s'}", flush=True)
                    del r
                    release(a.device)
        return 0
    if not a.engine or not a.out:
        ap.error("--engine and --out are needed (or --warm-compile)")
    os.makedirs(a.out, exist_ok=True)
    dev_name = torch.cuda.get_device_name(0) if a.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    header = (f"Training images/s, {dev_name}, PyTorch {torch.__version__}"
              f"{', cuDNN ' + str(torch.backends.cudnn.version()) if a.device == 'cuda' else ''}, engine {a.engine}")
    print(header, flush=True)
    rows, failed = [], False
    for cfg in configs(a.smoke, a.extra, a.device):
        if a.only and a.only not in cfg.name:
            continue
        runs = {}  # PyTorch's rows of this configuration, built once for all passes
        for n in range(a.pairs):
            for impl, precision, mode in rows_for(cfg, a.device):
                row = {"config": cfg.name, "impl": impl, "precision": precision, "mode": mode, "pass": n + 1,
                       "batch": cfg.batch, "image_size": cfg.image_size}
                try:
                    if impl == "engine":
                        row.update(engine_row(a.engine, cfg, precision, a.device, a.threads))
                    else:
                        if (impl, precision, mode) not in runs:
                            runs[impl, precision, mode] = TorchRun(impl, cfg, precision, mode, a.device)
                        row.update(runs[impl, precision, mode].time())
                except Exception as e:  # a row that breaks is reported; the others still run
                    runs.pop((impl, precision, mode), None)
                    row["status"] = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                if a.pairs == 1:  # nothing to keep: free it before the next row's peak memory is measured
                    runs.pop((impl, precision, mode), None)
                    release(a.device)
                failed |= row["status"].startswith("FAILED")
                rows.append(row)
                write_report(a.out, rows, header)
                print(f"{cfg.name} {impl} {mode} {precision} pass {n + 1}: {fmt(row.get('images_per_s'))} images/s, "
                      f"{row['status']}", flush=True)
        runs.clear()
        release(a.device)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
