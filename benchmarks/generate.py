"""End-to-end film generation speed: annotated 512² images per second written to HDF5.

Measures :func:`simgen.datasets.generate.write_dataset` with the random-defect model
(default parameters, 2–12 defects, uint8 images, gzip-1, points + boxes tables) for the
numpy and numba backends, in one process (one thread) and in two processes writing two
halves of the index range to two files (the way shards split work; the images are the
same as one serial run).  Figures are wall-clock images/s of the whole run, best of a few
repeats; the load average is printed because the machine may be shared.

Usage: ``python benchmarks/generate.py [--quick]``; the last line is one JSON object.
"""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402


def _write(args) -> float:
    path, backend, size, start, n = args
    from simgen.datasets.generate import write_dataset
    from simgen.simulate.film import FilmConfig, FilmSampler

    sampler = FilmSampler(FilmConfig(size=size, backend=backend), seed=0)
    sampler(0)  # compile numba kernels / warm caches outside the timed region
    t = time.perf_counter()
    write_dataset(path, sampler, n, start=start, overwrite=True)
    return time.perf_counter() - t


def measure(backend: str, size: int, n: int, processes: int, repeats: int, tmp: Path) -> float:
    """Best images/s of writing ``n`` images with ``processes`` processes."""
    per = n // processes
    jobs = [(tmp / f"{backend}-{processes}-{k}.h5", backend, size, k * per, per) for k in range(processes)]
    best = 0.0
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_write, [(j[0], j[1], j[2], j[3], 2) for j in jobs]))  # warm up each worker
        for _ in range(repeats):
            t = time.perf_counter()
            list(pool.map(_write, jobs))
            best = max(best, per * processes / (time.perf_counter() - t))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images (< 1 minute)")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    n, repeats = (100, 2) if args.quick else (400, 3)
    print(f"load average at start: {os.getloadavg()}")
    figures: dict[str, float] = {"size": args.size, "images_per_run": n}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("numpy", "numba"):
            for procs in (1, 2):
                rate = measure(backend, args.size, n, procs, repeats, Path(tmp))
                figures[f"{backend}_{procs}proc_images_per_s"] = round(rate, 1)
                print(f"{backend:>6}, {procs} process(es): {rate:7.1f} images/s ({args.size}², random model, into HDF5)")
    figures["numba_2proc_vs_1proc"] = round(figures["numba_2proc_images_per_s"] / figures["numba_1proc_images_per_s"], 2)
    figures["numba_vs_numpy_1proc"] = round(figures["numba_1proc_images_per_s"] / figures["numpy_1proc_images_per_s"], 2)
    figures["target_images_per_s_2cores"] = 100
    print(f"load average at end: {os.getloadavg()}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
