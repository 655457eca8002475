"""Detection scores of the experiments: P/R/F1 at IoU 0.15, AP, peak F1, per image and pooled over folds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from simgen.evaluate.detection import evaluate_detections

__all__ = ["IOU", "score_predictions", "public", "per_image_scores", "loo_threshold_scores", "pooled_scores",
           "pr_curve", "relative_drop"]

#: IoU cut-off of every experiment score (greedy matching): annotators draw loose boxes round small defects.
IOU = 0.15


def score_predictions(pred: pd.DataFrame, gt: pd.DataFrame, conf: float, n_frames: int, *,
                      metric: str = "iou", threshold: float = IOU) -> dict:
    """P/R/F1 at ``conf``, AP and peak F1 (class-agnostic and per class), matched at IoU 0.15
    (or ``metric="distance"``: centres within ``threshold`` px).

    The PR curve rides along under the private key ``_curve`` (see :func:`public`).
    """
    res = evaluate_detections(pred, gt, metric=metric, threshold=threshold, conf=float(conf), n_frames=n_frames)
    s = res.summary
    out = {k: _finite(s[k]) for k in ("precision", "recall", "f1", "mAP", "peak_f1", "peak_f1_threshold")}
    out.update(tp=int(s["tp"]), fp=int(s["fp"]), fn=int(s["fn"]), n_gt=int(s["n_gt"]), conf=float(conf))
    out["ap"] = out.pop("mAP")
    out["per_class"] = {str(c): {k: _finite(v) for k, v in row.items()} for c, row in res.per_class.iterrows()}
    out["_curve"] = res.curve
    return out


def public(scores: dict) -> dict:
    """``scores`` without its private (``_``-prefixed) entries, for reports."""
    return {k: v for k, v in scores.items() if not k.startswith("_")}


def pr_curve(pred: pd.DataFrame, gt: pd.DataFrame, n_frames: int) -> pd.DataFrame:
    return evaluate_detections(pred, gt, threshold=IOU, conf=0.25, n_frames=n_frames).curve


def per_image_scores(pred: pd.DataFrame, gt: pd.DataFrame, conf: float, names: list[str]) -> list[dict]:
    """P/R/F1 of every image (``sample`` = index into ``names``)."""
    rows = []
    for k, name in enumerate(names):
        s = score_predictions(pred[pred["sample"] == k].assign(sample=0), gt[gt["sample"] == k].assign(sample=0),
                              conf, 1)
        rows.append({"image": name, "n_gt": s["n_gt"], "precision": s["precision"], "recall": s["recall"],
                     "f1": s["f1"]})
    return rows


def loo_threshold_scores(pred: pd.DataFrame, gt: pd.DataFrame, n: int) -> dict:
    """P/R/F1 with each image's threshold chosen on the *other* images' labels (as the LoG baseline's).

    The weights stay synthetic-only; only the operating point is calibrated on real labels,
    which makes the F1 comparable with the cross-validated LoG baseline.
    """
    kept, thresholds = [], []
    for k in range(n):
        others_p, others_g = pred[pred["sample"] != k], gt[gt["sample"] != k]
        res = evaluate_detections(others_p, others_g, threshold=IOU, conf=0.5, n_frames=n)
        t = float(res.summary["peak_f1_threshold"])
        t = t if np.isfinite(t) else 0.25
        thresholds.append(t)
        p = pred[pred["sample"] == k]
        kept.append(p[p["score"] >= t])
    out = score_predictions(pd.concat(kept, ignore_index=True), gt, 0.0, n)
    full = score_predictions(pred, gt, 0.0, n)
    return {**{k: out[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn", "n_gt")},
            "ap": full["ap"], "peak_f1": full["peak_f1"], "thresholds": thresholds,
            "scheme": "leave-one-image-out threshold"}


def pooled_scores(parts: list[tuple[pd.DataFrame, pd.DataFrame]], gt: pd.DataFrame, n: int) -> dict:
    """Scores of held-out predictions of several folds, ``parts = [(raw, thresholded), ...]``:
    P/R/F1 from each fold's thresholded predictions, AP and peak F1 from the pooled raw scores."""
    raw = pd.concat([p for p, _ in parts], ignore_index=True)
    kept = pd.concat([k for _, k in parts], ignore_index=True)
    s_raw = score_predictions(raw, gt, 0.0, n)
    s_kept = score_predictions(kept, gt, 0.0, n)
    out = dict(s_raw)
    for k in ("precision", "recall", "f1", "tp", "fp", "fn"):
        out[k] = s_kept[k]
    out["conf"] = None
    return out


def relative_drop(clean, noisy):
    """``1 - noisy / clean`` (``None`` when either is missing or ``clean`` is 0)."""
    if clean is None or noisy is None or clean <= 0:
        return None
    return float(1 - noisy / clean)


def _finite(v):
    try:
        v = float(v)
    except (TypeError, ValueError):
        return v
    return v if math.isfinite(v) else None
