"""Throughput of the simgen augmentation pipeline vs albumentations on 512x512 images.

Both run in the same process on the same float32 (H, W) images with one thread: the
OMP/MKL/OpenBLAS/Numba env vars are set to 1 before numpy is imported, and
``cv2.setNumThreads(1)`` pins OpenCV's pool (albumentations runs on OpenCV; simgen's blur
uses ``cv2.GaussianBlur``, which runs on the calling thread anyway).  On a shared machine
absolute times are noisy, so the chains are measured **interleaved**: every round times
one batch of each chain back to back (the order alternates between rounds), the ratio
is taken per round, and the figures are medians over rounds (the per-round ratio range
is reported too):

* ``equivalent`` — the operations albumentations has: Gaussian blur (sigma 0.4-2.5),
  brightness/contrast (gain ±0.4, offset ±0.15) and Gaussian noise (sigma 0.01-0.12):
  simgen ``GB+RV+GN`` vs ``A.Compose([GaussianBlur, RandomBrightnessContrast, GaussNoise])``.
* ``full`` — simgen's domain-matching pipeline ``image+ST`` (islands, RB, GB, RV, FN,
  standardization) vs the same albumentations compose (the closest it has).
* per-code timings of every simgen image-level code, and the slow reference paths the
  fast ones replaced (SciPy blur, numpy's exact Poisson sampler on every pixel).

The JSON also records the machine (CPU model, cores), the load average before and after
(``os.getloadavg``) and the thread settings.

With ``--realism`` it instead measures, per real data set in ``../shared/realdata/dev``,
the realism distances (power spectrum, intensity histogram; see
:mod:`simgen.augment.realism`) of simulated TEM images to the real ones, raw and after
the pre-registered specs ``L-image`` and ``image`` (FN RV RB GB islands), same seeds, for
two bases: the dataset's preset as fitted (with its own camera model) and the same scenes
rendered clean (dose, blur and read noise off).

Usage:  python benchmarks/augment.py [--quick] [--size 512] [--rounds N]
        python benchmarks/augment.py --realism [--quick] [--n 16] [--realdata DIR]
The last line printed is one JSON object of figures.
"""

from __future__ import annotations

import os

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
for _var in _THREAD_VARS:
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def _albumentations():
    import warnings

    warnings.filterwarnings("ignore")
    import albumentations as A
    import cv2

    cv2.setNumThreads(1)  # one thread, like simgen (and the OMP/BLAS env vars above)
    compose = A.Compose(
        [
            A.GaussianBlur(blur_limit=0, sigma_limit=(0.4, 2.5), p=1.0),
            A.RandomBrightnessContrast(brightness_limit=(-0.15, 0.15), contrast_limit=(-0.4, 0.4), p=1.0),
            A.GaussNoise(std_range=(0.01, 0.12), p=1.0),
        ],
        seed=0,
    )
    return A.__version__, cv2.__version__, lambda img: compose(image=img)["image"]


def _cv2_threads():
    try:
        import cv2
    except ImportError:
        return None
    return cv2.getNumThreads()


def _loadavg():
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "system": platform.system(), "arch": platform.machine()}


def _reference_paths(images, repeats: int) -> dict:
    """ms per image of the paths the fast kernels replaced, next to the fast ones (same run)."""
    from scipy import ndimage

    from simgen.augment.fast import gaussian_blur, poisson_counts

    g = np.random.default_rng(3)
    dose = np.float32(100.0)
    paths = {
        "GB_sigma1.5_fast": lambda im: gaussian_blur(im, 1.5),
        "GB_sigma1.5_scipy": lambda im: ndimage.gaussian_filter(im, 1.5, mode="reflect", truncate=3.5),
        "PN_dose100_fast": lambda im: poisson_counts(im * dose, g),
        "PN_dose100_exact": lambda im: g.poisson(im.astype(np.float64) * 100.0),
    }
    return {k: round(1e3 * float(np.median([_time_batch(fn, images) for _ in range(repeats)])), 3)
            for k, fn in paths.items()}


def _bind(pipeline, rng):
    """``image -> pipeline(image, rng)`` with both bound now (not late, as a loop's lambda would)."""
    return lambda image: pipeline(image, rng)


def _time_batch(fn, images) -> float:
    t0 = time.perf_counter()
    for img in images:
        fn(img)
    return (time.perf_counter() - t0) / len(images)


REALISM_SPECS = ("none", "L-image", "image")


def realism(realdata, n: int, max_side: int = 1024, seed: int = 0) -> dict:
    """Distances of TEM simulations (raw and augmented) to each real data set."""
    from collections import Counter
    from pathlib import Path

    from simgen.augment import Pipeline
    from simgen.augment.pipeline import TAG_AUGMENT
    from simgen.augment.realism import ImageSetStats, realism_distance
    from simgen.datasets.augment_io import iter_images
    from simgen.rng import sample_rng
    from simgen.simulate import tem

    out = {}
    for folder in sorted(p for p in Path(realdata).iterdir() if (p / "images").is_dir()):
        real = list(iter_images(folder))
        real_stats = ImageSetStats().extend(real)
        shape = Counter(im.shape for im in real).most_common(1)[0][0]
        shape = tuple(min(s, max_side) for s in shape)
        preset = folder.name.split("_")[0]
        try:
            config = tem.TemConfig.from_preset(preset, size=shape)
            used = preset
        except Exception:  # noqa: BLE001 - presets are optional
            config, used = tem.TemConfig(size=shape), "defaults"
        # Two bases: the preset as fitted (its own camera model: dose, blur, read noise) and
        # the same scenes rendered "clean" (camera off), which is what the augment pipeline
        # is meant to turn into camera images.
        bases = {"preset": config, "clean": config.replace(dose=(0.0, 0.0), blur=(0.0, 0.0), read_noise=(0.0, 0.0))}
        rows = {}
        for base, cfg in bases.items():
            sampler = tem.TemSampler(cfg, seed=seed)
            sims = [sampler(i)["image"] for i in range(n)]
            for spec in REALISM_SPECS:
                pipe = Pipeline(spec)
                stats = ImageSetStats()
                for i, img in enumerate(sims):
                    stats.add(pipe.apply(img, Pipeline.new_key(sample_rng(seed, i, TAG_AUGMENT)))[0])
                d = realism_distance(stats, real_stats)
                rows[f"{base}:{spec}"] = {"psd": round(d.psd, 4), "histogram": round(d.histogram, 4)}
        out[folder.name] = {"n_real": len(real), "n_sim": n, "sim_shape": list(shape), "tem_preset": used,
                            "distances": rows}
        for k, v in rows.items():
            print(f"{folder.name:<14} {k:<16} psd {v['psd']:.3f}  hist {v['histogram']:.4f}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (< 1 min)")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--realism", action="store_true", help="TEM realism distances instead of throughput")
    ap.add_argument("--n", type=int, default=None, help="--realism: simulated images per data set (default 16)")
    ap.add_argument("--realdata", default=None, help="--realism: folder of real data sets (default ../shared/realdata/dev)")
    args = ap.parse_args(argv)
    if args.realism:
        from pathlib import Path

        realdata = args.realdata or Path(__file__).resolve().parents[2] / "shared" / "realdata" / "dev"
        n = args.n or (4 if args.quick else 16)
        figures = {"benchmark": "augment-realism", "threads": 1, "specs": list(REALISM_SPECS),
                   "datasets": realism(realdata, n)}
        print(json.dumps(figures))
        return 0
    rounds = args.rounds or (15 if args.quick else 50)
    load_before = _loadavg()

    from simgen.augment import Pipeline
    from simgen.augment.fast import have_opencv
    from simgen.simulate.film import FilmConfig, simulate_film

    rng = np.random.default_rng(0)
    cfg = FilmConfig(size=args.size, n_defects=(4, 12))
    images = [simulate_film(rng, cfg).image for _ in range(args.batch)]
    albu_version, cv2_version, albu = _albumentations()
    ours = {
        "equivalent": Pipeline("GB+RV+GN"),
        "full": Pipeline("image+ST"),
    }
    calls = {name: _bind(p, np.random.default_rng(1)) for name, p in ours.items()}
    calls["albumentations"] = albu
    for fn in calls.values():  # warm-up (caches, imports)
        fn(images[0])
    times: dict[str, list[float]] = {k: [] for k in calls}
    order = list(calls)
    for r in range(rounds):  # interleaved: one batch of each chain per round, alternating order
        for name in order if r % 2 == 0 else order[::-1]:
            times[name].append(_time_batch(calls[name], images))
    med = {k: float(np.median(v)) for k, v in times.items()}
    albu_t = np.asarray(times["albumentations"])
    ratios = {name: albu_t / np.asarray(times[name]) for name in ours}

    per_code = {}
    for code in ("islands", "RB", "GB", "PN", "RV", "FN", "GN", "SP", "JP", "ST"):
        p = Pipeline(code)
        r = np.random.default_rng(2)
        p(images[0], r)
        per_code[code] = round(1e3 * float(np.median([_time_batch(_bind(p, r), images[:4])
                                                      for _ in range(max(2, rounds // 5))])), 3)
    reference = _reference_paths(images[:4], max(2, rounds // 5))

    figures = {
        "benchmark": "augment",
        "image_size": args.size,
        "rounds": rounds,
        "batch": args.batch,
        "machine": _machine(),
        "threads": {"process": 1, "env": {v: os.environ[v] for v in _THREAD_VARS},
                    "cv2_num_threads": _cv2_threads(), "simgen_blur": "opencv" if have_opencv() else "scipy"},
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
        "albumentations_version": albu_version,
        "opencv_version": cv2_version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "images_per_s": {k: round(1.0 / v, 1) for k, v in med.items()},
        "ms_per_image": {k: round(1e3 * v, 3) for k, v in med.items()},
        "ratio_equivalent_vs_albumentations": round(float(np.median(ratios["equivalent"])), 3),
        "ratio_full_vs_albumentations": round(float(np.median(ratios["full"])), 3),
        "ratio_range_per_round": {k: [round(float(v.min()), 3), round(float(v.max()), 3)] for k, v in ratios.items()},
        "ms_per_code": per_code,
        "ms_reference_paths": reference,
    }
    print(f"simgen GB+RV+GN     : {figures['images_per_s']['equivalent']:8.1f} img/s")
    print(f"simgen image+ST     : {figures['images_per_s']['full']:8.1f} img/s")
    print(f"albumentations (3)  : {figures['images_per_s']['albumentations']:8.1f} img/s")
    print(f"ratio (median of {rounds} interleaved rounds): equivalent "
          f"{figures['ratio_equivalent_vs_albumentations']:.2f}x, full {figures['ratio_full_vs_albumentations']:.2f}x "
          f"(load {load_before} -> {figures['loadavg_after']})")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
