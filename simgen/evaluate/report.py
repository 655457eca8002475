"""``simgen evaluate`` and ``simgen track`` as functions: one report of every metric that applies to a
prediction/ground-truth pair (:func:`evaluate`), and detections linked into tracks file to file
(:func:`link_tracks_file`).

:func:`evaluate` loads both sides (any supported source, see :mod:`simgen.evaluate.io`),
pairs frames, and computes

* detection metrics (always): per-class AP, mAP, counts/precision/recall/F1 at
  ``conf``, PR curve and peak F1;
* per-frame statistics (always): counts, TP/FP/FN, mean nearest-neighbour
  distance, areal density (when image sizes are known);
* tracking (when the ground truth has tracks): MOT metrics of the predicted
  tracks (linked with trackpy when the predictions carry no identities),
  position RMSE, lifetime comparison, diffusivity (``trackpy.emsd``, :mod:`simgen.evaluate.diffusion`);
* segmentation (when both sides have instance masks): foreground Dice/IoU;
* sizes (``sizes=True`` and ground-truth images): per-frame median and quartiles
  of the watershed/ellipse size of predicted and true boxes (:mod:`simgen.evaluate.sizes`);
* F1 against the IoU cut-off (``iou`` a range such as ``"0.05:0.5:0.05"``): P, R, F1 at
  ``conf`` and mAP per cut-off (:mod:`simgen.evaluate.iou_sweep`); everything else at the
  first value of the range;
* overlay images (``overlays=DIR``): one PNG per ground-truth image with true positives,
  false positives and misses outlined (:mod:`simgen.evaluate.overlays`).

and writes a report folder::

    metrics.json      all scalar results and parameters
    per_class.csv     AP, counts, P/R/F1, peak F1 per class
    pr_curve.csv      all-class PR curve
    per_frame.csv     per-frame counts, NN distance, density (+ sizes)
    pr_curve.png      PR curve with the peak F1 marked
    count_vs_time.png, nn_distance_vs_time.png      (more than one frame)
    lifetimes.png     lifetime histograms (tracking)
    sizes.png         size per frame (sizes=True)
    f1_vs_iou.csv, f1_vs_iou.png                    (an IoU range)

The folder is assembled under a temporary name and renamed at the end.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simgen.atomic import atomic_dir, atomic_path, check_output, check_output_dir
from simgen.datasets.formats.mot import write_mot_file
from simgen.datasets.h5io import DatasetWriter
from simgen.errors import DataError, ParameterError
from simgen.evaluate import tracking as trk
from simgen.evaluate.density import areal_density
from simgen.evaluate.detection import AP_METHODS, evaluate_detections
from simgen.evaluate.diffusion import ensemble_diffusivity
from simgen.evaluate.io import align, load_annotations, validate_options
from simgen.evaluate.iou_sweep import f1_vs_iou, parse_iou, plot_f1_vs_iou
from simgen.evaluate.lifetimes import compare_lifetimes, track_lifetimes
from simgen.evaluate.matching import check_detections
from simgen.evaluate.overlays import COLOURS, write_overlays
from simgen.evaluate.plots import plot_lifetimes, plot_per_frame, plot_pr_curve, plot_sizes
from simgen.evaluate.segmentation import foreground, segmentation_scores
from simgen.evaluate.sizes import measure_sizes, size_stats_per_frame
from simgen.evaluate.tracking import LINK_STRATEGIES
from simgen.progress import stages

__all__ = ["evaluate", "link_tracks_file", "to_jsonable", "EVALUATE_STAGES"]

#: The stages :func:`evaluate` goes through, as its progress bar shows them (those that do not apply are skipped).
EVALUATE_STAGES = ("read", "detection", "per-frame", "F1 vs IoU", "tracking", "segmentation", "sizes", "overlays",
                   "report")


def to_jsonable(obj: Any) -> Any:
    """Nested results → JSON-safe plain Python (NaN/inf → None)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


def evaluate(
    pred: str | PathLike,
    gt: str | PathLike,
    out_dir: str | PathLike | None = None,
    *,
    iou: float | str | Sequence[float] = 0.15,
    match: str = "auto",
    max_distance: float = 5.0,
    conf: float | None = None,
    ap_method: str = "coco",
    class_agnostic: bool = False,
    table: str | None = None,
    tracking: bool = True,
    search_range: float = 5.0,
    memory: int = 2,
    mot_iou: float = 0.5,
    sizes: bool = False,
    polarity: str = "dark",
    visibility: float = 7.0 / 4.0,
    pixel_size: float | None = None,
    frame_interval: float = 1.0,
    plots: bool = True,
    overlays: str | PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> dict:
    """Evaluate predictions against ground truth and (optionally) write a report folder.

    Parameters
    ----------
    pred, gt : path-like
        Predictions and ground truth: HDF5, YOLO folder, COCO JSON, MOTChallenge
        file/folder or CSV (see :mod:`simgen.evaluate.io`).
    out_dir : path-like, optional
        Report folder (nothing is written when ``None``).
    iou : float, str or sequence of float
        IoU cut-off for detection matching (default 0.15).  A range ``"LO:HI:STEP"`` (HI
        included), a list ``"0.1,0.3"`` or a sequence adds the F1-against-IoU table
        (``f1_vs_iou``: P, R, F1 at ``conf`` and mAP per value) and computes everything else
        at the first value.
    match : {"auto", "iou", "distance"}
        Detection matching by box IoU or centre distance; ``"auto"``: IoU when
        both sides have boxes, else distance.
    max_distance : float
        Centre-distance cut-off (pixels) for distance matching and point tracks.
    conf : float, optional
        Confidence threshold for counts, P/R/F1 and linking.  Default: the threshold stored with
        the predictions (``conf_f1``, the one their model chose on its validation data), else
        0.25; ``metrics.json`` says which (``parameters.conf_source``).
    ap_method : {"coco", "continuous", "voc11"}
    class_agnostic : bool
        Ignore classes when matching.
    table : str, optional
        HDF5 table to read on both sides (default: boxes, else points).
    tracking : bool
        Compute tracking metrics when the ground truth has tracks.
    search_range, memory : float, int
        trackpy linking of predictions without identities.
    mot_iou : float
        Similarity threshold of the MOT metrics (MOTChallenge: 0.5).
    sizes : bool
        Measure defect sizes on the ground-truth images.
    polarity : {"dark", "bright"}
        Defect contrast for size measurement.
    visibility : float
        Areal-density correction factor (default 7/4).
    pixel_size : float, optional
        Pixel length (e.g. nm) for densities, sizes and diffusivity in physical units.
    frame_interval : float
        Time between frames for lifetimes and diffusivity.
    plots : bool
        Write PNG plots.
    overlays : path-like, optional
        Folder for one overlay PNG per ground-truth image (true positives green, false
        positives red, misses yellow; see :mod:`simgen.evaluate.overlays`), from the same
        matching as the counts (cut-off, ``conf``).  Needs ground-truth images.
    overwrite : bool
        Replace an existing report folder (and overlay folder).
    progress : bool
        Show a progress bar over the stages (:data:`EVALUATE_STAGES`) on stderr (``"evaluate: <stage>"``).

    Returns
    -------
    dict
        The content of ``metrics.json``.
    """
    ious = parse_iou(iou)
    validate_options(iou=ious[0], max_distance=max_distance, conf=0.25 if conf is None else conf)
    if match not in ("auto", "iou", "distance"):
        raise ParameterError(f"--match must be auto, iou or distance, got {match!r}")
    if ap_method not in AP_METHODS:
        raise ParameterError(f"--ap must be one of {', '.join(AP_METHODS)}, got {ap_method!r}")
    if not (np.isfinite(mot_iou) and 0 < mot_iou <= 1):
        raise ParameterError(f"--mot-iou must be in (0, 1], got {mot_iou}")
    if not (np.isfinite(search_range) and search_range > 0):
        raise ParameterError(f"--search-range must be > 0 pixels, got {search_range}")
    if int(memory) != memory or memory < 0:
        raise ParameterError(f"--memory must be a non-negative integer, got {memory}")
    if not (np.isfinite(visibility) and visibility > 0):
        raise ParameterError(f"--visibility must be > 0, got {visibility}")
    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        raise ParameterError(f"--pixel-size must be > 0, got {pixel_size}")
    if not (np.isfinite(frame_interval) and frame_interval > 0):
        raise ParameterError(f"--frame-interval must be > 0, got {frame_interval}")
    if polarity not in ("dark", "bright"):
        raise ParameterError(f"--polarity must be dark or bright, got {polarity!r}")
    if out_dir is not None:
        out_dir = Path(out_dir)
        check_output_dir(out_dir, overwrite, allow_empty=True)
        _refuse_inputs(out_dir, (pred, gt), "-o/--output")
    if overlays is not None:
        overlays = Path(overlays)
        check_output_dir(overlays, overwrite, allow_empty=True)
        _refuse_inputs(overlays, (pred, gt), "--overlays")
        if out_dir is not None and (overlays.resolve() == out_dir.resolve()
                                    or out_dir.resolve() in overlays.resolve().parents):
            raise ParameterError(f"--overlays {overlays} is (inside) the report folder; give a folder beside it")

    with stages(EVALUATE_STAGES, "evaluate", progress) as stage:
        stage("read")
        gt_ann = load_annotations(gt, table=table, role="ground truth")
        try:
            pred_raw = load_annotations(pred, like=gt_ann, table=table, role="predictions")
            try:
                pred_ann = align(pred_raw, gt_ann)
            except BaseException:
                pred_raw.close()
                raise
            if conf is not None:
                conf_source = "given"
            elif "conf_f1" in pred_raw.meta:
                conf, conf_source = float(pred_raw.meta["conf_f1"]), "stored with the predictions (conf_f1)"
            else:
                conf, conf_source = 0.25, "default 0.25 (the predictions store no threshold)"
            gt_image = gt_ann.image
            try:
                if overlays is not None and gt_image is None:
                    raise DataError(f"--overlays needs ground-truth images; {gt} has none")
                report, tables, figures, det = _compute(
                    pred_ann, gt_ann, ious=ious, match=match, max_distance=max_distance, conf=conf,
                    ap_method=ap_method, class_agnostic=class_agnostic, tracking=tracking,
                    search_range=search_range, memory=memory, mot_iou=mot_iou, sizes=sizes, polarity=polarity,
                    visibility=visibility, pixel_size=pixel_size, frame_interval=frame_interval, plots=plots,
                    stage=stage,
                )
                if overlays is not None and gt_image is not None:
                    stage("overlays")
                    with atomic_dir(overlays, overwrite=overwrite, allow_empty=True) as tmp:
                        n_written = write_overlays(tmp, gt_image, gt_ann.names, det["kept"], gt_ann.table,
                                                   det["matching"], boxes=det["boxes"], radius=max_distance)
                    report["overlays"] = {"folder": str(overlays), "images": n_written,
                                          "colours": {k: list(v) for k, v in COLOURS.items()},
                                          "match": det["metric"], "threshold": det["threshold"], "conf": conf}
            finally:
                pred_ann.close()
        finally:
            gt_ann.close()
        report["inputs"] = {"pred": str(pred), "gt": str(gt), "pred_format": pred_raw.fmt, "gt_format": gt_ann.fmt}
        report["parameters"]["conf_source"] = conf_source
        report = to_jsonable(report)
        if out_dir is not None:
            stage("report")
            _write_report(out_dir, report, tables, figures, overwrite)
    return report


def _refuse_inputs(out: Path, inputs, option: str) -> None:
    """An output folder that is, or contains, an input would replace it: refuse (even with --overwrite)."""
    target = out.resolve()
    for p in inputs:
        src = Path(p).resolve()
        if target == src or target in src.parents:
            raise ParameterError(f"{option} {out} would replace the input {p}; choose another folder")


def _compute(pred, gt, *, ious, match, max_distance, conf, ap_method, class_agnostic, tracking, search_range,
             memory, mot_iou, sizes, polarity, visibility, pixel_size, frame_interval, plots, stage=lambda name: None):
    iou = ious[0]
    stage("detection")

    if match == "auto":
        metric = "iou" if (pred.has_boxes and gt.has_boxes) else "distance"
    else:
        metric = match
    if metric == "iou" and not (pred.has_boxes and gt.has_boxes):
        side = "predictions" if not pred.has_boxes else "ground truth"
        raise DataError(f"IoU matching needs boxes but the {side} are points; use --match distance")
    if len(ious) > 1 and metric != "iou":
        raise ParameterError("an --iou range needs IoU matching (boxes on both sides, --match iou or auto)")
    threshold = iou if metric == "iou" else max_distance
    n = gt.n
    det = evaluate_detections(pred.table, gt.table, metric=metric, threshold=threshold, conf=conf,
                              ap_method=ap_method, by_class=not class_agnostic, n_frames=n)
    class_names = gt.class_names or pred.class_names
    per_class = det.per_class.reset_index()
    per_class.insert(1, "name", [class_names[c] if c < len(class_names) else str(c) for c in per_class["class"]])
    report = {
        "detection": det.summary,
        "per_class": per_class.set_index("class").to_dict(orient="index"),
        "parameters": {"iou": iou, "match": metric, "max_distance": max_distance, "conf": conf,
                       "ap_method": ap_method, "class_agnostic": class_agnostic, "n_frames": n,
                       "visibility": visibility, "pixel_size": pixel_size, "frame_interval": frame_interval},
    }
    if len(ious) > 1:
        report["parameters"]["iou_values"] = list(ious)
    if not pred.has_scores:
        report["detection"]["note"] = "predictions carry no confidence; all scores taken as 1"
    kept = pred.table[det.kept].reset_index(drop=True)

    # per-frame statistics
    stage("per-frame")
    per_frame = det.per_frame.copy()
    per_frame.insert(1, "name", gt.names[:len(per_frame)] + [""] * max(0, len(per_frame) - len(gt.names)))
    per_frame["nn_gt"] = trk.nn_distance_per_frame(gt.table, n)
    per_frame["nn_pred"] = trk.nn_distance_per_frame(kept, n)
    unit = "px" if pixel_size is None else "unit"
    if gt.shapes is not None:
        area = np.array([h * w for h, w in gt.shapes], np.float64)
        if np.all(area > 0):
            per_frame["density_gt"] = areal_density(per_frame["n_gt"].to_numpy(), area, visibility=visibility,
                                                    pixel_size=pixel_size)
            per_frame["density_pred"] = areal_density(per_frame["n_pred"].to_numpy(), area, visibility=visibility,
                                                      pixel_size=pixel_size)
            report["density"] = {
                "visibility": visibility, "unit": f"1/{unit}^2",
                "mean_gt": float(per_frame["density_gt"].mean()), "mean_pred": float(per_frame["density_pred"].mean()),
                "total_gt": areal_density(per_frame["n_gt"].sum(), float(area.sum()), visibility=visibility,
                                          pixel_size=pixel_size),
                "total_pred": areal_density(per_frame["n_pred"].sum(), float(area.sum()), visibility=visibility,
                                            pixel_size=pixel_size),
            }
    tables = {"per_class.csv": per_class, "pr_curve.csv": det.curve, "per_frame.csv": per_frame}
    figures = {}
    if plots:
        figures["pr_curve.png"] = plot_pr_curve(det.curve, det.curves, class_names,
                                                title=f"PR ({metric} {threshold:g}), AP {det.summary['mAP']:.3f}")
        if n > 1:
            figures["count_vs_time.png"] = plot_per_frame(per_frame["sample"], per_frame["n_pred"], per_frame["n_gt"],
                                                          "defects per frame", "defect count vs time", frame_interval)
            figures["nn_distance_vs_time.png"] = plot_per_frame(
                per_frame["sample"], per_frame["nn_pred"], per_frame["nn_gt"], "mean NN distance (px)",
                "nearest-neighbour distance vs time", frame_interval)

    # F1 against the IoU cut-off
    if len(ious) > 1:
        stage("F1 vs IoU")
        sweep = f1_vs_iou(pred.table, gt.table, ious, conf=conf, ap_method=ap_method, by_class=not class_agnostic,
                          n_frames=n)
        report["f1_vs_iou"] = sweep.to_dict(orient="records")
        tables["f1_vs_iou.csv"] = sweep
        if plots:
            figures["f1_vs_iou.png"] = plot_f1_vs_iou(sweep, conf)

    # tracking
    if tracking and gt.tracks is not None and len(gt.tracks):
        stage("tracking")
        report["tracking"], track_tables, track_figs = _tracking(
            pred, gt, kept, conf=conf, search_range=search_range, memory=memory, mot_iou=mot_iou,
            max_distance=max_distance, n=n, pixel_size=pixel_size, frame_interval=frame_interval, plots=plots)
        tables.update(track_tables)
        figures.update(track_figs)

    # segmentation
    if pred.mask is not None and gt.mask is not None:
        stage("segmentation")
        pm, gm, used = [], [], []
        for i in range(n):
            g, p = gt.mask(i), pred.mask(i)
            if g is not None and p is not None:
                pm.append(foreground(p))
                gm.append(foreground(g))
                used.append(i)
        if used:
            seg = segmentation_scores(pm, gm, 2, ["background", "defect"])
            fg = seg["dataset"].iloc[1]
            mean = seg["mean_per_image"].iloc[1]
            report["segmentation"] = {"n_images": len(used), "dice": float(fg["dice"]), "iou": float(fg["iou"]),
                                      "mean_dice_per_image": float(mean["dice"]),
                                      "mean_iou_per_image": float(mean["iou"])}
            per_img = seg["per_image"]
            per_img = per_img[per_img["class"] == 1].assign(sample=[used[i] for i in per_img.loc[per_img["class"] == 1, "image"]])
            tables["segmentation_per_image.csv"] = per_img

    # sizes
    if sizes:
        stage("sizes")
        if gt.image is None:
            raise DataError(f"size measurement needs ground-truth images; {gt.source} has none")
        if not (pred.has_boxes and gt.has_boxes):
            raise DataError("size measurement needs boxes on both sides")
        s_gt = measure_sizes(gt.image, gt.table, polarity=polarity)
        s_pred = measure_sizes(gt.image, kept, polarity=polarity)
        scale = 1.0 if pixel_size is None else pixel_size
        st_gt = size_stats_per_frame(s_gt, n)
        st_pred = size_stats_per_frame(s_pred, n)
        for col in ("median", "q1", "q3"):
            per_frame[f"size_{col}_gt"] = st_gt[col] * scale
            per_frame[f"size_{col}_pred"] = st_pred[col] * scale
        fin_gt = s_gt["size"].dropna() * scale
        fin_pred = s_pred["size"].dropna() * scale
        report["sizes"] = {
            "unit": unit, "median_gt": float(fin_gt.median()) if len(fin_gt) else None,
            "median_pred": float(fin_pred.median()) if len(fin_pred) else None,
            "measured_gt": int(len(fin_gt)), "measured_pred": int(len(fin_pred)),
        }
        if plots:
            figures["sizes.png"] = plot_sizes(st_pred.assign(**{c: st_pred[c] * scale for c in ("median", "q1", "q3")}),
                                              st_gt.assign(**{c: st_gt[c] * scale for c in ("median", "q1", "q3")}),
                                              unit)
    det_ctx = {"kept": kept, "matching": det.matching, "metric": metric, "threshold": threshold,
               "boxes": bool(pred.has_boxes and gt.has_boxes)}
    return report, tables, figures, det_ctx


def _tracking(pred, gt, kept, *, conf, search_range, memory, mot_iou, max_distance, n, pixel_size, frame_interval,
              plots):

    if pred.tracks is not None and len(pred.tracks):
        ptracks = pred.tracks
        if "score" in ptracks.columns:
            ptracks = ptracks[ptracks["score"].to_numpy() >= conf]
        linked = False
    else:
        ptracks = trk.link_tracks(kept, search_range=search_range, memory=memory)
        linked = True
    gtracks = gt.tracks
    res = trk.mot_metrics(ptracks, gtracks, threshold=mot_iou, max_distance=max_distance, n_frames=n)
    out = dict(res.summary)
    out["linked_with_trackpy"] = linked
    if linked:
        out["search_range"] = search_range
        out["memory"] = memory
    lt_pred = track_lifetimes(ptracks, frame_interval=frame_interval, n_frames=n)
    lt_gt = track_lifetimes(gtracks, frame_interval=frame_interval, n_frames=n)
    cmp = compare_lifetimes(lt_pred["lifetime"], lt_gt["lifetime"])
    out["lifetimes"] = cmp
    scale = 1.0 if pixel_size is None else pixel_size
    d_pred = (ensemble_diffusivity(ptracks, lag=1, pixel_size=scale, frame_interval=frame_interval) if len(ptracks)
              else float("nan"))
    d_gt = ensemble_diffusivity(gtracks, lag=1, pixel_size=scale, frame_interval=frame_interval)
    out["diffusivity"] = {"lag_frames": 1, "pred": d_pred, "gt": d_gt,
                          "unit": ("px" if pixel_size is None else "unit") + "^2/" + ("frame" if frame_interval == 1 else "time")}
    tables = {"tracks_pred.csv": ptracks.reset_index(drop=True)} if linked else {}
    figs = {}
    if plots:
        figs["lifetimes.png"] = plot_lifetimes(lt_pred["lifetime"], lt_gt["lifetime"], cmp["bins"], cmp,
                                               "frames" if frame_interval == 1 else "time")
    return out, tables, figs


def _write_report(out_dir: Path, report: dict, tables: dict, figures: dict, overwrite: bool) -> None:
    with atomic_dir(out_dir, overwrite=overwrite, allow_empty=True) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
        for name, df in tables.items():
            df.to_csv(tmp / name, index=False)
        for name, fig in figures.items():
            fig.savefig(tmp / name, format="png")


def link_tracks_file(
    detections: str | PathLike,
    output: str | PathLike,
    *,
    search_range: float = 5.0,
    memory: int = 2,
    conf: float | None = None,
    table: str | None = None,
    link_strategy: str = "nonrecursive",
    like: str | PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """Link the detections of any supported source into tracks and write them (``simgen track``).

    The linking itself is :func:`simgen.evaluate.tracking.link_tracks`; this reads the detections,
    filters them and writes the tracks.

    Parameters
    ----------
    detections : path-like
        HDF5, YOLO folder (with images), COCO JSON, MOTChallenge file or CSV.
    output : path-like
        ``.csv`` (columns ``sample, track_id, x, y`` + the detection columns),
        ``.h5`` (a label-only simgen dataset with a ``tracks`` table) or ``.txt``
        (MOTChallenge tracker results).
    search_range, memory, link_strategy
        See :func:`simgen.evaluate.tracking.link_tracks`.
    conf : float, optional
        Drop detections with ``score < conf`` first.
    table : str, optional
        HDF5 table to read.
    like : path-like, optional
        Ground truth giving image sizes for a label-only YOLO folder.
    overwrite : bool
    progress : bool
        Show a progress bar over the frames linked on stderr (``"linking"``).

    Returns
    -------
    DataFrame of the tracks.
    """

    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in (".csv", ".h5", ".hdf5", ".txt"):
        raise ParameterError(f"output {output} must end in .csv, .h5 or .txt (MOTChallenge)")
    if not (np.isfinite(search_range) and search_range > 0):
        raise ParameterError(f"--search-range must be > 0 pixels, got {search_range}")
    if int(memory) != memory or memory < 0:
        raise ParameterError(f"--memory must be a non-negative integer, got {memory}")
    if link_strategy not in LINK_STRATEGIES:
        raise ParameterError(f"--link-strategy must be one of {', '.join(LINK_STRATEGIES)}")
    if conf is not None and not np.isfinite(conf):
        raise ParameterError(f"--conf must be a number, got {conf}")
    check_output(output, overwrite)
    ref = load_annotations(like, role="reference") if like is not None else None
    try:
        ann = load_annotations(detections, like=ref, table=table, role="detections")
        try:
            det = ann.table
            if suffix == ".txt" and not ann.has_boxes:
                raise DataError("MOTChallenge output needs boxes; the detections are points (write .csv or .h5)")
            if conf is not None and "score" in det.columns:
                det = det[det["score"].to_numpy() >= conf]
            check_detections(det, "detections", boxes=ann.has_boxes)
            tracks = trk.link_tracks(det, search_range=search_range, memory=memory, link_strategy=link_strategy,
                                     progress=progress)
            names, shapes, class_names = ann.names, ann.shapes, ann.class_names
        finally:
            ann.close()
    finally:
        if ref is not None:
            ref.close()
    front = [c for c in ("sample", "track_id", "x", "y") if c in tracks.columns]
    tracks = tracks[front + [c for c in tracks.columns if c not in front]]
    if suffix == ".csv":
        with atomic_path(output, overwrite=overwrite) as tmp:
            tracks.to_csv(tmp, index=False)
    elif suffix == ".txt":
        write_mot_file(tracks, output, kind="results", overwrite=overwrite)
    else:
        n = max(len(names), int(tracks["sample"].max()) + 1 if len(tracks) else 0)
        keep = [c for c in tracks.columns if tracks[c].dtype.kind in "biuf"]
        with DatasetWriter(output, kind="tracks", class_names=class_names or None, overwrite=overwrite,
                           generator={"function": "simgen.evaluate.report.link_tracks_file", "search_range": search_range,
                                      "memory": memory, "source": str(detections)}) as w:
            s = tracks["sample"].to_numpy(np.int64)
            lo = np.searchsorted(s, np.arange(n), "left")
            hi = np.searchsorted(s, np.arange(n), "right")
            for i in range(n):
                shape = shapes[i] if shapes is not None and i < len(shapes) else (0, 0)
                name = names[i] if i < len(names) else f"{i:06d}"
                w.append(None, tracks=tracks.iloc[lo[i]:hi[i]][keep], shape=shape, name=name)
    return tracks
