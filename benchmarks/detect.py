"""Detector speed on a CPU: inference frames/s on 512² images and the time to train the small config.

Measured in one process with ``--threads`` threads (default 1; torch, BLAS/OMP, ONNX Runtime
and OpenVINO pinned to the same number):

* ``train_small_s`` — wall time of ``simgen train yolo --config small`` (yolov8n from
  yaml, 64² tiles, 2 epochs) on 16 film images of 64² generated here (export included);
* ``fps_512_tiled`` — :class:`simgen.train.yolo.YoloDetector` on 512² frames with the
  full config's tiling (320² tiles, 64 px overlap: 4 tiles per frame in one forward call,
  seams merged), contrast normalisation included;
* ``fps_512_whole`` — the same model on the whole frame letterboxed to 512 (no tiling);
* ``fps_512_log`` — the tuned-LoG baseline (σ 2-8 px, 6 scales) for comparison;
* ``fps_512_tiled_<rt>`` / ``fps_512_whole_<rt>`` for every exported runtime ``<rt>`` of
  ``--runtimes`` (``onnx``, ``openvino``, ``openvino_int8``; exported once, ``export_s_<rt>``
  seconds, into a temporary cache), ``speedup_tiled_<rt>`` / ``speedup_whole_<rt>`` their ratio
  to torch.  All runtimes are timed **interleaved** (every frame through each runtime in turn,
  the order rotating), so machine load shifts them alike and the ratios hold under load;
  ``cpu_ms_512_tiled`` / ``cpu_ms_512_whole`` — process CPU milliseconds per frame of each
  runtime (all threads), ``speedup_tiled_cpu_<rt>`` / ``speedup_whole_cpu_<rt>`` the ratios
  of those: on a shared machine wall time includes waiting for a core, CPU time does not;
* ``same_detections_<rt>`` — the share of torch's tiled detections (conf >= 0.01) that the
  runtime returns too (box within 0.01 px, score within 1e-4), over all frames;
  ``f1_int8_vs_fp32`` — F1 of the INT8 detections against OpenVINO fp32's (IoU >= 0.5, both at
  the detector's threshold ``conf_f1``; at conf >= 0.25 in ``f1_int8_vs_fp32_conf025``);
* ``fps_track_e2e_<runtime>`` — the tracking pipeline end to end: tiled detection of every
  frame, then ByteTrack over the sequence (frames / total seconds), ``speedup_e2e_<rt>``;
* ``load_avg`` — the 1-minute load average at the start and the end (other jobs share the CPU).

Frames are random TEM-like noise with dark discs; speed does not depend on the weights.

Usage:  python benchmarks/detect.py [--quick] [--threads N] [--frames N] [--runtimes torch,onnx,...]
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
_parser.add_argument("--runtimes", default="torch,onnx,openvino,openvino-int8",
                     help="comma-separated runtimes to compare with torch (missing packages are skipped)")
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


def _interleaved(detectors: dict, frames) -> tuple[dict, dict, dict, dict]:
    """Frames/s of every detector, timed frame by frame in turn (rotating order).

    Returns frames/s (wall clock), the detections, the wall seconds and the process CPU
    milliseconds per frame (all threads; under load the steadier measure of one thread's work).
    """
    for det in detectors.values():
        det.detect(frames[0])  # warm-up
    names = list(detectors)
    seconds, cpu = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    boxes = {name: [] for name in names}
    for i, f in enumerate(frames):
        for name in names[i % len(names):] + names[: i % len(names)]:
            t0, c0 = time.perf_counter(), time.process_time()
            boxes[name].append(detectors[name].detect(f))
            seconds[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
    return ({name: len(frames) / seconds[name] for name in names}, boxes, seconds,
            {name: 1000 * cpu[name] / len(frames) for name in names})


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


def _link_seconds(boxes, conf: float) -> float:
    """Seconds to stack per-frame detections and link them with ByteTrack (the tracking half of the pipeline)."""
    import pandas as pd

    from simgen.experiments.track_video import TrackingOptions, link_detections

    t0 = time.perf_counter()
    dets = pd.concat([b.assign(sample=k) for k, b in enumerate(boxes)], ignore_index=True)
    link_detections(dets, conf=conf, options=TrackingOptions(tracker="bytetrack"), n_frames=len(boxes))
    return time.perf_counter() - t0


def _f1(pred, ref, conf: float) -> float:
    """F1 of ``pred`` against ``ref`` (lists of per-frame boxes), both cut at ``conf``, IoU >= 0.5."""
    import pandas as pd

    from simgen.evaluate.detection import detection_counts

    def table(parts):
        return pd.concat([b.assign(sample=k) for k, b in enumerate(parts)], ignore_index=True)

    p, r = table(pred), table(ref)
    r = r[r["score"] >= conf]
    if not len(r) and not (p["score"] >= conf).any():
        return 1.0
    return round(float(detection_counts(p, r, conf=conf, metric="iou", threshold=0.5)["f1"]), 4)


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
    load0 = os.getloadavg()[0]
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
        os.environ["SIMGEN_CACHE_DIR"] = str(tmp / "cache")  # exports of this throwaway checkpoint
        tiled, whole, out = {}, {}, {}
        for rt in ["torch"] + [r for r in _args.runtimes.split(",") if r and r != "torch"]:
            key = rt.replace("-", "_")
            try:
                t0 = time.perf_counter()
                tiled[key] = YoloDetector(best, tile=320, overlap=64, threads=threads, runtime=rt)
                if rt != "torch":
                    out[f"export_s_{key}"] = round(time.perf_counter() - t0, 1)
                whole[key] = YoloDetector(best, tile=512, overlap=0, threads=threads, runtime=rt)
            except ParameterError as exc:  # the runtime's packages are not installed
                tiled.pop(key, None)
                out[f"{key}_skipped"] = str(exc)
        fps_tiled, boxes, det_s, cpu_tiled = _interleaved(tiled, frames)
        fps_whole, _, _, cpu_whole = _interleaved(whole, frames)
        out["cpu_ms_512_tiled"] = {k: round(v, 1) for k, v in cpu_tiled.items()}
        out["cpu_ms_512_whole"] = {k: round(v, 1) for k, v in cpu_whole.items()}
        conf = tiled["torch"].conf_f1
        e2e = {k: len(frames) / (det_s[k] + _link_seconds(boxes[k], conf)) for k in tiled}
        for k in tiled:
            if k == "torch":
                continue
            out[f"fps_512_tiled_{k}"] = round(fps_tiled[k], 2)
            out[f"fps_512_whole_{k}"] = round(fps_whole[k], 2)
            out[f"speedup_tiled_{k}"] = round(fps_tiled[k] / fps_tiled["torch"], 2)
            out[f"speedup_whole_{k}"] = round(fps_whole[k] / fps_whole["torch"], 2)
            out[f"speedup_tiled_cpu_{k}"] = round(cpu_tiled["torch"] / cpu_tiled[k], 2)
            out[f"speedup_whole_cpu_{k}"] = round(cpu_whole["torch"] / cpu_whole[k], 2)
            same = [_same_fraction(a, b) for a, b in zip(boxes["torch"], boxes[k])]
            out[f"same_detections_{k}"] = round(float(np.mean(same)), 4)
            out[f"fps_track_e2e_{k}"] = round(e2e[k], 2)
            out[f"speedup_e2e_{k}"] = round(e2e[k] / e2e["torch"], 2)
        if "openvino_int8" in boxes and "openvino" in boxes:
            out["f1_int8_vs_fp32"] = _f1(boxes["openvino_int8"], boxes["openvino"], conf)
            out["f1_int8_vs_fp32_conf025"] = _f1(boxes["openvino_int8"], boxes["openvino"], 0.25)
            out["conf_f1"] = round(float(conf), 4)
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
        "fps_512_tiled": round(fps_tiled["torch"], 2),
        "tiling": "320² tiles, 64 px overlap (4 per 512² frame)",
        "fps_512_whole": round(fps_whole["torch"], 2),
        "fps_512_log": round(fps_log, 2),
        **out,
        "fps_track_e2e_torch": round(e2e["torch"], 2),
        "tracker": "bytetrack (Ultralytics), detections at the detector's threshold and above 0.1",
        "frames": n_frames,
        "quick": bool(_args.quick),
        "load_avg": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


if __name__ == "__main__":
    result = main()
    for k, v in result.items():
        print(f"{k:>20}: {v}")
    print(json.dumps(result))
