"""Tiling large micrographs for detectors, and merging tile predictions across seams.

Real micrographs are large (up to 2048²) and their defects small (4-50 px), so
detectors see them as overlapping square tiles at native (or a fixed rescaled)
resolution instead of one image shrunk to the network size, which would make
black dots vanish.

* :func:`tile_windows` lays out tiles of side ``tile`` with at least ``overlap``
  pixels shared between neighbours; the last row/column is aligned with the image
  edge, so every tile is full size when the image is at least one tile big.
* :func:`crop_boxes` cuts the annotation of one tile out of the image's boxes
  (boxes clipped to the tile, kept when enough of them is inside).
* :func:`merge_tiles` turns per-tile predictions into image predictions: each tile
  keeps only detections whose centre lies in its *core* (the tile minus half the
  overlap on sides shared with a neighbour), which removes the truncated copies of
  objects cut by a seam, then class-wise non-maximum suppression across all tiles
  removes the remaining duplicates near seams.

With ``overlap`` at least the largest object size, every object lies wholly
inside the tile whose core holds its centre.

Box records follow the simgen convention (``x0, y0, x1, y1, class [, score]`` in
continuous pixel coordinates, origin at the top-left image corner).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from simgen.errors import ParameterError

__all__ = ["Window", "tile_windows", "crop_boxes", "merge_tiles", "nms", "suppress_nested", "suppress_nested_boxes",
           "pad_to"]


@dataclass(frozen=True)
class Window:
    """One tile: rows ``y0:y1``, columns ``x0:x1`` and the core region (same frame)."""

    y0: int
    x0: int
    y1: int
    x1: int
    core: tuple[float, float, float, float]  # cx0, cy0, cx1, cy1

    @property
    def shape(self) -> tuple[int, int]:
        return (self.y1 - self.y0, self.x1 - self.x0)

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[self.y0 : self.y1, self.x0 : self.x1]


def _starts(n: int, tile: int, overlap: int) -> list[int]:
    if n <= tile:
        return [0]
    step = tile - overlap
    count = int(np.ceil((n - tile) / step)) + 1
    # spread the tiles evenly so that every overlap is >= the requested one
    return [int(round(i * (n - tile) / (count - 1))) for i in range(count)]


def tile_windows(shape: tuple[int, int], tile: int, overlap: int = 0) -> list[Window]:
    """Square tiles covering an image of ``shape = (H, W)``.

    Parameters
    ----------
    tile : int
        Tile side in pixels.  Images smaller than a tile along an axis get one
        (shorter) tile along that axis.
    overlap : int
        Minimum overlap between neighbouring tiles (0 <= overlap < tile).

    Returns
    -------
    list of :class:`Window`, row-major.  Cores partition the image: every point lies
    in exactly one core (boundaries are half-open ``[c0, c1)``).
    """
    h, w = (int(s) for s in shape)
    tile, overlap = int(tile), int(overlap)
    if tile < 1:
        raise ParameterError(f"tile size must be >= 1 pixel, got {tile}")
    if not 0 <= overlap < tile:
        raise ParameterError(f"tile overlap must be in [0, tile) = [0, {tile}), got {overlap}")
    if h < 1 or w < 1:
        raise ParameterError(f"cannot tile an empty image of shape {shape}")
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)

    def cores(starts, n):
        ends = [min(s + tile, n) for s in starts]
        lo = [0.0] + [(ends[i - 1] + starts[i]) / 2 for i in range(1, len(starts))]
        hi = lo[1:] + [float(n)]
        return list(zip(starts, ends, lo, hi))

    out = []
    for y0, y1, cy0, cy1 in cores(ys, h):
        for x0, x1, cx0, cx1 in cores(xs, w):
            out.append(Window(y0, x0, y1, x1, (cx0, cy0, cx1, cy1)))
    return out


def crop_boxes(boxes: pd.DataFrame, window: Window, min_visible: float = 0.5) -> pd.DataFrame:
    """Boxes of one tile, in tile coordinates.

    Boxes are clipped to the tile; a box is kept when at least ``min_visible`` of its
    area lies inside (and the clipped box is not empty).
    """
    cols = list(boxes.columns)
    if len(boxes) == 0:
        return boxes.iloc[:0].copy()
    b = boxes
    x0, y0, x1, y1 = (b[c].to_numpy(np.float64) for c in ("x0", "y0", "x1", "y1"))
    cx0, cy0 = np.clip(x0, window.x0, window.x1), np.clip(y0, window.y0, window.y1)
    cx1, cy1 = np.clip(x1, window.x0, window.x1), np.clip(y1, window.y0, window.y1)
    area = np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)
    inside = np.maximum(cx1 - cx0, 0) * np.maximum(cy1 - cy0, 0)
    frac = np.divide(inside, area, out=(inside > 0).astype(np.float64), where=area > 0)
    keep = (inside > 0) & (frac >= min_visible - 1e-9)
    out = b.loc[keep].copy()
    out["x0"] = (cx0[keep] - window.x0).astype(np.float32)
    out["x1"] = (cx1[keep] - window.x0).astype(np.float32)
    out["y0"] = (cy0[keep] - window.y0).astype(np.float32)
    out["y1"] = (cy1[keep] - window.y0).astype(np.float32)
    return out[cols].reset_index(drop=True)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression (highest score first).

    Uses ``torchvision.ops.nms`` when available (fast), else a NumPy loop.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    try:
        import torch
        from torchvision.ops import nms as tv_nms

        return tv_nms(torch.tensor(boxes), torch.tensor(scores), float(iou)).numpy().astype(np.int64)
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def overlapping(i, rest, inter):
        union = area[i] + area[rest] - inter
        return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0) > iou

    return _greedy(boxes, scores, overlapping)


def _greedy(boxes: np.ndarray, scores: np.ndarray, overlapping) -> np.ndarray:
    """Greedy suppression, highest score first: ``overlapping(i, rest, intersection)`` says which of
    the remaining boxes ``rest`` the kept box ``i`` removes.  Returns the kept indices."""
    order = np.argsort(-np.asarray(scores, np.float64).reshape(-1), kind="stable")
    keep = []
    while len(order):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])
        ih = np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])
        order = rest[~overlapping(i, rest, np.clip(iw, 0, None) * np.clip(ih, 0, None))]
    return np.asarray(keep, np.int64)


def suppress_nested(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept when every box lying mostly inside a higher-scoring kept box is dropped.

    A box is dropped when its intersection with a kept, higher-scoring box covers at least
    ``threshold`` of the *smaller* of the two areas (intersection over minimum, IoMin).
    IoU-based NMS keeps such pairs — a 12 px box inside a 30 px box has IoU 0.16 — and a
    detector that fires twice on one defect, once tight and once around it with its
    surroundings, produces exactly them (README: a third of the false positives of the
    synthetic-only model on dsva_fecral were boxes around an already detected loop).

    Parameters
    ----------
    boxes : (n, 4) array of ``x0, y0, x1, y1``
    scores : (n,) array
    threshold : float
        IoMin in (0, 1] from which the lower-scoring box of a pair is dropped.

    Returns
    -------
    (k,) int64 indices into ``boxes``, by decreasing score.
    """
    if not 0 < threshold <= 1:
        raise ParameterError(f"nested threshold must be in (0, 1], got {threshold}")
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    area = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)

    def nested(i, rest, inter):
        smaller = np.minimum(area[i], area[rest])
        return np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0) >= threshold

    return _greedy(boxes, scores, nested)


def suppress_nested_boxes(boxes: pd.DataFrame, threshold: float | None, *, agnostic: bool = True) -> pd.DataFrame:
    """:func:`suppress_nested` on a box table (per ``sample`` when it has that column; per class
    unless ``agnostic``).  ``threshold`` ``None`` returns the table unchanged.  Row order is kept."""
    if threshold is None or not len(boxes):
        return boxes
    groups = []
    if "sample" in boxes.columns:
        groups.append("sample")
    if not agnostic and "class" in boxes.columns:
        groups.append("class")
    xyxy = boxes[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    score = boxes["score"].to_numpy(np.float64)
    if groups:
        parts = [np.asarray(idx, np.int64) for idx in boxes.groupby(groups, sort=False).indices.values()]
    else:
        parts = [np.arange(len(boxes))]
    keep = np.zeros(len(boxes), bool)
    for idx in parts:
        keep[idx[suppress_nested(xyxy[idx], score[idx], threshold)]] = True
    return boxes.loc[keep]


def merge_tiles(tile_boxes, windows, iou: float = 0.5, core_only: bool = True,
                agnostic: bool = False) -> pd.DataFrame:
    """Merge per-tile predictions into one image's predictions.

    Parameters
    ----------
    tile_boxes : sequence of DataFrame (or of dict of equal-length arrays)
        Predictions of each tile in *tile* coordinates (``x0, y0, x1, y1, class, score``).
    windows : sequence of :class:`Window`
        The tiles, aligned with ``tile_boxes``.
    iou : float
        NMS IoU across seams (class-wise).  ``>= 1`` disables NMS.
    core_only : bool
        Keep only detections whose centre lies in the tile core.
    agnostic : bool
        Class-agnostic NMS: overlapping boxes of *different* classes suppress each other too
        (the highest score keeps its class), inside a single tile as well as across seams —
        e.g. the +1 and −1 boxes a two-class film model puts on one defect.

    Returns
    -------
    DataFrame in image coordinates, sorted by decreasing score.
    """
    if len(tile_boxes) != len(windows):
        raise ParameterError(f"{len(tile_boxes)} tile predictions for {len(windows)} tiles")
    # numpy throughout, one DataFrame at the end: pandas' per-operation overhead was ~15 % of a
    # tiled 512² frame's detection time on one thread
    tables = [None if df is None else {c: np.asarray(df[c]) for c in df} for df in tile_boxes]
    parts = []
    for table, win in zip(tables, windows):
        if table is None or len(table["score"]) == 0:
            continue
        part = dict(table)
        for c, offset in (("x0", win.x0), ("x1", win.x0), ("y0", win.y0), ("y1", win.y0)):
            part[c] = part[c].astype(np.float32) + np.float32(offset)
        if core_only:
            cx = (part["x0"] + part["x1"]) / 2
            cy = (part["y0"] + part["y1"]) / 2
            c0x, c0y, c1x, c1y = win.core
            inside = (cx >= c0x) & (cx < c1x) & (cy >= c0y) & (cy < c1y)
            part = {c: v[inside] for c, v in part.items()}
        parts.append(part)
    if not parts:
        if tables and tables[0] is not None:  # the columns and dtypes of the first tile
            return pd.DataFrame({c: v[:0] for c, v in tables[0].items()})
        return pd.DataFrame({c: np.zeros(0, np.float32) for c in ["x0", "y0", "x1", "y1", "class", "score"]})
    data = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    boxes = np.stack([data["x0"], data["y0"], data["x1"], data["y1"]], axis=1)
    scores = data["score"]
    keep = np.arange(len(scores))
    if iou < 1 and agnostic and len(keep):
        keep = np.sort(nms(boxes, scores, iou))
    elif iou < 1 and len(parts) > 1 and len(keep):
        classes = data["class"]
        per_class = [np.flatnonzero(classes == c) for c in np.unique(classes)]
        keep = np.sort(np.concatenate([idx[nms(boxes[idx], scores[idx], iou)] for idx in per_class]))
    keep = keep[np.argsort(-scores[keep], kind="stable")]  # decreasing score, ties in tile order
    return pd.DataFrame({c: v[keep] for c, v in data.items()})


def pad_to(image: np.ndarray, shape: tuple[int, int], value: float | None = None) -> np.ndarray:
    """Pad an ``(h, w)`` image at the bottom/right to ``shape`` (default fill: the image mean)."""
    h, w = image.shape[:2]
    H, W = shape
    if h == H and w == W:
        return image
    if h > H or w > W:
        raise ParameterError(f"cannot pad a {h}x{w} image to {H}x{W}")
    fill = float(np.mean(image)) if value is None else value
    out = np.full((H, W, *image.shape[2:]), fill, dtype=image.dtype)
    out[:h, :w] = image
    return out
