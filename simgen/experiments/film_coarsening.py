"""Count, spacing and tracks vs time of a coarsening film video, detected against the truth.

:func:`film_coarsening` (``simgen film-coarsening``) runs a detector on every frame of a video
written by ``simgen simulate film-video`` (any simgen video with a ``tracks`` table works; the
time axis is ``/video/time`` when present, else the frame number), links the detections with
trackpy (:func:`~simgen.experiments.track_video.link_detections`) and hands the tracks to
:func:`coarsening_report`, which writes:

* ``per_frame.csv`` — count and mean nearest-neighbour distance per frame, true and detected,
  with their relative errors (:func:`~simgen.evaluate.coarsening.coarsening_table`);
* ``count.png`` (log–log, power-law fits) and ``spacing.png``;
* ``report.json`` — the fits ``n ∝ t^−a`` and ``ℓ ∝ t^b`` (true and detected), mean absolute
  relative errors, the RMS position error of matched track points (px; matched within
  ``match_radius`` by the CLEAR-MOT assignment, :func:`~simgen.evaluate.tracking.mot_metrics`),
  MOTA and IDF1;
* ``report.md`` — the same in a few lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.atomic import atomic_write_text
from simgen.datasets.sources import open_source
from simgen.errors import DataError, ParameterError
from simgen.evaluate import coarsening as co
from simgen.evaluate.plots import save_figure
from simgen.evaluate.report import to_jsonable
from simgen.evaluate.tracking import mot_metrics
from simgen.experiments.common import ExperimentResult, check_experiment_dir
from simgen.experiments.track_video import TrackingOptions, check_runtime, detect_video, link_detections
from simgen.train.yolo.predict import read_predictions

__all__ = ["CoarseningResult", "coarsening_report", "film_coarsening", "read_video_truth"]


@dataclass
class CoarseningResult(ExperimentResult):
    """What :func:`coarsening_report` measured; :meth:`to_dict` is ``report.json``."""

    output: Path
    n_frames: int
    time_unit: str
    count_rel_error: float  # mean |n_pred − n_gt| / n_gt over frames with n_gt > 0
    nn_rel_error: float  # mean |ℓ_pred − ℓ_gt| / ℓ_gt over frames where both exist
    rmse_px: float
    n_matched: int
    mota: float
    idf1: float
    fits: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"n_frames": self.n_frames, "time_unit": self.time_unit, "count_rel_error": self.count_rel_error,
                "nn_rel_error": self.nn_rel_error, "rmse_px": self.rmse_px, "n_matched": self.n_matched,
                "MOTA": self.mota, "IDF1": self.idf1, "fits": self.fits, **self.settings}


def _mean_abs(x: np.ndarray) -> float:
    x = np.abs(np.asarray(x, np.float64))
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def read_video_truth(src) -> tuple[pd.DataFrame, np.ndarray, str]:
    """True tracks, frame times and their unit of an open video :class:`~simgen.datasets.sources.Source`.

    Times: ``/video/time`` (dynamics time units, ``steps · dt``) when the file has it, else
    frame numbers starting at 1 (so log axes work).
    """
    if "tracks" not in src.tables:
        raise DataError(f"{src.path} has no true tracks (a 'tracks' table); simulate one with "
                        "`simgen simulate film-video`")
    gt = src.read_table("tracks")
    ds = src.dataset
    if ds is not None and ds.has("video/time"):
        times, unit = np.asarray(ds.array("video/time"), np.float64), "steps·dt"
    else:
        times, unit = np.arange(1, len(src) + 1, dtype=np.float64), "frame"
    if len(times) != len(src):
        raise DataError(f"{src.path}: /video/time has {len(times)} entries for {len(src)} frames")
    return gt, times, unit


def coarsening_report(pred: pd.DataFrame, gt: pd.DataFrame, times, output, *, match_radius: float = 3.0,
                      time_unit: str = "steps·dt", settings: dict | None = None,
                      overwrite: bool = False) -> CoarseningResult:
    """Compare detected tracks with true ones frame by frame; write the report into ``output``.

    Parameters
    ----------
    pred : DataFrame
        Detected (linked) defects: ``sample, track_id`` and ``x, y`` or box columns (px).
    gt : DataFrame
        True tracks, same columns.
    times : (n_frames,) array
        Time of every frame (> 0).
    output : path
        Report folder (created; must be empty unless ``overwrite``).
    match_radius : float
        Largest centre distance (px) of a matched (true, detected) track point.
    time_unit : str
        Label of the time axis.
    settings : dict, optional
        Extra JSON-able entries for ``report.json`` (detector, linking settings).

    Returns
    -------
    CoarseningResult
    """
    if not (np.isfinite(match_radius) and match_radius > 0):
        raise ParameterError(f"match radius must be > 0 px, got {match_radius}")
    out = check_experiment_dir(output, overwrite=overwrite)
    table = co.coarsening_table(pred, gt, times)
    n = len(table)
    fits = {
        "count": {name: co.power_law_fit(table["time"], table[col])
                  for name, col in (("true", "count_gt"), ("detected", "count_pred"))},
        "spacing": {name: co.power_law_fit(table["time"], table[col])
                    for name, col in (("true", "nn_gt"), ("detected", "nn_pred"))},
    }
    if len(pred) and "track_id" in pred.columns:
        mot = mot_metrics(pred, gt, similarity="distance", max_distance=match_radius, n_frames=n)
        s, n_matched = mot.summary, len(mot.matches)
    else:
        s, n_matched = {"RMSE_px": float("nan"), "MOTA": float("nan"), "IDF1": float("nan")}, 0
    res = CoarseningResult(output=out, n_frames=n, time_unit=time_unit,
                           count_rel_error=_mean_abs(table["count_rel_error"]),
                           nn_rel_error=_mean_abs(table["nn_rel_error"]), rmse_px=float(s["RMSE_px"]),
                           n_matched=int(n_matched), mota=float(s["MOTA"]), idf1=float(s["IDF1"]), fits=fits,
                           settings={"match_radius": float(match_radius), **(settings or {})})
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "per_frame.csv", table.to_csv(index=False), overwrite=True)
    save_figure(co.plot_count(table, fits["count"], time_unit), out / "count.png", overwrite=True)
    save_figure(co.plot_spacing(table, fits["spacing"], time_unit), out / "spacing.png", overwrite=True)
    atomic_write_text(out / "report.json", json.dumps(to_jsonable(res.to_dict()), indent=2) + "\n", overwrite=True)
    atomic_write_text(out / "report.md", _markdown(res, table), overwrite=True)
    return res


def _fmt_fit(fit: dict | None, sign: float = 1.0) -> str:
    return "n/a" if not fit else f"{sign * fit['exponent']:.3f} ± {fit['exponent_stderr']:.3f}"


def _markdown(res: CoarseningResult, table: pd.DataFrame) -> str:
    f = res.fits
    lines = [
        "# Film coarsening: detected vs true",
        "",
        f"{res.n_frames} frames, time {table['time'].iloc[0]:g} … {table['time'].iloc[-1]:g} ({res.time_unit}); "
        f"defects {int(table['count_gt'].iloc[0])} → {int(table['count_gt'].iloc[-1])} (true).",
        "",
        "| quantity | true | detected |",
        "|---|---|---|",
        f"| count exponent a (n ∝ t^−a) | {_fmt_fit(f['count']['true'], -1)} | {_fmt_fit(f['count']['detected'], -1)} |",
        f"| spacing exponent b (ℓ ∝ t^b) | {_fmt_fit(f['spacing']['true'])} | {_fmt_fit(f['spacing']['detected'])} |",
        "",
        f"- mean |relative count error|: {res.count_rel_error:.3f}",
        f"- mean |relative spacing error|: {res.nn_rel_error:.3f}",
        f"- RMS position error of matched track points: {res.rmse_px:.2f} px over {res.n_matched} matches "
        f"(radius {res.settings['match_radius']:g} px; the study reports 1.03 px)",
        f"- MOTA {res.mota:.3f}, IDF1 {res.idf1:.3f}",
        "",
        "Plots: `count.png`, `spacing.png`; per frame: `per_frame.csv`.",
        "",
    ]
    return "\n".join(lines)


def film_coarsening(weights, video, output, *, conf: float | None = None, search_range: float = 5.0,
                    memory: int = 0, match_radius: float = 3.0, device: str = "auto", threads: int | None = None,
                    runtime: str = "torch", overwrite: bool = False, progress: bool = True) -> CoarseningResult:
    """Detect, link (trackpy) and report count, spacing and track positions vs time against the truth.

    Parameters
    ----------
    weights : path
        YOLO ``best.pt`` or a LoG parameter ``.json`` (``simgen baseline log tune``).
    video : path
        HDF5 video with true tracks (``simgen simulate film-video``).
    output : path
        Folder: ``detections.h5``, ``tracks.csv`` (linked detections) and the report of
        :func:`coarsening_report`.
    conf : float, optional
        Confidence threshold of a detection (default: the detector's own).
    search_range, memory : float, int
        trackpy linking of the detections (px per frame; frames of gap closing).
    match_radius : float
        Largest distance (px) of a matched track point.
    runtime : {"torch", "onnx", "openvino", "openvino-int8"}
        YOLO inference through torch, ONNX Runtime or OpenVINO
        (see :class:`~simgen.train.yolo.predict.YoloDetector`).

    Returns
    -------
    CoarseningResult
    """
    out = check_experiment_dir(output, overwrite=overwrite)
    options = TrackingOptions(tracker="trackpy", search_range=search_range, memory=memory).validate()
    if not (np.isfinite(match_radius) and match_radius > 0):
        raise ParameterError(f"match radius must be > 0 px, got {match_radius}")
    if conf is not None and not (0 <= conf <= 1):
        raise ParameterError(f"confidence threshold must be in [0, 1], got {conf}")
    check_runtime(runtime, weights)
    if not Path(weights).is_file():
        raise ParameterError(f"detector weights {weights} do not exist")
    with open_source(video) as src:
        gt, times, unit = read_video_truth(src)
    out.mkdir(parents=True, exist_ok=True)
    dets = detect_video(weights, video, out / "detections.h5", device=device, threads=threads, runtime=runtime,
                        progress=progress)
    conf = dets.conf if conf is None else float(conf)
    tracks, _ = link_detections(read_predictions(dets.path), conf=conf, options=options, n_frames=len(times))
    atomic_write_text(out / "tracks.csv", tracks.to_csv(index=False), overwrite=True)
    settings = {"weights": str(weights), "video": str(video), "conf": conf, "fps": dets.fps,
                "linking": options.to_dict(conf), "n_tracks": int(tracks["track_id"].nunique()) if len(tracks) else 0}
    return coarsening_report(tracks, gt, times, out, match_radius=match_radius, time_unit=unit, settings=settings,
                             overwrite=True)
