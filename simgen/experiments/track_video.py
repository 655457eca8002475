"""Detect defects in every frame of a video, link them into tracks and score against the truth.

:func:`track_video` (``simgen track-video``) runs three steps, each a plain function:

1. **detect** (:func:`detect_video`) — the detector (YOLO ``best.pt`` or LoG parameters) on
   every frame → ``detections.h5``;
2. **link** (:func:`link_tracks`) — trackpy links the detections → ``tracks.csv``;
3. **score** (:func:`score_tracks`, when the video has true tracks) — the evaluation suite
   (MOTA, IDF1, MT, ID switches, lifetimes) → ``report/``;

and returns a :class:`TrackVideoResult` (also ``summary.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.atomic import atomic_write_text
from simgen.datasets.h5io import open_dataset
from simgen.datasets.sources import open_source
from simgen.errors import ParameterError
from simgen.evaluate.report import evaluate, link_tracks_file, to_jsonable
from simgen.experiments.common import ExperimentResult, check_experiment_dir
from simgen.train.baselines.log import load_params, predict_log
from simgen.train.yolo.predict import YoloDetector, predict_yolo

__all__ = ["VideoDetections", "TrackVideoResult", "detect_video", "link_tracks", "score_tracks", "track_video"]


@dataclass
class VideoDetections:
    """Detections of every frame: the file, the detector's own threshold and class names (``None``: LoG)."""

    path: Path
    conf: float
    fps: float
    class_names: list[str] | None


@dataclass
class TrackVideoResult(ExperimentResult):
    """What :func:`track_video` measured; :meth:`to_dict` is ``summary.json``.

    ``fps`` is the detector's frames per second (tiling included); ``detection`` and
    ``tracking`` (MOT summary) are set when the video has true tracks.
    """

    weights: Path
    video: Path
    output: Path
    n_frames: int
    fps: float
    n_tracks: int
    conf: float
    search_range: float
    memory: int
    class_agnostic: bool | None = None
    mot_iou: float | None = None
    detection: dict | None = None
    tracking: dict | None = None

    def to_dict(self) -> dict:
        out = {"n_frames": self.n_frames, "fps": self.fps, "n_tracks": self.n_tracks, "conf": self.conf,
               "search_range": self.search_range, "memory": self.memory, "weights": str(self.weights),
               "video": str(self.video)}
        if self.detection is not None:
            out.update(class_agnostic=self.class_agnostic, mot_iou=self.mot_iou, detection=self.detection)
        if self.tracking is not None:
            out["tracking"] = self.tracking
        return out


# -- steps ------------------------------------------------------------------------------------------
def detect_video(weights, video, output, *, device: str = "auto", threads: int | None = None,
                 progress: bool = True) -> VideoDetections:
    """Run the detector on every frame of ``video``; writes ``output`` (an HDF5 predictions file).

    ``weights``: a YOLO ``best.pt`` or a LoG parameter ``.json`` (``simgen baseline log tune``).
    """
    output = Path(output)
    if Path(weights).suffix.lower() == ".json":
        params = load_params(weights)
        predict_log(video, output, params, overwrite=True, progress=progress)
        conf, classes = params.threshold, None  # LoG finds blobs of one kind, whatever the file calls class 0
    else:
        det = YoloDetector(weights, device=device, threads=threads)
        predict_yolo(weights, video, output, overwrite=True, progress=progress, detector=det)
        conf, classes = det.conf_f1, list(det.class_names)
    with open_dataset(output) as ds:
        fps = float(ds.attrs.get("fps", float("nan")))
    return VideoDetections(output, float(conf), fps, classes)


def link_tracks(detections: VideoDetections, output, *, conf: float | None = None, search_range: float = 5.0,
                memory: int = 2) -> pd.DataFrame:
    """Link the detections with trackpy (``conf`` default: the detector's threshold); writes ``output`` (CSV)."""
    conf = detections.conf if conf is None else float(conf)
    return link_tracks_file(detections.path, output, search_range=search_range, memory=memory, conf=conf, overwrite=True)


def score_tracks(detections: VideoDetections, video, report_dir, *, conf: float | None = None,
                 search_range: float = 5.0, memory: int = 2, class_agnostic: bool = False,
                 mot_iou: float = 0.5) -> dict:
    """Detection and tracking metrics against the video's true tracks (report folder ``report_dir``)."""
    conf = detections.conf if conf is None else float(conf)
    return evaluate(detections.path, video, report_dir, conf=conf, tracking=True, search_range=search_range,
                    memory=memory, class_agnostic=class_agnostic, mot_iou=mot_iou, overwrite=True)


# -- the driver -------------------------------------------------------------------------------------
def track_video(weights, video, output, *, conf: float | None = None, search_range: float = 5.0, memory: int = 2,
                class_agnostic: bool | None = None, mot_iou: float = 0.5, device: str = "auto",
                threads: int | None = None, overwrite: bool = False, progress: bool = True) -> TrackVideoResult:
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
    TrackVideoResult
    """
    out = check_experiment_dir(output, overwrite=overwrite)
    if not (np.isfinite(search_range) and search_range > 0):
        raise ParameterError(f"search range must be > 0 pixels, got {search_range}")
    if int(memory) != memory or memory < 0:
        raise ParameterError(f"memory must be a non-negative integer, got {memory}")
    with open_source(video) as src:
        n_frames, has_truth, video_classes = len(src), "tracks" in src.tables, src.class_names
    out.mkdir(parents=True, exist_ok=True)
    # TODO(sources): the detectors and the evaluator re-open the video; pass one open Source once they take it.
    dets = detect_video(weights, video, out / "detections.h5", device=device, threads=threads, progress=progress)
    conf = dets.conf if conf is None else float(conf)
    tracks = link_tracks(dets, out / "tracks.csv", conf=conf, search_range=search_range, memory=memory)
    result = TrackVideoResult(Path(weights), Path(video), out, n_frames, dets.fps,
                              int(tracks["track_id"].nunique()) if len(tracks) else 0, conf, search_range, memory)
    if has_truth:
        if class_agnostic is None:
            class_agnostic = dets.class_names != list(video_classes)
        rep = score_tracks(dets, video, out / "report", conf=conf, search_range=search_range, memory=memory,
                           class_agnostic=class_agnostic, mot_iou=mot_iou)
        result.class_agnostic = bool(class_agnostic)
        result.mot_iou = float(mot_iou)
        result.detection = {k: rep["detection"].get(k) for k in ("precision", "recall", "f1", "mAP", "peak_f1")}
        result.tracking = rep.get("tracking")
    atomic_write_text(out / "summary.json", json.dumps(to_jsonable(result.to_dict()), indent=2) + "\n",
                      overwrite=True)
    return result
