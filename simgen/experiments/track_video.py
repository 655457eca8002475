"""Detect defects in every frame of a video, link them into tracks and score against the truth.

:func:`track_video` (``simgen track-video``) runs three steps, each a plain function:

1. **detect** (:func:`detect_video`) — the detector (YOLO ``best.pt`` or LoG parameters) on
   every frame → ``detections.h5``;
2. **link** (:func:`link_tracks`) — a tracker links the detections → ``tracks.csv`` (and
   ``tracks.h5``: every detection plus the tracks, for scoring).  The tracker is trackpy
   (Crocker-Grier nearest-neighbour linking with ``memory`` frames of gap closing) or
   Ultralytics' ByteTrack / BoT-SORT (IoU + Kalman filter, low-score detections continue
   tracks, lost tracks kept ``track_buffer`` frames); optionally the stage drift is estimated
   (``trackpy.compute_drift``) and subtracted before linking, and short tracks are dropped
   (:class:`TrackingOptions`, :func:`link_detections`);
3. **score** (:func:`score_tracks`, when the video has true tracks) — the evaluation suite
   (MOTA, IDF1, MT, ID switches, lifetimes) → ``report/``;

and returns a :class:`TrackVideoResult` (also ``summary.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.atomic import atomic_write_text
from simgen.datasets.h5io import DatasetWriter, open_dataset
from simgen.datasets.sources import open_source
from simgen.errors import ParameterError
from simgen.evaluate import tracking as trk
from simgen.evaluate.report import evaluate, to_jsonable
from simgen.experiments.common import ExperimentResult, check_experiment_dir
from simgen.train.baselines.log import load_params, predict_log
from simgen.train.fusion import is_fusion_file, load_fusion, predict_fused
from simgen.train.yolo.box_scale import BOX_SCALE_MODES, apply_box_scale, stored_box_scale
from simgen.train.yolo.exported import require_runtime
from simgen.train.yolo.predict import YoloDetector, predict_yolo, read_predictions
from simgen.train.yolo.track import TRACKERS as ULTRALYTICS_TRACKERS
from simgen.train.yolo.track import TrackerSettings, track_boxes

__all__ = ["TRACKERS", "TrackingOptions", "VideoDetections", "TrackVideoResult", "check_runtime", "detect_video",
           "link_detections", "link_tracks", "score_tracks", "track_video"]

#: Trackers of ``simgen track-video --tracker``.
TRACKERS = ("trackpy", *ULTRALYTICS_TRACKERS)


@dataclass(frozen=True)
class TrackingOptions:
    """How detections become tracks (every tracker; each reads its own settings).

    Attributes
    ----------
    tracker : {"trackpy", "bytetrack", "botsort"}
    search_range : float
        trackpy: largest step of a defect between linked frames (px); also the linking used to
        estimate the drift.
    memory : int
        trackpy: frames a defect may vanish and keep its id (gap closing).
    min_length : int
        Tracks detected in fewer frames are dropped (1: keep all).
    drift : bool
        Estimate the stage drift from the linked detections (``trackpy.compute_drift``) and
        subtract it before linking; the tracks keep image coordinates.
    drift_smoothing : int
        Rolling mean of the drift over this many frames (0: none).
    track_high_thresh, new_track_thresh : float, optional
        ByteTrack/BoT-SORT first-association and new-track score thresholds (default: the
        linking confidence ``conf``).
    track_low_thresh : float
        ByteTrack/BoT-SORT: detections between this and ``track_high_thresh`` may continue a
        track (capped at ``track_high_thresh``).
    track_buffer : int
        ByteTrack/BoT-SORT: frames a lost track is kept and may be re-found (gap closing).
    match_thresh : float
        ByteTrack/BoT-SORT: largest association cost (1 - IoU, score-fused).
    fuse_score : bool
        ByteTrack/BoT-SORT: fuse detection scores into the first association cost.
    """

    tracker: str = "trackpy"
    search_range: float = 5.0
    memory: int = 2
    min_length: int = 1
    drift: bool = False
    drift_smoothing: int = 0
    track_high_thresh: float | None = None
    track_low_thresh: float = 0.1
    new_track_thresh: float | None = None
    track_buffer: int = 30
    match_thresh: float = 0.8
    fuse_score: bool = True

    def replace(self, **changes) -> TrackingOptions:
        return replace(self, **changes).validate()

    def validate(self) -> TrackingOptions:
        """Check every value (raise :class:`ParameterError`); Ultralytics settings via :meth:`settings`."""
        if self.tracker not in TRACKERS:
            raise ParameterError(f"tracker must be one of {', '.join(TRACKERS)}, got {self.tracker!r}")
        if not (np.isfinite(self.search_range) and self.search_range > 0):
            raise ParameterError(f"search range must be > 0 pixels, got {self.search_range}")
        for name in ("memory", "drift_smoothing"):
            v = getattr(self, name)
            if int(v) != v or v < 0:
                raise ParameterError(f"{name.replace('_', ' ')} must be a non-negative integer, got {v}")
        if int(self.min_length) != self.min_length or self.min_length < 1:
            raise ParameterError(f"minimum track length must be an integer >= 1, got {self.min_length}")
        self.settings(0.25)  # checks the ByteTrack / BoT-SORT values
        return self

    def settings(self, conf: float) -> TrackerSettings:
        """ByteTrack / BoT-SORT settings, thresholds left unset taken from ``conf``."""
        high = float(conf) if self.track_high_thresh is None else float(self.track_high_thresh)
        new = high if self.new_track_thresh is None else float(self.new_track_thresh)
        return TrackerSettings(track_high_thresh=high, track_low_thresh=min(float(self.track_low_thresh), high),
                               new_track_thresh=new, track_buffer=int(self.track_buffer),
                               match_thresh=float(self.match_thresh), fuse_score=bool(self.fuse_score)).validate()

    def to_dict(self, conf: float | None = None) -> dict:
        """The options a run used (the tracker's own keys only)."""
        out = {"tracker": self.tracker, "min_length": int(self.min_length), "drift": bool(self.drift)}
        if self.drift:
            out["drift_smoothing"] = int(self.drift_smoothing)
        if self.tracker == "trackpy" or self.drift:
            out.update(search_range=float(self.search_range), memory=int(self.memory))
        if self.tracker != "trackpy":
            settings = self.settings(0.25 if conf is None else conf).to_dict()
            out.update({k: settings[k] for k in ("track_high_thresh", "track_low_thresh", "new_track_thresh",
                                                 "track_buffer", "match_thresh", "fuse_score")})
        return out


@dataclass
class VideoDetections:
    """Detections of every frame: the file, the detector's own threshold and class names (``None``: LoG, fusion).

    ``box_scale``: the ``(width, height)`` factors of a calibrated checkpoint, applied to the boxes
    *after* linking (the file holds the raw boxes), or ``None``.
    """

    path: Path
    conf: float
    fps: float
    class_names: list[str] | None
    box_scale: tuple[float, float] | None = None


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
    options: TrackingOptions
    class_agnostic: bool | None = None
    mot_iou: float | None = None
    detection: dict | None = None
    tracking: dict | None = None

    @property
    def search_range(self) -> float:
        return self.options.search_range

    @property
    def memory(self) -> int:
        return self.options.memory

    def to_dict(self) -> dict:
        out = {"n_frames": self.n_frames, "fps": self.fps, "n_tracks": self.n_tracks, "conf": self.conf,
               "search_range": self.search_range, "memory": self.memory, **self.options.to_dict(self.conf),
               "weights": str(self.weights), "video": str(self.video)}
        if self.detection is not None:
            out.update(class_agnostic=self.class_agnostic, mot_iou=self.mot_iou, detection=self.detection)
        if self.tracking is not None:
            out["tracking"] = self.tracking
        return out


def check_runtime(runtime: str, weights) -> None:
    """Refuse an unknown inference runtime, or an exported one without its packages, before any work (LoG needs none)."""
    require_runtime(runtime, packages=Path(weights).suffix.lower() != ".json")


# -- steps ------------------------------------------------------------------------------------------
def detect_video(weights, video, output, *, device: str = "auto", threads: int | None = None,
                 runtime: str = "torch", box_scale: str = "auto", progress: bool = True) -> VideoDetections:
    """Run the detector on every frame of ``video``; writes ``output`` (an HDF5 predictions file).

    ``weights``: a YOLO ``best.pt``, a LoG parameter ``.json`` (``simgen baseline log tune``) or a
    fused detector's ``fusion.json`` (``simgen sim2real --fuse-log``; its YOLO member runs on torch);
    ``runtime``: ``torch``, ``onnx``, ``openvino`` or ``openvino-int8`` (YOLO through an exported model); ``box_scale``: ``auto``
    passes on the box factors a calibrated checkpoint stores (``simgen train box-scale``) in
    :attr:`VideoDetections.box_scale`, ``off`` ignores them (LoG: no effect).  ``output`` holds the
    raw boxes either way: trackers associate by box overlap, which tight boxes lower (measured in
    the README), so :func:`link_tracks` links the raw boxes and rescales the linked ones.
    """
    output = Path(output)
    if is_fusion_file(weights):
        fused = load_fusion(weights)
        predict_fused(fused, video, output, overwrite=True, progress=progress)
        scale, conf, classes = None, fused.conf_f1, None
    elif Path(weights).suffix.lower() == ".json":
        params = load_params(weights)
        predict_log(video, output, params, overwrite=True, progress=progress)
        scale = None
        conf, classes = params.threshold, None  # LoG finds blobs of one kind, whatever the file calls class 0
    else:
        det = YoloDetector(weights, device=device, threads=threads, runtime=runtime, box_scale="off")
        predict_yolo(weights, video, output, overwrite=True, progress=progress, detector=det)
        conf, classes = det.conf_f1, list(det.class_names)
        scale = stored_box_scale(det.meta) if box_scale == "auto" else None
    with open_dataset(output) as ds:
        fps = float(ds.attrs.get("fps", float("nan")))
    return VideoDetections(output, float(conf), fps, classes, scale)


def link_detections(detections: pd.DataFrame, *, conf: float, options: TrackingOptions | None = None,
                    n_frames: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Link a detection table into tracks with the tracker of ``options``.

    Parameters
    ----------
    detections : DataFrame
        ``sample, x0, y0, x1, y1, class, score`` (every candidate; low scores too).
    conf : float
        Confidence of a detection worth linking: trackpy links only those, ByteTrack/BoT-SORT
        use it as their high and new-track thresholds unless ``options`` sets them.
    options : TrackingOptions, optional
    n_frames : int, optional
        Video length (default: highest frame + 1).

    Returns
    -------
    tracks : DataFrame
        The linked detections (image coordinates) with ``x, y`` and ``track_id``, sorted by frame.
    drift : DataFrame or None
        The drift subtracted before linking (index ``sample``, columns ``x, y`` in px), when
        ``options.drift``.
    """
    options = (options or TrackingOptions()).validate()
    if not np.isfinite(conf):
        raise ParameterError(f"confidence threshold must be a number, got {conf}")
    score = detections["score"].to_numpy(np.float64) if "score" in detections.columns else np.ones(len(detections))
    kept = detections[score >= conf]
    if options.tracker == "trackpy":
        candidates = kept
    else:
        settings = options.settings(conf)
        candidates = detections[score > settings.track_low_thresh]
    drift = None
    if options.drift:
        drift = trk.estimate_drift(kept, search_range=options.search_range, memory=options.memory,
                                   smoothing=options.drift_smoothing, n_frames=n_frames)
        candidates = trk.shift_by_drift(candidates, drift)
    if options.tracker == "trackpy":
        tracks = trk.link_tracks(candidates, search_range=options.search_range, memory=options.memory)
    else:
        tracks = track_boxes(candidates, tracker=options.tracker, settings=settings, n_frames=n_frames)
    if drift is not None:
        tracks = trk.shift_by_drift(tracks, drift, sign=+1)
    tracks = trk.drop_short_tracks(tracks, options.min_length)
    front = [c for c in ("sample", "track_id", "x", "y") if c in tracks.columns]
    return tracks[front + [c for c in tracks.columns if c not in front]], drift


def link_tracks(detections: VideoDetections, output, *, conf: float | None = None,
                options: TrackingOptions | None = None, n_frames: int | None = None) -> pd.DataFrame:
    """Link the detections (``conf`` default: the detector's threshold); writes ``output`` (CSV).

    Beside it: ``<output stem>.h5``, every detection (``boxes``) with the tracks (``tracks``) for
    :func:`score_tracks`, and ``drift.csv`` when the drift was corrected.  With
    ``detections.box_scale`` the raw boxes are linked and then every box (detections and tracks)
    is rescaled about its centre and clipped to the frame.
    """
    conf = detections.conf if conf is None else float(conf)
    output = Path(output)
    dets = read_predictions(detections.path)
    tracks, drift = link_detections(dets, conf=conf, options=options, n_frames=n_frames)
    scale = detections.box_scale
    if scale is not None:
        with open_dataset(detections.path) as ds:
            shapes = np.array([ds.shape(i) for i in range(ds.n)], np.float64).reshape(-1, 2)
        tracks, dets = _rescale(tracks, scale, shapes), _rescale(dets, scale, shapes)
    atomic_write_text(output, tracks.to_csv(index=False), overwrite=True)
    _write_tracked(detections.path, tracks, output.with_suffix(".h5"), conf, boxes=dets)
    if drift is not None:
        atomic_write_text(output.with_name("drift.csv"), drift.reset_index().to_csv(index=False), overwrite=True)
    return tracks


def _rescale(df: pd.DataFrame, scale: tuple[float, float], shapes: np.ndarray) -> pd.DataFrame:
    """Boxes of ``df`` rescaled about their centres, clipped to their frame (``shapes`` (n, 2) = H, W)."""
    if len(df) == 0:
        return df
    out = apply_box_scale(df, *scale)
    hw = shapes[out["sample"].to_numpy(np.int64)]
    for c, lim in (("x0", hw[:, 1]), ("x1", hw[:, 1]), ("y0", hw[:, 0]), ("y1", hw[:, 0])):
        out[c] = np.clip(out[c].to_numpy(np.float64), 0, lim).astype(out[c].dtype)
    return out


def _write_tracked(detections_path: Path, tracks: pd.DataFrame, path: Path, conf: float,
                   boxes: pd.DataFrame | None = None) -> Path:
    """A predictions file holding every detection and the tracks (scored by :func:`score_tracks`).

    The tracks table has no ``score`` column (it is ``det_score``): the tracker already chose its
    detections, low-score ones included, and the evaluator would otherwise filter them again.
    """
    boxes = read_predictions(detections_path) if boxes is None else boxes
    cols = [c for c in tracks.columns if tracks[c].dtype.kind in "biuf"]
    table = tracks[cols].rename(columns={"score": "det_score"})
    with open_dataset(detections_path) as ds:
        n = ds.n
        names = [ds.name(i) for i in range(n)]
        shapes = [ds.shape(i) for i in range(n)]
        class_names = list(ds.class_names) or None
        fps = ds.attrs.get("fps")
    b_s = boxes["sample"].to_numpy(np.int64)
    t_s = table["sample"].to_numpy(np.int64)
    with DatasetWriter(path, kind="predictions", class_names=class_names, overwrite=True,
                       generator={"function": "simgen.experiments.track_video.link_tracks"},
                       attrs={"conf_f1": float(conf), "fps": fps}) as w:
        for i in range(n):
            w.append(None, boxes=boxes[b_s == i].drop(columns="sample"), tracks=table[t_s == i].drop(columns="sample"),
                     name=names[i], shape=shapes[i])
    return path


def score_tracks(tracked, video, report_dir, *, conf: float, class_agnostic: bool = False,
                 mot_iou: float = 0.5) -> dict:
    """Detection and tracking metrics of a tracked predictions file against the video's true tracks."""
    return evaluate(tracked, video, report_dir, conf=conf, tracking=True, class_agnostic=class_agnostic,
                    mot_iou=mot_iou, overwrite=True)


# -- the driver -------------------------------------------------------------------------------------
def track_video(weights, video, output, *, conf: float | None = None, options: TrackingOptions | None = None,
                search_range: float | None = None, memory: int | None = None, tracker: str | None = None,
                class_agnostic: bool | None = None, mot_iou: float = 0.5, device: str = "auto",
                threads: int | None = None, runtime: str = "torch", box_scale: str = "auto", overwrite: bool = False,
                progress: bool = True) -> TrackVideoResult:
    """Detect defects in every frame of a video, link them into tracks and score against true tracks.

    Parameters
    ----------
    weights : path
        YOLO ``best.pt`` (or a LoG parameter ``.json`` from ``simgen baseline log tune``).
    video : path
        HDF5 video (frames = samples; a ``tracks`` table is the ground truth) or a folder
        of frames sorted by name.
    output : path
        Folder receiving ``detections.h5`` (boxes + score per frame, ``fps`` attribute),
        ``tracks.csv`` (linked detections), ``tracks.h5`` (detections + tracks), ``drift.csv``
        (with drift correction), ``summary.json`` and, when the video has true tracks,
        ``report/`` from :func:`simgen.evaluate.report.evaluate` (MOTA, IDF1, MT, IDSW,
        lifetime χ² and KS, plots).
    conf : float, optional
        Confidence threshold for linking and scoring (default: the detector's F1-optimal
        threshold picked on its validation data).
    options : TrackingOptions, optional
        Tracker and its settings (default: trackpy, search range 5 px, memory 2).
    search_range, memory, tracker : optional
        Shortcuts that replace those fields of ``options``.
    class_agnostic : bool, optional
        Ignore classes when scoring.  Default: only when the detector's class names differ
        from the video's (a one-class "loop" detector on a video labelled dot/⟨111⟩/⟨100⟩
        would otherwise be scored against the first class only); always for LoG, which has
        no classes.
    mot_iou : float
        IoU threshold of the MOT metrics (MOTChallenge uses 0.5; small defects may want
        the detection cut-off, 0.15).
    runtime : {"torch", "onnx", "openvino", "openvino-int8"}
        YOLO inference through torch, ONNX Runtime or OpenVINO
        (see :class:`~simgen.train.yolo.predict.YoloDetector`).
    box_scale : {"auto", "off"}
        YOLO: apply the box factors of a calibrated checkpoint (``simgen train box-scale``) or not;
        the raw boxes are linked, the linked boxes rescaled (``detections.h5`` keeps the raw ones).

    Returns
    -------
    TrackVideoResult
    """
    out = check_experiment_dir(output, overwrite=overwrite)
    options = options or TrackingOptions()
    shortcuts = {k: v for k, v in (("search_range", search_range), ("memory", memory), ("tracker", tracker))
                 if v is not None}
    options = options.replace(**shortcuts)
    if not (np.isfinite(mot_iou) and 0 < mot_iou <= 1):
        raise ParameterError(f"MOT IoU must be in (0, 1], got {mot_iou}")
    check_runtime(runtime, weights)
    if box_scale not in BOX_SCALE_MODES:
        raise ParameterError(f"box scale must be one of {', '.join(BOX_SCALE_MODES)}, got {box_scale!r}")
    with open_source(video) as src:
        n_frames, has_truth, video_classes = len(src), "tracks" in src.tables, src.class_names
    out.mkdir(parents=True, exist_ok=True)
    # TODO(sources): the detectors and the evaluator re-open the video; pass one open Source once they take it.
    dets = detect_video(weights, video, out / "detections.h5", device=device, threads=threads, runtime=runtime,
                        box_scale=box_scale, progress=progress)
    conf = dets.conf if conf is None else float(conf)
    tracks = link_tracks(dets, out / "tracks.csv", conf=conf, options=options, n_frames=n_frames)
    result = TrackVideoResult(Path(weights), Path(video), out, n_frames, dets.fps,
                              int(tracks["track_id"].nunique()) if len(tracks) else 0, conf, options)
    if has_truth:
        if class_agnostic is None:
            class_agnostic = dets.class_names != list(video_classes)
        rep = score_tracks(out / "tracks.h5", video, out / "report", conf=conf, class_agnostic=class_agnostic,
                           mot_iou=mot_iou)
        result.class_agnostic = bool(class_agnostic)
        result.mot_iou = float(mot_iou)
        result.detection = {k: rep["detection"].get(k) for k in ("precision", "recall", "f1", "mAP", "peak_f1")}
        result.tracking = rep.get("tracking")
    atomic_write_text(out / "summary.json", json.dumps(to_jsonable(result.to_dict()), indent=2) + "\n",
                      overwrite=True)
    return result
