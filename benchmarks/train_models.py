"""Benchmark: training-step cost of Mask R-CNN (light vs full backbone) and the DeltaNet change detector.

Everything runs on the CPU with **one thread** (``torch.set_num_threads(1)``), from
scratch (no weights are downloaded), on synthetic inputs:

* Mask R-CNN at 512² (native resolution, no upscaling), batch 2, 8 disc-shaped
  instances per image: one optimizer step (forward + backward + AdamW) of the
  ``light`` (ResNet-18-FPN, narrow heads) and ``full`` (ResNet-50-FPN, torchvision
  head sizes) configs, and inference time per image;
* DeltaNet Siamese U-Net: ``tiny`` (64² crops, batch 8), ``light`` (128², batch 8)
  and ``full`` (256², batch 16) steps, plus the U-Net baseline at the full size.

Usage::

    python benchmarks/train_models.py            # 3 timed steps each (several minutes)
    python benchmarks/train_models.py --quick    # 1 timed step each, smaller full-size batches, the full
                                                 # Mask R-CNN without warm-up (~35 s CPU time)

The last line printed is one JSON object with the figures: wall and CPU seconds per step
(on a shared machine the CPU time of this single-threaded process estimates the idle
wall time), steps per second, and the batch each was measured with.
"""

from __future__ import annotations

import argparse
import json
import os
import time

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _mask_target(size: int, n: int, rng):
    from simgen.train.maskrcnn.data import instance_target

    lab = np.zeros((size, size), np.uint16)
    yy, xx = np.mgrid[:size, :size] + 0.5
    for k in range(1, n + 1):
        r = rng.uniform(4, 12)
        y, x = rng.uniform(r + 2, size - r - 2, 2)
        lab[(yy - y) ** 2 + (xx - x) ** 2 < r * r] = k
    t = instance_target(lab)
    return {"boxes": torch.from_numpy(t["boxes"]), "labels": torch.from_numpy(t["labels"]),
            "masks": torch.from_numpy(t["masks"])}


def _time(fn, steps: int, warmup: int = 1) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) per call.

    On a shared machine the CPU time is the better estimate of the idle wall time
    (one thread: CPU time <= wall time; equal when nothing else runs).
    """
    for _ in range(warmup):
        fn()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def bench_maskrcnn(preset: str, size: int, batch: int, steps: int, rng, warmup: int = 1, infer: bool = True) -> dict:
    from simgen.train.maskrcnn.model import build_maskrcnn

    torch.manual_seed(0)
    model = build_maskrcnn(preset, num_classes=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = [torch.rand(1, size, size) for _ in range(batch)]
    targets = [_mask_target(size, 8, rng) for _ in range(batch)]

    def step():
        model.train()
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    def run_eval():
        model.eval()
        with torch.no_grad():
            model(images[:1])

    s, cpu = _time(step, steps, warmup=warmup)
    n_params = sum(p.numel() for p in model.parameters())
    key = f"maskrcnn_{preset}_{size}"
    out = {f"{key}_s_per_step": round(s, 3), f"{key}_cpu_s_per_step": round(cpu, 3),
           f"{key}_steps_per_s": round(1 / s, 4), f"{key}_steps_per_cpu_s": round(1 / cpu, 4),
           f"{key}_batch": batch, f"maskrcnn_{preset}_params_M": round(n_params / 1e6, 2)}
    if infer:
        wall, cpu = _time(run_eval, max(1, steps), warmup=0)
        out[f"{key}_infer_s_per_image"] = round(wall, 3)
        out[f"{key}_infer_cpu_s_per_image"] = round(cpu, 3)
    return out


def bench_deltanet(preset: str, arch: str, batch: int, steps: int) -> dict:
    from simgen.train.changedet.config import get_config
    from simgen.train.changedet.model import build_deltanet, focal_loss

    torch.manual_seed(0)
    cfg = get_config(preset, arch=arch)
    model = build_deltanet(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    s = cfg.crop
    a, b = torch.rand(batch, 1, s, s), torch.rand(batch, 1, s, s)
    y = {t: torch.randint(0, 4, (batch, s, s)) for t in ("a1", "a2")}

    def step():
        model.train()
        out = model(a, b)
        loss = sum(focal_loss(out[t], y[t], cfg.gamma) for t in y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    sec, cpu = _time(step, steps)
    key = f"deltanet_{preset}_{arch}_{s}"
    return {f"{key}_s_per_step": round(sec, 3), f"{key}_cpu_s_per_step": round(cpu, 3),
            f"{key}_steps_per_s": round(1 / sec, 4), f"{key}_steps_per_cpu_s": round(1 / cpu, 4),
            f"{key}_batch": batch, f"{key}_cpu_s_per_pair": round(cpu / batch, 4)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 timed step each, smaller batches for the full sizes.")
    parser.add_argument("--steps", type=int, default=None, help="Timed steps per case (default 3, quick 1).")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps = args.steps or (1 if args.quick else 3)
    rng = np.random.default_rng(0)
    figures = {"threads": torch.get_num_threads(), "device": "cpu", "torch": torch.__version__, "quick": args.quick,
               "load_avg_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}
    cases = [
        ("maskrcnn light 512²", lambda: bench_maskrcnn("light", 512, 2, steps, rng)),
        ("maskrcnn full 512²", lambda: bench_maskrcnn("full", 512, 2 if not args.quick else 1, steps, rng,
                                                      warmup=0 if args.quick else 1, infer=not args.quick)),
        ("deltanet tiny siamese", lambda: bench_deltanet("tiny", "siamese", 8, max(steps, 3))),
        ("deltanet light siamese", lambda: bench_deltanet("light", "siamese", 8 if not args.quick else 2, steps)),
        ("deltanet full siamese", lambda: bench_deltanet("full", "siamese", 16 if not args.quick else 1, steps)),
        ("deltanet full unet", lambda: bench_deltanet("full", "unet", 16 if not args.quick else 1, steps)),
    ]
    for name, fn in cases:
        t0 = time.perf_counter()
        res = fn()
        figures.update(res)
        print(f"{name}: {res}  ({time.perf_counter() - t0:.1f}s)", flush=True)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
