"""Overlay images: what a detection score means, drawn on each image.

One RGB PNG per ground-truth image with the outcome of the matching that gives the report's
counts (IoU or centre-distance cut-off, predictions with ``score >= conf``, greedy by
quality; :func:`~simgen.evaluate.detection.evaluate_detections`):

==========  ===========  ==========================================================
colour      RGB          what
==========  ===========  ==========================================================
green       (0, 220, 0)  true positive: a prediction matched to a ground-truth object
red         (255, 0, 0)  false positive: a prediction matched to nothing
yellow      (255, 230, 0)  false negative: a ground-truth object no prediction matched
==========  ===========  ==========================================================

Boxes are outlined one pixel outside the box (box ``(x0, y0, x1, y1)`` covers pixel columns
``floor(x0) .. ceil(x1) - 1``), thicker on large images; points (distance matching) are circles
of radius ``max_distance``.  Drawing order: misses, then false positives, then true positives
on top.  Predictions below ``conf`` are not drawn.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.datasets.imageio import write_image
from simgen.datasets.normalize import to_uint8
from simgen.evaluate.matching import BOX_COLUMNS, Matching

__all__ = ["COLOURS", "draw_overlay", "overlay_names", "write_overlays"]

#: Outline colours (RGB uint8) of true positives, false positives and false negatives.
COLOURS = {"tp": (0, 220, 0), "fp": (255, 0, 0), "fn": (255, 230, 0)}


def _outline(rgb: np.ndarray, rows: pd.DataFrame, colour, *, boxes: bool, radius: float, width: int) -> None:
    from skimage.draw import circle_perimeter, rectangle_perimeter

    h, w = rgb.shape[:2]
    if boxes:
        xy = rows[BOX_COLUMNS].to_numpy(np.float64)
        for x0, y0, x1, y1 in xy:
            c0, r0 = int(np.floor(x0)), int(np.floor(y0))
            c1, r1 = max(int(np.ceil(x1)) - 1, c0), max(int(np.ceil(y1)) - 1, r0)  # last pixel inside
            for k in range(width):
                rr, cc = rectangle_perimeter((r0 - k, c0 - k), (r1 + k, c1 + k), shape=(h, w), clip=True)
                rgb[rr, cc] = colour
    else:
        rad = max(2, int(round(radius)))
        for x, y in rows[["x", "y"]].to_numpy(np.float64):
            for k in range(width):
                rr, cc = circle_perimeter(int(np.floor(y)), int(np.floor(x)), rad + k, shape=(h, w))
                rgb[rr, cc] = colour


def draw_overlay(image: np.ndarray, pred: pd.DataFrame, gt: pd.DataFrame, pred_matched: np.ndarray,
                 gt_matched: np.ndarray, *, boxes: bool = True, radius: float = 5.0) -> np.ndarray:
    """One image with its predictions and ground truth outlined in the TP / FP / FN colours.

    Parameters
    ----------
    image : (H, W) float array in [0, 1]
    pred, gt : DataFrame
        This image's predictions (already thresholded at ``conf``) and ground truth:
        ``x0, y0, x1, y1`` (``boxes=True``) or ``x, y`` in pixels.
    pred_matched : (len(pred),) bool
        Which predictions are true positives.
    gt_matched : (len(gt),) bool
        Which ground-truth objects were found.
    boxes : bool
        Outline boxes (else circles around points).
    radius : float
        Circle radius in pixels for points.

    Returns
    -------
    (H, W, 3) uint8 RGB image.
    """
    grey = to_uint8(image)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    width = max(1, int(round(max(grey.shape) / 768)))
    pred_matched = np.asarray(pred_matched, bool)
    gt_matched = np.asarray(gt_matched, bool)
    _outline(rgb, gt[~gt_matched], COLOURS["fn"], boxes=boxes, radius=radius, width=width)
    _outline(rgb, pred[~pred_matched], COLOURS["fp"], boxes=boxes, radius=radius, width=width)
    _outline(rgb, pred[pred_matched], COLOURS["tp"], boxes=boxes, radius=radius, width=width)
    return rgb


def overlay_names(names: Sequence[str]) -> list[str]:
    """PNG file names for frames: the frame name made file-safe, index-prefixed when needed.

    Names are kept when they are unique and safe (letters, digits, ``._-``); otherwise every
    file is ``{index:06d}_{safe name}.png`` so that no two frames share a file.
    """
    safe = [re.sub(r"[^A-Za-z0-9._-]", "_", str(n)).strip(".") or "frame" for n in names]
    if len(set(safe)) == len(safe) and all(s == str(n) for s, n in zip(safe, names)):
        return [f"{s}.png" for s in safe]
    return [f"{i:06d}_{s}.png" for i, s in enumerate(safe)]


def write_overlays(folder: Path, image: Callable[[int], np.ndarray], names: Sequence[str], pred_kept: pd.DataFrame,
                   gt: pd.DataFrame, matching: Matching, *, boxes: bool, radius: float) -> int:
    """Write one overlay PNG per frame into an existing (temporary) folder.

    Parameters
    ----------
    folder : Path
        Where the PNGs go (the caller makes it atomic).
    image : callable
        ``image(i) -> float32 (H, W)`` of frame ``i``.
    names : sequence of str
        Frame names (one per frame, see :func:`overlay_names`).
    pred_kept : DataFrame
        Predictions with ``score >= conf``, in the row order of ``matching``; column ``sample``.
    gt : DataFrame
        Ground truth, in the row order of ``matching``; column ``sample``.
    matching : Matching
        ``pred_to_gt`` (per ``pred_kept`` row) and ``gt_to_pred`` (per ``gt`` row).
    boxes, radius
        See :func:`draw_overlay`.

    Returns
    -------
    int
        Number of files written.
    """
    ps = pred_kept["sample"].to_numpy(np.int64)
    gs = gt["sample"].to_numpy(np.int64)
    tp = np.asarray(matching.pred_to_gt) >= 0
    found = np.asarray(matching.gt_to_pred) >= 0
    files = overlay_names(names)
    for i, fname in enumerate(files):
        p, g = ps == i, gs == i
        rgb = draw_overlay(image(i), pred_kept[p], gt[g], tp[p], found[g], boxes=boxes, radius=radius)
        write_image(folder / fname, rgb)
    return len(files)
