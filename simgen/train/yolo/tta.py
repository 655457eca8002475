"""Test-time augmentation by flips: the image seen four ways, the boxes fused by weighted boxes fusion.

A defect is a defect under a mirror; a background blob the detector half-believes in often is not
seen the same way twice.  :func:`flip_views` runs a detector on the image, its left-right, up-down
and both-ways mirrors and maps the boxes back; :func:`fuse_views` merges the four box sets with
weighted boxes fusion (ensemble-boxes, Solovyev et al. 2021: clusters of IoU ≥ ``iou``, a
score-weighted mean box, the score averaged over the views — a box seen in one view of four keeps
a quarter of its score).  :class:`~simgen.train.yolo.predict.YoloDetector` does this with
``tta=True``; training decides whether it helps on its validation tiles (``YoloConfig.tta``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from simgen.errors import ParameterError

__all__ = ["FLIPS", "flip_image", "unflip_boxes", "flip_views", "fuse_views"]

#: ``(left-right, up-down)`` mirror of each view; the first is the image itself.
FLIPS = ((False, False), (True, False), (False, True), (True, True))

_XYXY = ["x0", "y0", "x1", "y1"]


def flip_image(image: np.ndarray, lr: bool, ud: bool) -> np.ndarray:
    """``image`` mirrored left-right and/or up-down (a contiguous copy when mirrored)."""
    view = image[::-1] if ud else image
    return np.ascontiguousarray(view[:, ::-1] if lr else view)


def unflip_boxes(boxes: pd.DataFrame, lr: bool, ud: bool, shape: tuple[int, int]) -> pd.DataFrame:
    """Boxes found on :func:`flip_image` ``(image, lr, ud)``, mapped back to ``image`` (shape ``(H, W)``)."""
    out = boxes.copy()
    h, w = shape[:2]
    for flipped, a, b, size in ((lr, "x0", "x1", w), (ud, "y0", "y1", h)):
        if flipped:
            lo, hi = out[a].to_numpy(np.float64), out[b].to_numpy(np.float64)
            out[a], out[b] = (size - hi).astype(np.float32), (size - lo).astype(np.float32)
    return out


def flip_views(detect: Callable[[np.ndarray], pd.DataFrame], image: np.ndarray) -> list[pd.DataFrame]:
    """Boxes of ``detect`` on each view of :data:`FLIPS` of ``image`` (H, W), in ``image``'s pixels."""
    return [unflip_boxes(detect(flip_image(image, lr, ud)), lr, ud, image.shape) for lr, ud in FLIPS]


def fuse_views(views: list[pd.DataFrame], shape: tuple[int, int], *, iou: float = 0.55,
               weights: list[float] | None = None) -> pd.DataFrame:
    """One box table from several views of one image (weighted boxes fusion, scores averaged over views).

    Parameters
    ----------
    views : list of DataFrame
        ``x0, y0, x1, y1, class, score`` per view, in the image's pixels.
    shape : (H, W)
        Image size (WBF works in [0, 1] coordinates).
    iou : float
        Boxes of one class overlapping a cluster's fused box by at least this IoU join it.
    weights : list of float, optional
        Weight of each view in the fused box and score (default: equal); all > 0.

    Returns
    -------
    DataFrame ``x0, y0, x1, y1, class, score`` (float32 boxes and scores, int16 classes), by
    decreasing score.
    """
    from ensemble_boxes import weighted_boxes_fusion

    if not views:
        raise ParameterError("fuse_views needs at least one view")
    if not 0 < iou <= 1:
        raise ParameterError(f"iou must be in (0, 1], got {iou}")
    if weights is not None and (len(weights) != len(views) or not all(np.isfinite(v) and v > 0 for v in weights)):
        raise ParameterError(f"fuse_views needs one positive weight per view, got {weights}")
    h, w = shape
    norm = np.array([w, h, w, h], np.float64)
    boxes = [np.clip(v[_XYXY].to_numpy(np.float64) / norm, 0.0, 1.0) for v in views]
    if not any(len(b) for b in boxes):
        return pd.DataFrame({c: np.zeros(0, np.int16 if c == "class" else np.float32)
                             for c in [*_XYXY, "class", "score"]})
    fused, scores, labels = weighted_boxes_fusion(
        boxes, [v["score"].to_numpy(np.float64) for v in views], [v["class"].to_numpy(np.float64) for v in views],
        weights=None if weights is None else [float(v) for v in weights], iou_thr=float(iou), skip_box_thr=0.0,
        conf_type="avg")
    fused = fused * norm
    order = np.argsort(-scores, kind="stable")
    return pd.DataFrame({"x0": fused[order, 0].astype(np.float32), "y0": fused[order, 1].astype(np.float32),
                         "x1": fused[order, 2].astype(np.float32), "y1": fused[order, 3].astype(np.float32),
                         "class": labels[order].astype(np.int16), "score": scores[order].astype(np.float32)})
