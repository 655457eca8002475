"""Detection metrics: counts, precision/recall/F1, PR curves and average precision.

Inputs are DataFrames with the schema's box columns (``sample, x0, y0, x1, y1,
class [, score]``) or point columns (``sample, x, y [, class, score]`` with
``metric="distance"``).  A prediction table without a ``score`` column is
treated as all-confidence-1 (a single operating point).

Conventions (see ``docs/evaluate.md``)
---------------------------------------
* Counts at a confidence threshold ``conf`` keep predictions with ``score >= conf``
  and match them greedily by quality (highest IoU / smallest centre distance).
* PR curves and AP match in score order (COCO/VOC), so that every point of the
  curve is the result one would get by thresholding there.
* Undefined ratios (0/0) are reported as 0, as TrackEval does: no predictions
  gives precision 0, recall 0, F1 0.  AP of a class without ground truth is NaN
  (pycocotools reports -1) and is left out of the mean.
* ``ap_method="coco"`` (default) is the 101-point interpolated AP of pycocotools;
  ``"continuous"`` is the area under the interpolated curve
  ``p_interp(r) = max_{r' >= r} p(r')`` (PASCAL VOC 2010+); ``"voc11"`` the 11-point VOC 2007 AP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from simgen.errors import ParameterError
from simgen.evaluate.matching import Matching, check_detections, match_detections

__all__ = [
    "AP_METHODS",
    "ratio",
    "prf",
    "interpolated_precision",
    "average_precision",
    "detection_counts",
    "pr_curve",
    "true_positive_flags",
    "peak_f1",
    "DetectionResult",
    "evaluate_detections",
]

AP_METHODS = ("coco", "continuous", "voc11")


def ratio(num: ArrayLike, den: ArrayLike) -> float | np.ndarray:
    """``num / den`` with 0 where ``den == 0`` (TrackEval's ``max(1, den)`` convention)."""
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    out = np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)
    return out if out.ndim else float(out)


def prf(tp: int | np.ndarray, fp: int | np.ndarray, fn: int | np.ndarray) -> dict:
    """Precision, recall and F1 from counts (0 when undefined)."""
    return {
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "f1": ratio(2 * np.asarray(tp), 2 * np.asarray(tp) + fp + fn),
    }


def interpolated_precision(precision: ArrayLike) -> np.ndarray:
    """Monotone envelope ``p_interp[i] = max(precision[i:])`` (precision ordered by recall)."""
    p = np.asarray(precision, np.float64)
    return np.maximum.accumulate(p[::-1])[::-1] if len(p) else p


def average_precision(recall: ArrayLike, precision: ArrayLike, method: str = "coco") -> float:
    """Average precision from per-detection cumulative recall and precision.

    Parameters
    ----------
    recall, precision : 1-D arrays
        Values after each detection, detections sorted by decreasing score
        (recall non-decreasing).
    method : {"coco", "continuous", "voc11"}
        ``"coco"``: mean of ``p_interp`` at the 101 recall levels 0, 0.01, ..., 1,
        taking at each level the first detection whose recall reaches it
        (pycocotools ``COCOeval.accumulate``); levels beyond the final recall score 0.
        ``"continuous"``: area under ``p_interp(r)`` (every recall step counted).
        ``"voc11"``: mean over r = 0, 0.1, ..., 1 of ``max(p[recall >= r])``.

    Returns
    -------
    float
        AP in [0, 1] (0 when there are no detections).

    Examples
    --------
    >>> average_precision([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3], "continuous")
    0.8333333333333333
    """
    if method not in AP_METHODS:
        raise ParameterError(f"ap method must be one of {AP_METHODS}, got {method!r}")
    rc = np.asarray(recall, np.float64)
    pr = interpolated_precision(precision)
    if len(rc) == 0:
        return 0.0
    if method == "coco":
        levels = np.linspace(0.0, 1.0, 101)
        idx = np.searchsorted(rc, levels, side="left")
        q = np.where(idx < len(rc), pr[np.minimum(idx, len(rc) - 1)], 0.0)
        return float(q.mean())
    if method == "voc11":
        levels = np.linspace(0.0, 1.0, 11)
        idx = np.searchsorted(rc, levels, side="left")
        q = np.where(idx < len(rc), pr[np.minimum(idx, len(rc) - 1)], 0.0)
        return float(q.mean())
    steps = np.diff(np.concatenate([[0.0], rc]))
    return float(np.sum(steps * pr))


def _scores(pred: pd.DataFrame) -> np.ndarray:
    return pred["score"].to_numpy(np.float64) if "score" in pred.columns else np.ones(len(pred))


def _validate(pred, gt, metric):
    boxes = metric == "iou"
    check_detections(gt, "ground truth", boxes=boxes if boxes else _has_boxes(gt))
    check_detections(pred, "predictions", boxes=boxes if boxes else _has_boxes(pred))


def _has_boxes(df) -> bool:
    return not ("x" in df.columns and "y" in df.columns)


def detection_counts(
    pred: pd.DataFrame,
    gt: pd.DataFrame,
    *,
    conf: float = 0.25,
    metric: str = "iou",
    threshold: float = 0.15,
    by_class: bool = True,
) -> dict:
    """TP, FP, FN, precision, recall and F1 of predictions with ``score >= conf``.

    Matching is greedy by quality (:func:`~simgen.evaluate.matching.match_detections`
    with ``order="quality"``).

    Returns
    -------
    dict
        ``tp, fp, fn, precision, recall, f1, conf``.

    Examples
    --------
    >>> import pandas as pd
    >>> gt = pd.DataFrame({"sample": [0, 0], "x0": [0., 20.], "y0": [0., 0.], "x1": [10., 30.],
    ...                    "y1": [10., 10.], "class": [0, 0]})
    >>> detection_counts(gt.iloc[:1].assign(score=0.9), gt)["recall"]
    0.5
    """
    _validate(pred, gt, metric)
    keep = _scores(pred) >= conf
    m = match_detections(pred[keep], gt, metric=metric, threshold=threshold, order="quality", by_class=by_class)
    return {"tp": m.tp, "fp": m.fp, "fn": m.fn, **prf(m.tp, m.fp, m.fn), "conf": float(conf)}


def _curve_from_flags(scores_sorted, tp_sorted, n_gt) -> pd.DataFrame:
    """PR table with one row per distinct score (threshold = keep ``score >= t``)."""
    ctp = np.cumsum(tp_sorted)
    cfp = np.cumsum(~tp_sorted)
    if len(scores_sorted):
        last = np.flatnonzero(np.r_[scores_sorted[1:] != scores_sorted[:-1], True])
    else:
        last = np.zeros(0, np.int64)
    tp, fp = ctp[last], cfp[last]
    fn = n_gt - tp
    return pd.DataFrame(
        {"threshold": scores_sorted[last], "tp": tp.astype(np.int64), "fp": fp.astype(np.int64),
         "fn": fn.astype(np.int64), **prf(tp, fp, fn)}
    )


def pr_curve(
    pred: pd.DataFrame,
    gt: pd.DataFrame,
    *,
    metric: str = "iou",
    threshold: float = 0.15,
    by_class: bool = True,
) -> pd.DataFrame:
    """Precision-recall curve over all confidence thresholds.

    Returns
    -------
    DataFrame
        One row per distinct prediction score, sorted by decreasing threshold,
        with columns ``threshold, tp, fp, fn, precision, recall, f1``; row ``t``
        describes keeping predictions with ``score >= threshold``.
    """
    flags = true_positive_flags(pred, gt, metric=metric, threshold=threshold, by_class=by_class)
    s = _scores(pred)
    order = np.argsort(-s, kind="stable")
    return _curve_from_flags(s[order], flags[order], len(gt))


def true_positive_flags(
    pred: pd.DataFrame,
    gt: pd.DataFrame,
    *,
    metric: str = "iou",
    threshold: float = 0.15,
    by_class: bool = True,
) -> np.ndarray:
    """Whether each prediction (in ``pred``'s row order) is a true positive when predictions are
    matched greedily by decreasing score, as on the PR curve (bool array, length ``len(pred)``)."""
    _validate(pred, gt, metric)
    m = match_detections(pred, gt, metric=metric, threshold=threshold, order="score", by_class=by_class)
    return np.asarray(m.pred_to_gt >= 0)


def peak_f1(curve: pd.DataFrame) -> tuple[float, float]:
    """Maximum F1 of a PR curve and its confidence threshold (``(0.0, nan)`` if empty).

    Ties go to the highest threshold (fewest predictions).
    """
    if len(curve) == 0:
        return 0.0, float("nan")
    i = int(np.argmax(curve["f1"].to_numpy()))
    return float(curve["f1"].iloc[i]), float(curve["threshold"].iloc[i])


@dataclass
class DetectionResult:
    """Everything :func:`evaluate_detections` computes.

    Attributes
    ----------
    summary : dict
        ``mAP``, counts / precision / recall / F1 at ``conf`` (all classes),
        ``peak_f1`` and ``peak_f1_threshold`` of the all-class curve, parameters.
    per_class : DataFrame
        Index ``class``; columns ``n_gt, n_pred, ap, tp, fp, fn, precision, recall,
        f1, peak_f1, peak_f1_threshold``.
    curve : DataFrame
        All-class PR curve (see :func:`pr_curve`).
    curves : dict
        Per-class PR curves.
    per_frame : DataFrame
        Per sample: ``n_gt, n_pred, tp, fp, fn`` at ``conf``.
    matching : Matching
        Quality-order matching of the predictions with ``score >= conf``
        (row positions refer to ``pred[kept]`` and ``gt``).
    kept : ndarray of bool
        Which prediction rows have ``score >= conf``.
    """

    summary: dict
    per_class: pd.DataFrame
    curve: pd.DataFrame
    curves: dict = field(default_factory=dict)
    per_frame: pd.DataFrame | None = None
    matching: Matching | None = None
    kept: np.ndarray | None = None


def evaluate_detections(
    pred: pd.DataFrame,
    gt: pd.DataFrame,
    *,
    metric: str = "iou",
    threshold: float = 0.15,
    conf: float = 0.25,
    ap_method: str = "coco",
    by_class: bool = True,
    n_frames: int | None = None,
) -> DetectionResult:
    """Full detection evaluation: per-class AP, mean AP, counts at ``conf``, PR curves.

    Parameters
    ----------
    pred, gt : DataFrame
        Predictions (``score`` optional) and ground truth, same frame ids.
    metric : {"iou", "distance"}
        Match by IoU (>= ``threshold``) or centre distance in pixels (<= ``threshold``).
    threshold : float
        IoU cut-off (default 0.15) or maximum centre distance.
    conf : float
        Confidence threshold for the counts.
    ap_method : {"coco", "continuous", "voc11"}
        See :func:`average_precision`.
    by_class : bool
        Match within classes (class-agnostic when false: everything is class 0).
    n_frames : int, optional
        Number of frames for the per-frame table (default: highest frame id + 1).

    Returns
    -------
    DetectionResult
    """
    if ap_method not in AP_METHODS:
        raise ParameterError(f"ap method must be one of {AP_METHODS}, got {ap_method!r}")
    if not np.isfinite(conf):
        raise ParameterError(f"confidence threshold must be a number, got {conf}")
    _validate(pred, gt, metric)
    pred = pred.reset_index(drop=True)
    gt = gt.reset_index(drop=True)
    if not by_class or "class" not in pred.columns or "class" not in gt.columns:
        pred = pred.assign(**{"class": np.zeros(len(pred), np.int64)})
        gt = gt.assign(**{"class": np.zeros(len(gt), np.int64)})
    s = _scores(pred)
    pcls = pred["class"].to_numpy(np.int64)
    gcls = gt["class"].to_numpy(np.int64)

    # score-order matching for curves and AP
    ms = match_detections(pred, gt, metric=metric, threshold=threshold, order="score", by_class=True)
    order = np.argsort(-s, kind="stable")
    tp_sorted = (ms.pred_to_gt >= 0)[order]
    s_sorted = s[order]
    c_sorted = pcls[order]
    curve = _curve_from_flags(s_sorted, tp_sorted, len(gt))

    # quality-order matching at the confidence threshold for counts
    kept = s >= conf
    mq = match_detections(pred[kept], gt, metric=metric, threshold=threshold, order="quality", by_class=True)
    kept_cls = pcls[kept]
    kept_tp = mq.pred_to_gt >= 0

    rows, curves = [], {}
    for c in np.union1d(np.unique(pcls), np.unique(gcls)).tolist():
        sel = c_sorted == c
        n_gt_c = int((gcls == c).sum())
        flags = tp_sorted[sel]
        ctp = np.cumsum(flags)
        rc = ratio(ctp, n_gt_c) if n_gt_c else np.zeros(len(flags))
        pr = ratio(ctp, np.arange(1, len(flags) + 1))
        ap = average_precision(rc, pr, ap_method) if n_gt_c else float("nan")
        curves[c] = _curve_from_flags(s_sorted[sel], flags, n_gt_c)
        f1_peak, t_peak = peak_f1(curves[c])
        tp = int(kept_tp[kept_cls == c].sum())
        fp = int((kept_cls == c).sum()) - tp
        fn = n_gt_c - tp
        rows.append({"class": c, "n_gt": n_gt_c, "n_pred": int((pcls == c).sum()), "ap": ap,
                     "tp": tp, "fp": fp, "fn": fn, **prf(tp, fp, fn),
                     "peak_f1": f1_peak, "peak_f1_threshold": t_peak})
    per_class = pd.DataFrame(rows, columns=["class", "n_gt", "n_pred", "ap", "tp", "fp", "fn", "precision",
                                            "recall", "f1", "peak_f1", "peak_f1_threshold"]).set_index("class")
    aps = per_class["ap"].to_numpy(np.float64)
    mean_ap = float(np.nanmean(aps)) if np.isfinite(aps).any() else float("nan")
    f1_peak, t_peak = peak_f1(curve)
    summary = {
        "mAP": mean_ap,
        "tp": mq.tp, "fp": mq.fp, "fn": mq.fn, **prf(mq.tp, mq.fp, mq.fn),
        "peak_f1": f1_peak, "peak_f1_threshold": t_peak,
        "n_gt": len(gt), "n_pred": len(pred), "n_pred_kept": int(kept.sum()),
        "conf": float(conf), "metric": metric, "threshold": float(threshold), "ap_method": ap_method,
    }
    per_frame = _per_frame(pred[kept], gt, mq, n_frames)
    return DetectionResult(summary, per_class, curve, curves, per_frame, mq, kept)


def _per_frame(pred_kept: pd.DataFrame, gt: pd.DataFrame, m: Matching, n_frames: int | None) -> pd.DataFrame:
    ps = pred_kept["sample"].to_numpy(np.int64)
    gs = gt["sample"].to_numpy(np.int64)
    n = int(max(ps.max(initial=-1), gs.max(initial=-1)) + 1) if n_frames is None else int(n_frames)
    n_pred = np.bincount(ps, minlength=n)[:n]
    n_gt = np.bincount(gs, minlength=n)[:n]
    tp = np.bincount(ps[m.pred_to_gt >= 0], minlength=n)[:n]
    return pd.DataFrame({"sample": np.arange(n), "n_gt": n_gt, "n_pred": n_pred, "tp": tp,
                         "fp": n_pred - tp, "fn": n_gt - tp})
