"""LDM throughput on CPU for the tiny config: training steps/s (VAE, denoiser) and samples/s.

Usage::

    python benchmarks/ldm.py --quick          # < 1 min: a few steps of each
    python benchmarks/ldm.py                  # 60 + 60 training steps, 16 samples
    python benchmarks/ldm.py --check          # the long conditioning check of the *tiny preset*:
                                              # full tiny training on synthetic dark discs, then
                                              # VAE error vs a constant and inside/outside contrast

Threads: torch runs on ``--threads`` (default 1) threads; the figures are wall-clock
on whatever else the machine is doing (state it when quoting them).  The last line
printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few steps only (< 1 min)")
    ap.add_argument("--check", action="store_true", help="full tiny-preset training on toy discs + conditioning check")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from simgen.augment.ldm import LDMConfig, load_ldm, toy_pairs
    from simgen.augment.ldm.quality import conditioning_contrast
    from simgen.train.ldm import train_ldm

    pairs = toy_pairs(32, 96, seed=args.seed, noise=0.02)
    base = LDMConfig.preset("tiny")
    if args.check:
        cfg = base
        n_samples = 32
    else:
        steps = 6 if args.quick else 60
        cfg = base.replace(vae_steps=steps, unet_steps=steps, warmup=2, latent_stat_crops=32,
                           checkpoint_every=10**6, log_every=10**6)
        n_samples = 4 if args.quick else 16
    out: dict = {"config": "tiny", "threads": args.threads, "crop": cfg.crop_size, "batch_size": cfg.batch_size,
                 "vae_steps": cfg.vae_steps, "unet_steps": cfg.unet_steps, "cpu_count": os.cpu_count(),
                 "load_avg_1min": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="ldm-bench-") as tmp:
        t0 = time.perf_counter()
        summary = train_ldm(pairs, cfg, Path(tmp) / "run", seed=args.seed, device="cpu", threads=args.threads)
        out["train_seconds"] = round(time.perf_counter() - t0, 2)
        out["vae_steps_per_s"] = round(summary["vae_steps_per_s"], 3)
        out["unet_steps_per_s"] = round(summary["unet_steps_per_s"], 3)
        out["vae_recon_mae"] = round(summary["vae"]["recon_mae"], 4)
        out["constant_mae"] = round(summary["vae"]["constant_mae"], 4)
        model = load_ldm(Path(tmp) / "run", device="cpu", threads=args.threads)
        list(model.sample(1, seed=99, steps=2))  # warm-up
        for guidance in (1.0, cfg.guidance):
            t0 = time.perf_counter()
            samples = list(model.sample(n_samples, seed=args.seed, batch_size=min(16, n_samples), guidance=guidance))
            dt = time.perf_counter() - t0
            key = "samples_per_s" if guidance == 1.0 else f"samples_per_s_guidance_{guidance:g}"
            out[key] = round(n_samples / dt, 3)
        out["sample_steps"] = cfg.sample_steps
        out["scheduler"] = cfg.scheduler
        c = conditioning_contrast([s["image"] for s in samples], [s["class_map"] for s in samples])
        out["conditioning"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.items()}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
