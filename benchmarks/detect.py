"""Detector speed on a CPU: inference frames/s on 512² images and the time to train the small config.

Measured in one process with ``--threads`` torch threads (default 1; BLAS/OMP pinned to
the same number):

* ``train_small_s`` — wall time of ``simgen train yolo --config small`` (yolov8n from
  yaml, 64² tiles, 2 epochs) on 16 film images of 64² generated here (export included);
* ``fps_512_tiled`` — :class:`simgen.train.yolo.YoloDetector` on 512² frames with the
  full config's tiling (320² tiles, 64 px overlap: 4 tiles per frame, seams merged),
  contrast normalisation included;
* ``fps_512_whole`` — the same model on the whole frame letterboxed to 512 (no tiling);
* ``fps_512_log`` — the tuned-LoG baseline (σ 2-8 px, 6 scales) for comparison;
* ``fps_512_tiled_onnx`` / ``fps_512_whole_onnx`` — the same through ONNX Runtime
  (``runtime="onnx"``: Ultralytics' ONNX export, cached; ``--threads`` intra-op threads),
  ``same_detections_onnx`` the share of torch's detections (conf >= 0.01) that ONNX Runtime
  returns too (box within 0.01 px, score within 1e-4) on the same frames;
* ``fps_track_e2e_<runtime>`` — the tracking pipeline end to end: tiled detection of every
  frame, then ByteTrack over the sequence (frames / total seconds).

Frames are random TEM-like noise with dark discs; speed does not depend on the weights.

Usage:  python benchmarks/detect.py [--quick] [--threads N] [--frames N]
The last line printed is one JSON object of figures.
"""

from __future__ import annotations

import argparse
import os
import sys

_parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
_parser.add_argument("--quick", action="store_true", help="fewer frames (< 1 min)")
_parser.add_argument("--threads", type=int, default=1, help="torch / BLAS threads")
_parser.add_argument("--frames", type=int, default=None, help="frames per speed measurement")
_args = _parser.parse_args()
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS", "SIMGEN_THREADS"):
    os.environ[_var] = str(_args.threads)

import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _frames(n: int, size: int = 512, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    out = []
    for _ in range(n):
        img = 0.6 + 0.05 * rng.standard_normal((size, size))
        for cx, cy, r in zip(rng.uniform(0, size, 60), rng.uniform(0, size, 60), rng.uniform(2, 8, 60)):
            img -= 0.3 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        out.append(np.clip(img, 0, 1).astype(np.float32))
    return out


def _fps(fn, frames) -> float:
    fn(frames[0])  # warm-up (model load, first-call allocations)
    t0 = time.perf_counter()
    for f in frames:
        fn(f)
    return len(frames) / (time.perf_counter() - t0)


def _same_fraction(a, b) -> float:
    """Share of ``a``'s boxes that ``b`` has too (a box within 0.01 px, score within 1e-4)."""
    if not len(a):
        return 1.0 if not len(b) else 0.0
    cols = ["x0", "y0", "x1", "y1"]
    pa, pb = a[cols].to_numpy(np.float64), b[cols].to_numpy(np.float64)
    sa, sb = a["score"].to_numpy(np.float64), b["score"].to_numpy(np.float64)
    if not len(b):
        return 0.0
    d = np.abs(pa[:, None, :] - pb[None, :, :]).max(axis=2)
    nearest = d.argmin(axis=1)
    ok = (d[np.arange(len(pa)), nearest] < 0.01) & (np.abs(sa - sb[nearest]) < 1e-4)
    return float(ok.mean())


def _e2e(detector, frames) -> float:
    """Frames/s of detection + ByteTrack over the whole sequence."""
    import pandas as pd

    from simgen.experiments.track_video import TrackingOptions, link_detections

    t0 = time.perf_counter()
    parts = [detector.detect(f).assign(sample=k) for k, f in enumerate(frames)]
    dets = pd.concat(parts, ignore_index=True)
    link_detections(dets, conf=detector.conf_f1, options=TrackingOptions(tracker="bytetrack"), n_frames=len(frames))
    return len(frames) / (time.perf_counter() - t0)


def main() -> dict:
    from simgen.datasets.generate import write_dataset
    from simgen.errors import ParameterError
    from simgen.runtime import setup_threads
    from simgen.simulate.film import FilmConfig, FilmSampler
    from simgen.train.baselines.log import LogParams, detect_log
    from simgen.train.yolo.config import PRESETS
    from simgen.train.yolo.predict import YoloDetector
    from simgen.train.yolo.trainer import train_yolo

    threads = setup_threads(_args.threads)
    n_frames = _args.frames or (4 if _args.quick else 20)
    with tempfile.TemporaryDirectory(prefix="simgen-bench-detect-") as tmp:
        tmp = Path(tmp)
        cfg = FilmConfig(size=64, n_defects=(2, 5), box_size=12, min_separation=12, single_class=True).validate()
        data = write_dataset(tmp / "film.h5", FilmSampler(cfg, seed=0), 16)
        t0 = time.perf_counter()
        best = train_yolo(data, tmp / "run", config=PRESETS["small"], progress=False, cache_dir=tmp / "cache",
                          threads=threads)
        train_s = time.perf_counter() - t0
        frames = _frames(n_frames)
        tiled = YoloDetector(best, tile=320, overlap=64, threads=threads)
        fps_tiled = _fps(tiled.detect, frames)
        whole = YoloDetector(best, tile=512, overlap=0, threads=threads)
        fps_whole = _fps(whole.detect, frames)
        onnx = {}
        try:
            tiled_onnx = YoloDetector(best, tile=320, overlap=64, threads=threads, runtime="onnx")
        except ParameterError as exc:  # onnx / onnxruntime not installed
            onnx["onnx_skipped"] = str(exc)
        else:
            onnx["fps_512_tiled_onnx"] = round(_fps(tiled_onnx.detect, frames), 2)
            whole_onnx = YoloDetector(best, tile=512, overlap=0, threads=threads, runtime="onnx")
            onnx["fps_512_whole_onnx"] = round(_fps(whole_onnx.detect, frames), 2)
            same = [_same_fraction(tiled.detect(f), tiled_onnx.detect(f)) for f in frames[:2]]
            onnx["same_detections_onnx"] = round(float(np.mean(same)), 4)
            onnx["fps_track_e2e_onnx"] = round(_e2e(tiled_onnx, frames), 2)
        e2e_torch = round(_e2e(tiled, frames), 2)
    params = LogParams(min_sigma=2, max_sigma=8, threshold=0.1)
    fps_log = _fps(lambda f: detect_log(f, params), frames)
    return {
        "benchmark": "detect",
        "threads": threads,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "model": "yolov8n",
        "train_small_s": round(train_s, 1),
        "train_small_config": "yolov8n.yaml, 16 images 64², 64² tiles, 2 epochs, batch 4",
        "fps_512_tiled": round(fps_tiled, 2),
        "tiling": "320² tiles, 64 px overlap (4 per 512² frame)",
        "fps_512_whole": round(fps_whole, 2),
        "fps_512_log": round(fps_log, 2),
        **onnx,
        "fps_track_e2e_torch": e2e_torch,
        "tracker": "bytetrack (Ultralytics), detections at the detector's threshold and above 0.1",
        "frames": n_frames,
        "quick": bool(_args.quick),
    }


if __name__ == "__main__":
    result = main()
    for k, v in result.items():
        print(f"{k:>20}: {v}")
    print(json.dumps(result))
