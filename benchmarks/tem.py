"""Throughput of the TEM defect simulator: annotated 512² images per second.

Measures ``TemSampler(i)`` (population, rendering, camera, masks and boxes — a
complete annotated sample) for the default configuration and each preset, in one
process and in ``--workers`` processes (default 2, one per core; every library
single-threaded).  Reports wall-clock rates and CPU time per image; on a shared
machine the wall rate is lower than what the same cores deliver when free, which
``images_per_s_if_cores_free = workers / cpu_s_per_image`` estimates.  Also times
writing an HDF5 dataset serially (gzip masks).  The last line is one JSON object of
figures.

Usage::

    python benchmarks/tem.py            # 400 images per measurement
    python benchmarks/tem.py --quick    # 40, < 1 min
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simgen.simulate.tem import PRESETS, TemConfig, TemSampler  # noqa: E402

_SAMPLER = None


def _init(config_dict, seed):
    global _SAMPLER
    _SAMPLER = TemSampler(TemConfig.from_dict(config_dict), seed=seed)


def _work(index_range):
    n_boxes = 0
    t0 = time.process_time()
    for i in range(*index_range):
        n_boxes += len(_SAMPLER(i)["boxes"])
    return n_boxes, time.process_time() - t0


def throughput(config: TemConfig, n: int, workers: int, seed: int = 0) -> dict:
    """Annotated images per second with ``workers`` processes (1 = in this process)."""
    if workers <= 1:
        _init(config.to_dict(), seed)
        _SAMPLER(0)  # warm-up
        t0 = time.perf_counter()
        boxes, cpu = _work((1, n + 1))
        dt = time.perf_counter() - t0
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn" if sys.platform == "darwin" else "fork")
        chunk = max(1, n // (workers * 8))
        ranges = [(i, min(i + chunk, n + 1)) for i in range(1, n + 1, chunk)]
        with ctx.Pool(workers, initializer=_init, initargs=(config.to_dict(), seed)) as pool:
            pool.map(_work, [(0, 1)] * workers)  # warm-up
            t0 = time.perf_counter()
            res = pool.map(_work, ranges)
            dt = time.perf_counter() - t0
            boxes, cpu = sum(r[0] for r in res), sum(r[1] for r in res)
    return {"images_per_s": round(n / dt, 1), "ms_per_image": round(1000 * dt / n, 2),
            "cpu_ms_per_image": round(1000 * cpu / n, 2),
            # what `workers` otherwise idle cores deliver: wall time is inflated when others share the machine
            "images_per_s_if_cores_free": round(max(workers, 1) * n / cpu, 1) if cpu > 0 else None,
            "boxes_per_image": round(boxes / n, 1)}


def write_rate(config: TemConfig, n: int) -> float:
    from simgen.datasets.generate import write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_dataset(Path(tmp) / "tem.h5", TemSampler(config, seed=0), n)
        return round(n / (time.perf_counter() - t0), 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 images per measurement (< 1 min)")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    n = 40 if args.quick else args.n
    configs = {"default": TemConfig(size=512)}
    configs.update({name: TemConfig.from_preset(name, size=512) for name in PRESETS})
    out = {"image_size": 512, "threads_per_process": 1, "workers": args.workers, "n": n,
           "cpu_count": os.cpu_count()}
    for name, cfg in configs.items():
        single = throughput(cfg, n, 1)
        multi = throughput(cfg, n, args.workers) if args.workers > 1 else single
        out[name] = {"1_process": single, f"{args.workers}_processes": multi}
        print(name, json.dumps(out[name]), flush=True)
    out["write_hdf5_images_per_s_1_process"] = write_rate(configs["default"], max(20, n // 4))
    with contextlib.suppress(OSError):
        out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
