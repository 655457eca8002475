"""Detection errors by object size: where a detector's false positives and misses are.

A detector that loses to a baseline usually loses in one size range (noise specks mistaken for
small defects, the smallest defects below what its stride resolves, large background blobs).
:func:`errors_by_size` matches detections to ground truth once (greedy, by score, as AP does)
and counts false positives and misses per bin of the box side ``√(w h)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simgen.errors import ParameterError
from simgen.evaluate.matching import BOX_COLUMNS, box_side, match_detections

__all__ = ["SIZE_BINS", "errors_by_size"]

#: Default bin edges of the box side (px): octave halves from 4 px, open at both ends.
SIZE_BINS = (0.0, 6.0, 8.0, 11.0, 16.0, 22.0, 32.0, 45.0, np.inf)


def errors_by_size(pred: pd.DataFrame, gt: pd.DataFrame, *, conf: float, threshold: float = 0.15,
                   bins=SIZE_BINS, by_class: bool = False) -> pd.DataFrame:
    """False positives and misses per box-side bin at the confidence threshold ``conf``.

    Parameters
    ----------
    pred : DataFrame
        Detections: ``sample, x0, y0, x1, y1, score`` (and ``class`` with ``by_class``), px.
    gt : DataFrame
        Ground truth: ``sample, x0, y0, x1, y1`` (and ``class``), px.
    conf : float
        Detections below this score are dropped before matching.
    threshold : float
        IoU cut-off of a match.
    bins : sequence of float
        Increasing edges of the box side ``√(w h)`` in px (``inf`` allowed).
    by_class : bool
        Match within classes only (default: class-agnostic).

    Returns
    -------
    DataFrame, one row per bin: ``side_lo, side_hi`` (px), ``n_pred``, ``fp`` (detections of that
    size with no partner), ``n_gt``, ``missed`` (true boxes of that size with no partner); predicted
    boxes are binned by their own size, true boxes by theirs.
    """
    edges = np.asarray(bins, float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ParameterError(f"size bins must be at least two increasing edges, got {list(bins)}")
    p = pred[pred["score"] >= conf].reset_index(drop=True)
    g = gt.reset_index(drop=True)
    if not by_class:
        p, g = p.assign(**{"class": 0}), g.assign(**{"class": 0})
    m = match_detections(p, g, metric="iou", threshold=threshold, order="score", by_class=by_class)
    ps, gs = box_side(p[BOX_COLUMNS]), box_side(g[BOX_COLUMNS])
    pbin = np.digitize(ps, edges[1:-1])  # bin k holds edges[k] <= side < edges[k + 1]
    gbin = np.digitize(gs, edges[1:-1])
    k = len(edges) - 1
    out = pd.DataFrame({
        "side_lo": edges[:-1], "side_hi": edges[1:],
        "n_pred": np.bincount(pbin, minlength=k),
        "fp": np.bincount(pbin[m.pred_to_gt < 0], minlength=k),
        "n_gt": np.bincount(gbin, minlength=k),
        "missed": np.bincount(gbin[m.gt_to_pred < 0], minlength=k),
    })
    return out
