"""Are labelled defects still visible after an image was changed (e.g. SDEdit-translated)?

Per labelled box, the contrast-to-noise ratio (CNR) against a ring around it:

    CNR = (mean inside the box - mean of the ring) / std of the ring,

the ring being the box grown by ``max(min_ring, ring_factor · longer side)`` pixels
on every side minus the box itself (clipped to the image).  A label is *visible* when
``|CNR| >= threshold``; it is *kept* by a change when it was visible before and is
visible after with the same sign (a dark defect stays dark).  Pure NumPy.
"""

from __future__ import annotations

import numpy as np

from simgen.errors import ParameterError

__all__ = ["box_cnr", "kept_labels", "label_visibility", "visibility_summary"]


def box_cnr(image: np.ndarray, boxes, *, ring_factor: float = 0.5, min_ring: int = 3) -> np.ndarray:
    """Signed contrast-to-noise ratio of every box against the ring around it.

    Parameters
    ----------
    image : (H, W) array
    boxes : (K, 4) array-like or DataFrame with x0, y0, x1, y1
        Pixel-edge coordinates (pixel ``(r, c)`` covers ``[c, c+1) x [r, r+1)``).
    ring_factor, min_ring : float, int
        Ring width in pixels: ``max(min_ring, ceil(ring_factor · longer box side))``.

    Returns
    -------
    (K,) float64 array; NaN for a box with no pixel inside the image or a flat ring.
    """
    img = np.asarray(image, np.float64)
    if img.ndim != 2:
        raise ParameterError(f"image must be 2-D, got shape {img.shape}")
    if hasattr(boxes, "columns"):
        boxes = boxes[["x0", "y0", "x1", "y1"]].to_numpy(np.float64)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    h, w = img.shape
    out = np.full(len(b), np.nan)
    for k, (x0, y0, x1, y1) in enumerate(b):
        c0, r0 = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        c1, r1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
        if c1 <= c0 or r1 <= r0:
            continue
        g = max(int(min_ring), int(np.ceil(ring_factor * max(c1 - c0, r1 - r0))))
        R0, C0, R1, C1 = max(0, r0 - g), max(0, c0 - g), min(h, r1 + g), min(w, c1 + g)
        outer = img[R0:R1, C0:C1]
        ring = np.ones(outer.shape, bool)
        ring[r0 - R0 : r1 - R0, c0 - C0 : c1 - C0] = False
        if not ring.any():
            continue
        sd = outer[ring].std()
        if sd > 0:
            out[k] = (img[r0:r1, c0:c1].mean() - outer[ring].mean()) / sd
    return out


def visibility_summary(cnr_before, cnr_after, threshold: float = 0.5) -> dict:
    """Summary of per-label CNRs before and after (matching 1-D arrays, see :func:`box_cnr`).

    Returns
    -------
    dict with ``n_labels``, ``threshold``, ``visible_before`` / ``visible_after`` (fractions
    of all labels), ``kept`` (fraction of the labels visible before that are still visible
    after with the same sign; None without any) and ``median_abs_cnr_before`` / ``_after``.
    """
    if not threshold > 0:
        raise ParameterError(f"threshold must be > 0, got {threshold}")
    a, b = np.asarray(cnr_before, np.float64).ravel(), np.asarray(cnr_after, np.float64).ravel()
    if a.shape != b.shape:
        raise ParameterError(f"{len(a)} CNRs before, {len(b)} after")
    n = len(a)
    vis_a, kept = kept_labels(a, b, threshold)
    vis_b = np.abs(b) >= threshold

    def median(x):
        x = np.abs(x[np.isfinite(x)])
        return float(np.median(x)) if len(x) else None

    return {
        "n_labels": n,
        "threshold": float(threshold),
        "visible_before": float(vis_a.mean()) if n else None,
        "visible_after": float(vis_b.mean()) if n else None,
        "kept": float(kept.sum() / vis_a.sum()) if vis_a.any() else None,
        "median_abs_cnr_before": median(a),
        "median_abs_cnr_after": median(b),
    }


def kept_labels(a: np.ndarray, b: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """``(visible before, kept)`` masks of per-label CNRs (NaN compares as not visible)."""
    vis = np.abs(a) >= threshold
    return vis, vis & (np.abs(b) >= threshold) & (np.sign(a) == np.sign(b))


def label_visibility(before, after, boxes, *, threshold: float = 0.5, **ring) -> dict:
    """How many labelled boxes are visible before and after a change of the images.

    Parameters
    ----------
    before, after : sequences of (H, W) arrays
        The same images before and after (same shapes pairwise).
    boxes : sequence of box records
        The labels of each image (see :func:`box_cnr`).
    threshold : float
        ``|CNR|`` at which a label counts as visible.
    **ring
        ``ring_factor`` / ``min_ring`` of :func:`box_cnr`.

    Returns
    -------
    The :func:`visibility_summary` dict plus ``per_image`` (``[visible before, kept]``
    counts per image).
    """
    if not threshold > 0:
        raise ParameterError(f"threshold must be > 0, got {threshold}")
    cb, ca, per_image = [], [], []
    for img0, img1, bx in zip(before, after, boxes, strict=True):
        if np.shape(img0) != np.shape(img1):
            raise ParameterError(f"before/after shapes differ: {np.shape(img0)} vs {np.shape(img1)}")
        a, b = box_cnr(img0, bx, **ring), box_cnr(img1, bx, **ring)
        vis, kept = kept_labels(a, b, threshold)
        per_image.append([int(vis.sum()), int(kept.sum())])
        cb.append(a)
        ca.append(b)
    summary = visibility_summary(np.concatenate(cb) if cb else np.zeros(0),
                                 np.concatenate(ca) if ca else np.zeros(0), threshold)
    return {**summary, "per_image": per_image}
