"""Detect defects in every frame of a video, link them into tracks and score against the truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from simgen.atomic import atomic_write_text
from simgen.datasets.h5io import open_dataset
from simgen.datasets.sources import open_source
from simgen.errors import ParameterError
from simgen.evaluate.report import evaluate, to_jsonable, track
from simgen.train.yolo.predict import YoloDetector, predict_yolo

__all__ = [
    "track_video",
]


# -- video ------------------------------------------------------------------------------------------
def track_video(weights, video, output, *, conf: float | None = None, search_range: float = 5.0, memory: int = 2,
                class_agnostic: bool | None = None, mot_iou: float = 0.5, device: str = "auto",
                threads: int | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Detect defects in every frame of a video, link them with trackpy and score against true tracks.

    Parameters
    ----------
    weights : path
        YOLO ``best.pt`` (or a LoG parameter ``.json`` from ``simgen baseline log tune``).
    video : path
        HDF5 video (frames = samples; a ``tracks`` table is the ground truth) or a folder
        of frames sorted by name.
    output : path
        Folder receiving ``detections.h5`` (boxes + score per frame, ``fps`` attribute),
        ``tracks.csv`` (linked detections), ``summary.json`` and, when the video has true
        tracks, ``report/`` from :func:`simgen.evaluate.report.evaluate` (MOTA, IDF1, MT,
        IDSW, lifetime χ² and KS, plots).
    conf : float, optional
        Confidence threshold for linking and scoring (default: the detector's F1-optimal
        threshold picked on its validation data).
    class_agnostic : bool, optional
        Ignore classes when scoring.  Default: only when the detector's class names differ
        from the video's (a one-class "loop" detector on a video labelled dot/⟨111⟩/⟨100⟩
        would otherwise be scored against the first class only); always for LoG, which has
        no classes.
    mot_iou : float
        IoU threshold of the MOT metrics (MOTChallenge uses 0.5; small defects may want
        the detection cut-off, 0.15).

    Returns
    -------
    dict with ``n_frames``, ``fps`` (detector frames per second, tiling included),
    ``n_tracks``, ``conf`` and ``tracking`` (MOT summary) when scored.
    """

    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"output {out} is a file; give a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ParameterError(f"output {out} exists; pass --overwrite to replace it")
    if not (np.isfinite(search_range) and search_range > 0):
        raise ParameterError(f"search range must be > 0 pixels, got {search_range}")
    if int(memory) != memory or memory < 0:
        raise ParameterError(f"memory must be a non-negative integer, got {memory}")
    with open_source(video) as src:
        n_frames = len(src)
        has_truth = src._ds is not None and "tracks" in src._ds.tables
    out.mkdir(parents=True, exist_ok=True)
    det_path = out / "detections.h5"
    if Path(weights).suffix.lower() == ".json":
        from simgen.train.baselines.log import load_params, predict_log

        params = load_params(weights)
        predict_log(video, det_path, params, overwrite=True, progress=progress)
        conf_default = params.threshold
        detector_classes = None  # LoG finds blobs of one kind, whatever the file calls class 0
    else:
        det = YoloDetector(weights, device=device, threads=threads)
        predict_yolo(weights, video, det_path, overwrite=True, progress=progress, detector=det)
        conf_default = det.conf_f1
        detector_classes = list(det.class_names)
    conf = float(conf_default if conf is None else conf)

    with open_dataset(det_path) as ds:
        fps = float(ds.attrs.get("fps", float("nan")))
    tracks = track(det_path, out / "tracks.csv", search_range=search_range, memory=memory, conf=conf, overwrite=True)
    result = {"n_frames": n_frames, "fps": fps, "n_tracks": int(tracks["track_id"].nunique()) if len(tracks) else 0,
              "conf": conf, "search_range": search_range, "memory": memory, "weights": str(weights),
              "video": str(video)}
    if has_truth:
        if class_agnostic is None:
            with open_source(video) as src:
                class_agnostic = detector_classes != list(src.class_names)
        rep = evaluate(det_path, video, out / "report", conf=conf, tracking=True, search_range=search_range,
                       memory=memory, class_agnostic=class_agnostic, mot_iou=mot_iou, overwrite=True)
        result["class_agnostic"] = bool(class_agnostic)
        result["mot_iou"] = float(mot_iou)
        result["detection"] = {k: rep["detection"].get(k) for k in ("precision", "recall", "f1", "mAP", "peak_f1")}
        if "tracking" in rep:
            result["tracking"] = rep["tracking"]
    atomic_write_text(out / "summary.json", json.dumps(to_jsonable(result), indent=2) + "\n", overwrite=True)
    return result

