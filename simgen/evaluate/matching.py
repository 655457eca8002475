"""One-to-one matching of predictions to ground truth (boxes or points).

Everything here works on plain arrays and on DataFrames with the schema's
column names (``sample, x0, y0, x1, y1, class [, score]`` for boxes, ``sample,
x, y`` for points).  Matching is done per sample (frame) and, by default, per
class; a prediction is matched to at most one ground-truth object and vice
versa.

Two greedy orders are provided:

``order="quality"``
    All candidate pairs (IoU >= cut-off, or centre distance <= cut-off) of a frame
    are sorted by quality (highest IoU / smallest distance first) and accepted
    greedily when both partners are still free.  This is the matching used for
    counts at a fixed confidence threshold.
``order="score"``
    Predictions are visited in order of decreasing confidence; each takes the
    best still-free ground-truth partner (COCO / PASCAL VOC convention).  The
    matching of a prediction does not depend on lower-scored predictions, so a
    precision-recall curve computed from one such matching is consistent at every
    threshold.  Used for PR curves and AP.

Coordinates follow the simgen convention (continuous pixel coordinates, no
``+1`` in widths): a box ``(x0, y0, x1, y1)`` has area ``(x1 - x0) * (y1 - y0)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from simgen.errors import DataError, ParameterError

__all__ = [
    "BOX_COLUMNS",
    "box_iou",
    "pairwise_distance",
    "box_centres",
    "box_side",
    "greedy_assign",
    "candidate_pairs",
    "Matching",
    "match_detections",
    "check_detections",
]

BOX_COLUMNS = ["x0", "y0", "x1", "y1"]


# -- geometry on arrays ------------------------------------------------------
def box_iou(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Intersection over union of every box in ``a`` with every box in ``b``.

    Parameters
    ----------
    a : (N, 4) array_like
        Boxes ``(x0, y0, x1, y1)``.
    b : (M, 4) array_like
        Boxes ``(x0, y0, x1, y1)``.

    Returns
    -------
    iou : (N, M) ndarray of float64
        IoU in [0, 1]; pairs whose union is empty (two zero-area boxes) get 0.

    Examples
    --------
    >>> box_iou([[0, 0, 2, 2]], [[1, 0, 3, 2], [5, 5, 6, 6]])
    array([[0.33333333, 0.        ]])
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0.0, None) * np.clip(ih, 0.0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def pairwise_distance(a: ArrayLike, b: ArrayLike) -> np.ndarray:
    """Euclidean distance between every point of ``a`` (N, 2) and of ``b`` (M, 2)."""
    a = np.asarray(a, np.float64).reshape(-1, 2)
    b = np.asarray(b, np.float64).reshape(-1, 2)
    d = a[:, None, :] - b[None, :, :]
    return np.sqrt(np.einsum("ijk,ijk->ij", d, d))


def box_centres(boxes: ArrayLike) -> np.ndarray:
    """Centres ``(x, y)`` of boxes ``(x0, y0, x1, y1)``; returns an (N, 2) array."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.column_stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2])


def box_side(boxes: ArrayLike) -> np.ndarray:
    """Side ``√(w h)`` (px) of boxes ``(x0, y0, x1, y1)``, one size per box whatever its aspect;
    returns an (N,) array (degenerate boxes: 0)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.sqrt(np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None))


# -- greedy assignment over candidate pairs -----------------------------------
def greedy_assign(rows: ArrayLike, cols: ArrayLike, n_rows: int | None = None,
                  n_cols: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Accept candidate pairs in the given order when both ends are still free.

    Parameters
    ----------
    rows, cols : 1-D int arrays
        Candidate pairs, already sorted best first.
    n_rows, n_cols : int, optional
        Sizes of the two sides (default: ``max + 1``).

    Returns
    -------
    row_match : (n_rows,) int64 array
        Column matched to each row, ``-1`` if none.
    col_match : (n_cols,) int64 array
        Row matched to each column, ``-1`` if none.

    Examples
    --------
    >>> greedy_assign([0, 1, 1], [0, 0, 1])
    (array([0, 1]), array([0, 1]))
    """
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    n_rows = int(rows.max(initial=-1)) + 1 if n_rows is None else int(n_rows)
    n_cols = int(cols.max(initial=-1)) + 1 if n_cols is None else int(n_cols)
    row_match = np.full(n_rows, -1, np.int64)
    col_match = np.full(n_cols, -1, np.int64)
    if len(rows) == 0:
        return row_match, col_match
    # Fast path: pairs whose row and column occur in no other candidate pair are
    # accepted whatever the order; only the contested remainder needs the loop.
    row_deg = np.bincount(rows, minlength=n_rows)
    col_deg = np.bincount(cols, minlength=n_cols)
    lone = (row_deg[rows] == 1) & (col_deg[cols] == 1)
    row_match[rows[lone]] = cols[lone]
    col_match[cols[lone]] = rows[lone]
    rm = row_match.tolist()
    cm = col_match.tolist()
    for r, c in zip(rows[~lone].tolist(), cols[~lone].tolist()):
        if rm[r] < 0 and cm[c] < 0:
            rm[r] = c
            cm[c] = r
    return np.asarray(rm, np.int64), np.asarray(cm, np.int64)


# -- DataFrame level -----------------------------------------------------------
def check_detections(df: pd.DataFrame, what: str, *, boxes: bool, require_score: bool = False) -> None:
    """Validate a detection table; raise :class:`DataError` with a one-line reason.

    Checks: required columns, finite coordinates, non-negative box sizes, finite
    scores, integer frame ids.
    """
    if not isinstance(df, pd.DataFrame):
        raise ParameterError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    cols = ["sample", *(BOX_COLUMNS if boxes else ["x", "y"])]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{what}: missing column(s) {missing} (has {list(df.columns)})")
    if require_score and "score" not in df.columns:
        raise DataError(f"{what}: no 'score' column")
    if len(df) == 0:
        return
    sample = df["sample"].to_numpy()
    if sample.dtype.kind == "f":
        if not np.all(np.isfinite(sample)) or np.any(sample != np.round(sample)):
            raise DataError(f"{what}: frame ids ('sample') must be integers")
    elif sample.dtype.kind not in "iu":
        raise DataError(f"{what}: frame ids ('sample') must be integers, got {sample.dtype}")
    if np.any(sample < 0):
        raise DataError(f"{what}: negative frame ids")
    xy = df[cols[1:]].to_numpy(np.float64)
    if not np.all(np.isfinite(xy)):
        raise DataError(f"{what}: {int((~np.isfinite(xy)).any(axis=1).sum())} row(s) with NaN/inf coordinates")
    if boxes:
        bad = (xy[:, 2] < xy[:, 0]) | (xy[:, 3] < xy[:, 1])
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{what}: {int(bad.sum())} box(es) with negative size (first: frame {int(sample[i])}, "
                f"x0,y0,x1,y1 = {', '.join(f'{v:g}' for v in xy[i])})"
            )
    if "score" in df.columns:
        s = df["score"].to_numpy(np.float64)
        if not np.all(np.isfinite(s)):
            raise DataError(f"{what}: {int((~np.isfinite(s)).sum())} score(s) are NaN or infinite")


def _frame_slices(samples: np.ndarray, frames: np.ndarray):
    """Row ranges of each frame in a table sorted by sample."""
    lo = np.searchsorted(samples, frames, side="left")
    hi = np.searchsorted(samples, frames, side="right")
    return lo, hi


def _positions(df: pd.DataFrame, metric: str) -> np.ndarray:
    if metric == "iou":
        return df[BOX_COLUMNS].to_numpy(np.float64)
    if "x" in df.columns and "y" in df.columns:
        return df[["x", "y"]].to_numpy(np.float64)
    return box_centres(df[BOX_COLUMNS].to_numpy(np.float64))


def candidate_pairs(
    pred: pd.DataFrame,
    gt: pd.DataFrame,
    *,
    metric: str = "iou",
    threshold: float = 0.15,
    by_class: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All prediction/ground-truth pairs of the same frame (and class) that may match.

    Parameters
    ----------
    pred, gt : DataFrame
        Tables with ``sample`` and box columns (``metric="iou"``) or ``x, y`` /
        box columns (``metric="distance"``; box centres are used when ``x, y`` are absent).
    metric : {"iou", "distance"}
        Pair quality: IoU (pair allowed when IoU >= ``threshold``) or centre
        distance in pixels (allowed when distance <= ``threshold``).
    threshold : float
        IoU cut-off or maximum distance.
    by_class : bool
        Only pair objects of the same ``class`` (when both tables have one).

    Returns
    -------
    p, g : int64 arrays
        Row positions (``0..len-1``) into ``pred`` and ``gt``.
    value : float64 array
        IoU or distance of each pair.
    """
    if metric not in ("iou", "distance"):
        raise ParameterError(f"metric must be 'iou' or 'distance', got {metric!r}")
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if len(pred) == 0 or len(gt) == 0:
        return empty
    ps = pred["sample"].to_numpy(np.int64)
    gs = gt["sample"].to_numpy(np.int64)
    p_order = np.argsort(ps, kind="stable")
    g_order = np.argsort(gs, kind="stable")
    ps, gs = ps[p_order], gs[g_order]
    ppos = _positions(pred, metric)[p_order]
    gpos = _positions(gt, metric)[g_order]
    use_class = by_class and "class" in pred.columns and "class" in gt.columns
    if use_class:
        pc = pred["class"].to_numpy(np.int64)[p_order]
        gc = gt["class"].to_numpy(np.int64)[g_order]
    frames = np.intersect1d(ps, gs)
    plo, phi = _frame_slices(ps, frames)
    glo, ghi = _frame_slices(gs, frames)
    out_p, out_g, out_v = [], [], []
    for a, b, c, d in zip(plo.tolist(), phi.tolist(), glo.tolist(), ghi.tolist()):
        if metric == "iou":
            m = box_iou(ppos[a:b], gpos[c:d])
            ok = m >= threshold
        else:
            m = pairwise_distance(ppos[a:b], gpos[c:d])
            ok = m <= threshold
        if use_class:
            ok &= pc[a:b, None] == gc[None, c:d]
        i, j = np.nonzero(ok)
        out_p.append(i + a)
        out_g.append(j + c)
        out_v.append(m[i, j])
    if not out_p:
        return empty
    p = p_order[np.concatenate(out_p)]
    g = g_order[np.concatenate(out_g)]
    return p.astype(np.int64), g.astype(np.int64), np.concatenate(out_v)


@dataclass
class Matching:
    """Result of :func:`match_detections`.

    Attributes
    ----------
    pred_to_gt : (n_pred,) int64
        Row position of the matched ground-truth object, ``-1`` for false positives.
    gt_to_pred : (n_gt,) int64
        Row position of the matched prediction, ``-1`` for misses.
    value : (n_pred,) float64
        IoU or distance of each prediction's match (NaN when unmatched).
    metric : str
        ``"iou"`` or ``"distance"``.
    """

    pred_to_gt: np.ndarray
    gt_to_pred: np.ndarray
    value: np.ndarray
    metric: str

    @property
    def tp(self) -> int:
        return int((self.pred_to_gt >= 0).sum())

    @property
    def fp(self) -> int:
        return int((self.pred_to_gt < 0).sum())

    @property
    def fn(self) -> int:
        return int((self.gt_to_pred < 0).sum())


def match_detections(
    pred: pd.DataFrame,
    gt: pd.DataFrame,
    *,
    metric: str = "iou",
    threshold: float = 0.15,
    order: str = "quality",
    by_class: bool = True,
) -> Matching:
    """Greedy one-to-one matching of predictions to ground truth, frame by frame.

    Parameters
    ----------
    pred, gt : DataFrame
        Detection tables (see :func:`candidate_pairs`).  ``pred`` needs a
        ``score`` column for ``order="score"`` (missing scores count as 1).
    metric : {"iou", "distance"}
        Match by box IoU (>= ``threshold``) or centre distance in pixels (<= ``threshold``).
    threshold : float
        IoU cut-off (default 0.15) or maximum centre distance.
    order : {"quality", "score"}
        ``"quality"``: best pairs first (highest IoU / smallest distance);
        ``"score"``: predictions by decreasing confidence, each taking its best
        free partner (COCO convention; ties broken like pycocotools).
    by_class : bool
        Match only within the same class.

    Returns
    -------
    Matching

    Examples
    --------
    >>> import pandas as pd
    >>> gt = pd.DataFrame({"sample": [0], "x0": [0.], "y0": [0.], "x1": [10.], "y1": [10.], "class": [0]})
    >>> pred = gt.assign(x0=[2.])
    >>> m = match_detections(pred, gt, threshold=0.5)
    >>> m.tp, m.fp, m.fn, round(float(m.value[0]), 2)
    (1, 0, 0, 0.8)
    """
    if order not in ("quality", "score"):
        raise ParameterError(f"order must be 'quality' or 'score', got {order!r}")
    if metric == "iou" and not 0.0 < threshold <= 1.0:
        raise ParameterError(f"IoU cut-off must be in (0, 1], got {threshold}")
    if metric == "distance" and not threshold > 0:
        raise ParameterError(f"maximum distance must be > 0 pixels, got {threshold}")
    n_pred, n_gt = len(pred), len(gt)
    p, g, v = candidate_pairs(pred, gt, metric=metric, threshold=threshold, by_class=by_class)
    sign = -1.0 if metric == "iou" else 1.0  # sort key: smaller is better
    if order == "quality":
        # best quality first; ties by prediction then ground-truth row (deterministic)
        idx = np.lexsort((g, p, sign * v))
    else:
        score = pred["score"].to_numpy(np.float64) if "score" in pred.columns else np.ones(n_pred)
        rank = np.empty(n_pred, np.int64)
        rank[np.argsort(-score, kind="stable")] = np.arange(n_pred)
        # pycocotools: for equal IoU the later ground-truth object wins
        idx = np.lexsort((-g, sign * v, rank[p]))
    pred_to_gt, gt_to_pred = greedy_assign(p[idx], g[idx], n_pred, n_gt)
    value = np.full(n_pred, np.nan)
    accepted = pred_to_gt[p] == g
    value[p[accepted]] = v[accepted]
    return Matching(pred_to_gt, gt_to_pred, value, metric)
