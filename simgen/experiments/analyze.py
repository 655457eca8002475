"""Analyse an in-situ video: counts, sizes, densities against dose, tracks and diffusivity by size.

:func:`analyze` (``simgen analyze``) runs, on a folder of frames (or an HDF5 video):

1. **detect** — the detector on every frame (:func:`~simgen.experiments.track_video.detect_video`);
2. **link** — tracks with trackpy, ByteTrack or BoT-SORT, optional drift correction and minimum
   length (:func:`~simgen.experiments.track_video.link_detections`);
3. **measure** — every detection kept (``score >= conf``) and every tracked one is sized by Otsu,
   3×3 opening, distance-transform watershed and an ellipse fit (:mod:`simgen.evaluate.sizes`);
4. **report** — per frame: count, size quartiles, areal and volumetric density (count × 7/4 /
   imaged volume, :mod:`simgen.evaluate.density`) against time and dose; per track: lifetime,
   size, diffusivity; diffusivity by size bin (:mod:`simgen.evaluate.diffusion`); plots.

Output folder::

    detections.h5        every candidate box with its score
    per_frame.csv/.json  sample, name, [time_s, dose], count, size_{median,q1,q3}_{px,nm},
                         area_nm2, areal_density_m2 [, volume_nm3, volumetric_density_m3]
    defects.csv          every kept detection with its ellipse (px) and size_nm
    tracks.csv           tracked detections (image coordinates) with sizes
    track_summary.csv    per track: first, last, n_detections, lifetime, size (median), D
    diffusivity.csv      D by size bin (trackpy.emsd) with the per-track median and SEM
    drift.csv            (with --drift) the stage drift per frame (px)
    summary.json         settings, units, totals and trends against dose
    machine_vs_human.csv (frames with labels) per frame: count and size quartiles of the
                         machine and of the human boxes, measured the same way, and the
                         differences in % (:mod:`simgen.evaluate.agreement`)
    density.png sizes.png diffusivity.png lifetimes.png
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
from simgen.evaluate.agreement import agreement_summary, agreement_table
from simgen.evaluate.density import VISIBILITY, density_per_frame, frame_clock
from simgen.evaluate.diffusion import diffusivity_by_size, size_bins, track_diffusivity
from simgen.evaluate.lifetimes import track_lifetimes
from simgen.evaluate.report import to_jsonable
from simgen.evaluate.sizes import SIZE_COLUMNS, measure_sizes
from simgen.evaluate.tracking import shift_by_drift
from simgen.experiments.common import ExperimentResult, check_experiment_dir
from simgen.experiments.track_video import TrackingOptions, check_runtime, detect_video, link_detections
from simgen.train.yolo.predict import read_predictions

__all__ = ["AnalyzeResult", "analyze", "per_frame_table"]


@dataclass
class AnalyzeResult(ExperimentResult):
    """What :func:`analyze` found; :meth:`to_dict` is ``summary.json``."""

    output: Path
    n_frames: int
    n_defects: int
    n_tracks: int
    conf: float
    fps: float
    per_frame: pd.DataFrame = field(repr=False)
    diffusivity: pd.DataFrame = field(repr=False)
    summary: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"n_frames": self.n_frames, "n_defects": self.n_defects, "n_tracks": self.n_tracks, "conf": self.conf,
                "fps": self.fps, **self.summary}


def _check_positive(value, name: str, optional: bool = True) -> None:
    if value is None and optional:
        return
    if value is None or not (np.isfinite(value) and value > 0):
        raise ParameterError(f"{name} must be > 0, got {value}")


def per_frame_table(defects: pd.DataFrame, shapes: list[tuple[int, int]], names: list[str], *, pixel_size: float,
                    thickness: float | None = None, frame_rate: float | None = None, dose_rate: float | None = None,
                    dose_start: float = 0.0, visibility: float = VISIBILITY) -> pd.DataFrame:
    """Count, size quartiles (px and nm) and densities of every frame.

    Parameters
    ----------
    defects : DataFrame
        The kept detections: ``sample`` and ``size`` (pixels; NaN when unmeasured).
    shapes, names : list
        ``(H, W)`` and name of every frame.
    pixel_size, thickness, frame_rate, dose_rate, dose_start, visibility
        See :func:`analyze`.
    """
    n = len(shapes)
    s = defects["sample"].to_numpy(np.int64)
    counts = np.bincount(s, minlength=n)[:n]
    clock = frame_clock(n, frame_rate=frame_rate, dose_rate=dose_rate, dose_start=dose_start)
    dens = density_per_frame(counts, shapes, pixel_size=pixel_size, thickness=thickness, visibility=visibility)
    g = defects[np.isfinite(defects["size"].to_numpy(np.float64))].groupby("sample")["size"]
    q = pd.DataFrame({"n_sized": g.size(), "size_median_px": g.median(), "size_q1_px": g.quantile(0.25),
                      "size_q3_px": g.quantile(0.75)}).reindex(range(n))
    q["n_sized"] = q["n_sized"].fillna(0).astype(np.int64)
    for k in ("median", "q1", "q3"):
        q[f"size_{k}_nm"] = q[f"size_{k}_px"] * pixel_size
    out = clock.assign(name=names).merge(dens, on="sample")
    return out.merge(q.rename_axis("sample").reset_index(), on="sample")


def _trend(x: np.ndarray, y: np.ndarray) -> dict:
    """Least-squares slope of y against x with its p-value (NaN with fewer than 3 points)."""
    from scipy import stats

    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0:
        return {"slope": float("nan"), "p": float("nan"), "n": int(ok.sum())}
    fit = stats.linregress(x[ok], y[ok])
    return {"slope": float(fit.slope), "intercept": float(fit.intercept), "p": float(fit.pvalue), "n": int(ok.sum())}


def analyze(frames, weights, output, *, pixel_size: float, thickness: float | None = None,
            frame_rate: float | None = None, dose_rate: float | None = None, dose_start: float = 0.0,
            conf: float | None = None, options: TrackingOptions | None = None, polarity: str = "dark",
            opening: int = 3, visibility: float = VISIBILITY, diffusivity_bins: int | list[float] = 4, lag: int = 1,
            plots: bool = True, device: str = "auto", threads: int | None = None, runtime: str = "torch",
            human: bool | None = None, overwrite: bool = False, progress: bool = True) -> AnalyzeResult:
    """Detect, track, size and count defects in every frame of a video and write a report.

    Parameters
    ----------
    frames : path
        Folder of frames (sorted by name) or an HDF5 video.
    weights : path
        YOLO ``best.pt`` (or a LoG parameter ``.json``).
    output : path
        Report folder (see the module docstring); must not exist unless ``overwrite``.
    pixel_size : float
        nm per pixel (e.g. 1 / 2.6884 for the FeCrAl video).
    thickness : float, optional
        Foil thickness in nm (volumetric density needs it).
    frame_rate : float, optional
        Frames per second of the given frames (time per frame = 1 / frame_rate); sets the time
        axis, the dose and the diffusivity's time unit (else frames).
    dose_rate : float, optional
        Dose per second (e.g. dpa/s); needs ``frame_rate``.
    dose_start : float
        Dose of the first frame.
    conf : float, optional
        Confidence of a counted, linked defect (default: the detector's F1-optimal threshold).
    options : TrackingOptions, optional
        Tracker and its settings (default trackpy).
    polarity : {"dark", "bright"}
        Defect contrast for the size measurement.
    opening : int
        Side of the square opening of the segmentation (3: the loop study's 3×3).
    visibility : float
        Count correction for defects out of contrast (7/4).
    diffusivity_bins : int or list of float
        Number of quantile size bins for the diffusivity, or edges in nm.
    lag : int
        Lag (frames) of the diffusivity ``D = <|Δr|²> / 4τ``.
    plots : bool
        Write the PNG plots.
    runtime : {"torch", "onnx", "openvino", "openvino-int8"}
        YOLO inference through torch, ONNX Runtime or OpenVINO
        (see :class:`~simgen.train.yolo.predict.YoloDetector`).
    human : bool, optional
        Compare with the frames' own boxes (a YOLO folder's labels, a dataset's box table):
        the human boxes are sized and counted exactly like the detections and the differences
        go to ``machine_vs_human.csv`` and ``summary["machine_vs_human"]``.  Default: when the
        frames have labels.  The labels are read for this comparison only.

    Returns
    -------
    AnalyzeResult
    """
    _check_positive(pixel_size, "pixel size (nm)", optional=False)
    _check_positive(thickness, "foil thickness (nm)")
    _check_positive(visibility, "visibility factor", optional=False)
    frame_clock(0, frame_rate=frame_rate, dose_rate=dose_rate, dose_start=dose_start)  # validates
    options = (options or TrackingOptions()).validate()
    if polarity not in ("dark", "bright"):
        raise ParameterError(f"polarity must be dark or bright, got {polarity!r}")
    if int(opening) != opening or opening < 0:
        raise ParameterError(f"opening must be a non-negative integer (pixels), got {opening}")
    if int(lag) != lag or lag < 1:
        raise ParameterError(f"lag must be a positive integer (frames), got {lag}")
    bins_px = diffusivity_bins if np.ndim(diffusivity_bins) == 0 else np.asarray(diffusivity_bins, np.float64) / pixel_size
    size_bins(np.zeros(0), bins_px)  # validates
    if conf is not None and not (np.isfinite(conf) and 0 <= conf <= 1):
        raise ParameterError(f"conf must be in [0, 1], got {conf}")
    check_runtime(runtime, weights)
    out = check_experiment_dir(output, overwrite=overwrite)
    with open_source(frames) as src:
        n = len(src)
        names = [src.name(k) for k in range(n)]
        shapes = [src.shape(k) for k in range(n)]
        labelled = src.has_labels
    if n == 0:
        raise DataError(f"{frames} holds no frames")
    if human and not labelled:
        raise DataError(f"{frames} has no labels to compare with (a YOLO folder with labels/ or a dataset with boxes)")
    human = labelled if human is None else bool(human)
    out.mkdir(parents=True, exist_ok=True)

    # 1-2. detect and link
    dets_file = detect_video(weights, frames, out / "detections.h5", device=device, threads=threads, runtime=runtime,
                             progress=progress)
    conf = dets_file.conf if conf is None else float(conf)
    dets = read_predictions(dets_file.path).reset_index(drop=True)
    dets["det_row"] = np.arange(len(dets), dtype=np.int64)
    tracks, drift = link_detections(dets, conf=conf, options=options, n_frames=n)

    # 3. sizes of the kept and the tracked detections, each measured once
    kept = dets[dets["score"].to_numpy(np.float64) >= conf]
    rows = np.union1d(kept["det_row"].to_numpy(), tracks["det_row"].to_numpy() if len(tracks) else [])
    with open_source(frames) as src:
        sized = measure_sizes(src.image, dets.iloc[rows.astype(np.int64)], polarity=polarity, opening=opening)
    sized = sized.set_index("det_row")[list(SIZE_COLUMNS)]
    defects = kept.join(sized, on="det_row")
    defects["size_nm"] = defects["size"] * pixel_size
    tracks = tracks.join(sized[["size", "major", "minor", "angle"]], on="det_row") if len(tracks) else \
        tracks.assign(size=np.zeros(0), major=np.zeros(0), minor=np.zeros(0), angle=np.zeros(0))

    # 4. tables
    per_frame = per_frame_table(defects, shapes, names, pixel_size=pixel_size, thickness=thickness,
                                frame_rate=frame_rate, dose_rate=dose_rate, dose_start=dose_start, visibility=visibility)
    frame_interval = 1.0 if frame_rate is None else 1.0 / frame_rate
    t_unit = "frame" if frame_rate is None else "s"
    d_unit = f"nm^2/{t_unit}"
    steady = shift_by_drift(tracks, drift) if drift is not None else tracks  # MSD without the stage drift
    life = track_lifetimes(tracks, frame_interval=frame_interval, n_frames=n)
    per_track = track_diffusivity(steady, lag=lag, pixel_size=pixel_size, frame_interval=frame_interval)
    summary_tracks = life.join(per_track).assign(
        size_px=tracks.groupby("track_id")["size"].median() if len(tracks) else np.zeros(0))
    summary_tracks["size_nm"] = summary_tracks["size_px"] * pixel_size
    by_size = diffusivity_by_size(steady, bins=bins_px, lag=lag, pixel_size=pixel_size, frame_interval=frame_interval)
    by_size.insert(2, "size_lo_nm", by_size["size_lo"] * pixel_size)
    by_size.insert(3, "size_hi_nm", by_size["size_hi"] * pixel_size)
    by_size = by_size.rename(columns={"size_lo": "size_lo_px", "size_hi": "size_hi_px"})

    x = per_frame["dose"].to_numpy() if "dose" in per_frame.columns else (
        per_frame["time_s"].to_numpy() if "time_s" in per_frame.columns else per_frame["sample"].to_numpy(np.float64))
    density_col = "volumetric_density_m3" if thickness is not None else "areal_density_m2"
    summary = {
        "frames": str(frames), "weights": str(weights), "tracking": options.to_dict(conf),
        "settings": {"pixel_size_nm": pixel_size, "thickness_nm": thickness, "frame_rate": frame_rate,
                     "dose_rate": dose_rate, "dose_start": dose_start, "visibility": visibility, "polarity": polarity,
                     "opening": opening, "lag_frames": lag},
        "units": {"size": "nm (ellipse major axis)", "areal_density": "m^-2", "volumetric_density": "m^-3",
                  "D": d_unit, "lifetime": t_unit, "against": "dose" if "dose" in per_frame.columns else
                  ("time_s" if frame_rate else "frame")},
        "count_per_frame": {"mean": float(per_frame["count"].mean()), "min": int(per_frame["count"].min()),
                            "max": int(per_frame["count"].max())},
        "size_nm": {"median": float(np.nanmedian(defects["size_nm"])) if defects["size_nm"].notna().any()
                    else float("nan"),
                    "q1": float(defects["size_nm"].quantile(0.25)), "q3": float(defects["size_nm"].quantile(0.75))},
        f"{density_col}_mean": float(per_frame[density_col].mean()),
        "trend": {density_col: _trend(x, per_frame[density_col].to_numpy(np.float64)),
                  "size_median_nm": _trend(x, per_frame["size_median_nm"].to_numpy(np.float64))},
        "tracks": {"n": int(len(life)), "median_lifetime": float(life["lifetime"].median()) if len(life)
                   else float("nan"), "D_median": float(per_track["D"].median()) if len(per_track) else float("nan")},
        "files": ["per_frame.csv", "per_frame.json", "defects.csv", "tracks.csv", "track_summary.csv",
                  "diffusivity.csv", "summary.json"],
    }
    agreement = None
    if human:
        agreement, summary["machine_vs_human"], human_table = _machine_vs_human(
            frames, per_frame, defects, shapes, names, pixel_size=pixel_size, thickness=thickness,
            frame_rate=frame_rate, dose_rate=dose_rate, dose_start=dose_start, visibility=visibility,
            polarity=polarity, opening=opening)
        summary["files"].append("machine_vs_human.csv")
    result = AnalyzeResult(out, n, int(len(defects)), int(len(life)), conf, dets_file.fps, per_frame, by_size, summary)
    if agreement is not None:
        atomic_write_text(out / "machine_vs_human.csv", agreement.to_csv(index=False), overwrite=True)
        atomic_write_text(out / "human_defects.csv", human_table.to_csv(index=False), overwrite=True)

    atomic_write_text(out / "per_frame.csv", per_frame.to_csv(index=False), overwrite=True)
    atomic_write_text(out / "per_frame.json", json.dumps(to_jsonable(per_frame.to_dict(orient="records")), indent=1)
                      + "\n", overwrite=True)
    atomic_write_text(out / "defects.csv", defects.drop(columns="det_row").to_csv(index=False), overwrite=True)
    atomic_write_text(out / "tracks.csv", tracks.drop(columns="det_row").to_csv(index=False), overwrite=True)
    atomic_write_text(out / "track_summary.csv", summary_tracks.reset_index().to_csv(index=False), overwrite=True)
    atomic_write_text(out / "diffusivity.csv", by_size.to_csv(index=False), overwrite=True)
    if drift is not None:
        atomic_write_text(out / "drift.csv", drift.reset_index().to_csv(index=False), overwrite=True)
        summary["files"].append("drift.csv")
    if plots:
        from simgen.evaluate.plots import save_figure
        from simgen.evaluate.video_plots import (
            plot_density,
            plot_diffusivity,
            plot_size_quartiles,
            plot_track_lifetimes,
        )

        figures = {"density.png": plot_density(per_frame), "sizes.png": plot_size_quartiles(per_frame),
                   "diffusivity.png": plot_diffusivity(by_size.rename(columns={"size_lo_nm": "size_lo",
                                                                              "size_hi_nm": "size_hi"}), d_unit),
                   "lifetimes.png": plot_track_lifetimes(life["lifetime"].to_numpy(), f"lifetime ({t_unit})")}
        if agreement is not None:
            from simgen.evaluate.video_plots import plot_agreement

            figures["machine_vs_human.png"] = plot_agreement(agreement)
        for name, fig in figures.items():
            save_figure(fig, out / name, overwrite=True)
        summary["files"] += list(figures)
    atomic_write_text(out / "summary.json", json.dumps(to_jsonable(result.to_dict()), indent=2) + "\n", overwrite=True)
    return result


def _machine_vs_human(frames, per_frame: pd.DataFrame, defects: pd.DataFrame, shapes, names, *, pixel_size: float,
                      polarity: str, opening: int, **density) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """The human boxes of ``frames`` sized and counted like the detections, against the machine's."""
    with open_source(frames) as src:
        table = src.read_table()
        gt = (table[["sample", "x0", "y0", "x1", "y1"]] if table is not None else
              pd.DataFrame({c: np.zeros(0) for c in ("x0", "y0", "x1", "y1")}).assign(sample=np.zeros(0, np.int64)))
        gt = measure_sizes(src.image, gt, polarity=polarity, opening=opening) if len(gt) else \
            gt.assign(**{c: np.zeros(0) for c in SIZE_COLUMNS})
    gt["size_nm"] = gt["size"] * pixel_size
    human = per_frame_table(gt, shapes, names, pixel_size=pixel_size, **density)
    table = agreement_table(per_frame, human)
    return table, agreement_summary(table, defects["size_nm"], gt["size_nm"]), gt
