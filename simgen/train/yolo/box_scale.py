"""Box tightness calibration: one width and one height factor fitted on synthetic validation data.

A detector trained on boxes with a margin (or whose regression is biased) returns boxes larger
than the defects; at the MOTChallenge IoU 0.5 such boxes fail to match although their centres are
right.  :func:`fit_box_scale` measures the bias on matched prediction/ground-truth pairs of a
*synthetic* validation set (exact labels; never real labels), :func:`apply_box_scale` rescales
boxes about their centres, and :func:`~simgen.train.yolo.box_scale_calibrate.calibrate_box_scale`
(``simgen train box-scale``) writes a
copy of a checkpoint with the factors in its ``simgen["box_scale"]`` metadata, which
:class:`~simgen.train.yolo.predict.YoloDetector` applies (``box_scale="auto"``).

Estimator: the median of the per-pair ratios ``w_gt / w_pred`` (and ``h_gt / h_pred``).  A ratio
is scale-free, so a 5 px and a 40 px defect each cast one vote, and the median ignores the few
wrong pairs a low matching IoU admits; a least-squares fit of ``w_gt ≈ s w_pred``
(``s = Σ w_gt w_pred / Σ w_pred²``) would be dominated by the largest defects and pulled by
outliers.  Pairs touching the image border are left out (clipped boxes have false widths).

The true extent is taken from the instance masks when the validation data has them
(``truth="auto"``): synthetic training boxes may carry a margin (``sim2real --box-margin``, 1 px by
default), while tracking ground truth (:class:`~simgen.simulate.video.VideoSampler`) boxes the
mask exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from simgen.atomic import json_default_lenient
from simgen.errors import DataError, ParameterError
from simgen.evaluate.matching import BOX_COLUMNS, box_iou, match_detections

__all__ = ["BOX_SCALE_MODES", "SIMULATED_KINDS", "TRUTHS", "BoxScale", "fit_box_scale", "apply_box_scale",
           "mask_boxes", "require_simulated", "stored_box_scale"]

#: ``box_scale`` of :class:`~simgen.train.yolo.predict.YoloDetector` and ``--box-scale``.
BOX_SCALE_MODES = ("auto", "off")
#: HDF5 sample kinds written by simgen's simulators: the only data a box scale may be fitted on.
SIMULATED_KINDS = ("film", "tem", "video")
#: Where the true extent comes from: instance masks when present (auto), masks, or the box table.
TRUTHS = ("auto", "masks", "boxes")
#: Fewest matched pairs a fit needs.
MIN_PAIRS = 5


@dataclass(frozen=True)
class BoxScale:
    """Width and height factors applied about each box centre, and how they were fitted.

    Attributes
    ----------
    x, y : float
        Factors for the width and the height (``< 1``: boxes shrink).
    n_pairs : int
        Matched pairs used (border pairs excluded).
    match_iou : float
        IoU cut-off of the matching that paired predictions and ground truth.
    conf : float
        Only predictions with at least this score were used (the detector's threshold).
    mean_iou_before, mean_iou_after : float
        Mean IoU of those pairs without and with the factors.
    method : str
        ``"median"`` (median of ratios).
    val : str
        The validation data.
    truth : str
        ``"masks"`` (tight boxes of the instance masks) or ``"boxes"`` (the box table).
    """

    x: float
    y: float
    n_pairs: int
    match_iou: float
    conf: float
    mean_iou_before: float
    mean_iou_after: float
    method: str = "median"
    val: str = ""
    truth: str = "boxes"

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=json_default_lenient))


def _widths(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]


def apply_box_scale(boxes: pd.DataFrame, sx: float, sy: float, shape: tuple[int, int] | None = None) -> pd.DataFrame:
    """Boxes rescaled about their centres by ``sx`` (width) and ``sy`` (height), clipped to the image.

    Parameters
    ----------
    boxes : DataFrame
        Columns ``x0, y0, x1, y1`` (pixels) and any others (kept).
    sx, sy : float
        Factors (> 0).
    shape : (H, W), optional
        Image shape for clipping to ``[0, W] x [0, H]``.

    Returns
    -------
    DataFrame
        A copy with the box columns replaced (their dtype kept).
    """
    if not (np.isfinite(sx) and np.isfinite(sy) and sx > 0 and sy > 0):
        raise ParameterError(f"box scale factors must be > 0, got ({sx}, {sy})")
    out = boxes.copy()
    if len(out) == 0:
        return out
    b = out[BOX_COLUMNS].to_numpy(np.float64)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    hw, hh = (b[:, 2] - b[:, 0]) * sx / 2, (b[:, 3] - b[:, 1]) * sy / 2
    new = np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1)
    if shape is not None:
        h, w = shape
        new[:, [0, 2]] = new[:, [0, 2]].clip(0, w)
        new[:, [1, 3]] = new[:, [1, 3]].clip(0, h)
    for k, c in enumerate(BOX_COLUMNS):
        out[c] = new[:, k].astype(out[c].dtype)
    return out


def _inside(b: np.ndarray, shapes: np.ndarray, margin: float) -> np.ndarray:
    """Boxes at least ``margin`` px away from every image border; ``shapes`` (n, 2) = (H, W) per box."""
    return ((b[:, 0] >= margin) & (b[:, 1] >= margin) & (b[:, 2] <= shapes[:, 1] - margin)
            & (b[:, 3] <= shapes[:, 0] - margin))


def fit_box_scale(pred: pd.DataFrame, gt: pd.DataFrame, *, conf: float = 0.0, match_iou: float = 0.1,
                  shapes: dict[int, tuple[int, int]] | None = None, border: float = 1.0) -> BoxScale:
    """Fit the width and height factors that make predicted boxes as tight as the true ones.

    Parameters
    ----------
    pred : DataFrame
        ``sample, x0, y0, x1, y1 [, score]`` (pixels).
    gt : DataFrame
        ``sample, x0, y0, x1, y1`` of the same samples.
    conf : float
        Predictions scoring below this are ignored (use the detector's operating threshold).
    match_iou : float
        IoU cut-off of the class-agnostic greedy matching that pairs them (low, so that boxes
        too large by up to ~3x still pair: a concentric box ``k`` times larger has IoU ``1/k²``).
    shapes : dict, optional
        ``sample -> (H, W)``; pairs closer than ``border`` px to an image edge are left out.
    border : float
        Distance to the edge (px) below which a pair is left out.

    Returns
    -------
    BoxScale
        Median ratios ``w_gt / w_pred`` and ``h_gt / h_pred`` (see the module docstring).

    Raises
    ------
    DataError
        Fewer than :data:`MIN_PAIRS` usable pairs.
    """
    if not 0 < match_iou <= 1:
        raise ParameterError(f"matching IoU must be in (0, 1], got {match_iou}")
    for what, df in (("predictions", pred), ("ground truth", gt)):
        missing = [c for c in ("sample", *BOX_COLUMNS) if c not in df.columns]
        if missing:
            raise DataError(f"{what} need columns sample, x0, y0, x1, y1 (missing {', '.join(missing)})")
    if "score" in pred.columns:
        pred = pred[pred["score"].to_numpy(np.float64) >= conf]
    pred = pred.reset_index(drop=True)
    gt = gt.reset_index(drop=True)
    m = match_detections(pred, gt, threshold=match_iou, by_class=False)
    p = np.flatnonzero(m.pred_to_gt >= 0)
    g = m.pred_to_gt[p]
    pb = pred[BOX_COLUMNS].to_numpy(np.float64)[p]
    gb = gt[BOX_COLUMNS].to_numpy(np.float64)[g]
    keep = np.ones(len(p), bool)
    if shapes is not None and len(p):
        sample = pred["sample"].to_numpy(np.int64)[p]
        sh = np.array([shapes[int(s)] for s in sample], np.float64).reshape(-1, 2)
        keep = _inside(pb, sh, border) & _inside(gb, sh, border)
    pw, ph = _widths(pb[keep])
    gw, gh = _widths(gb[keep])
    ok = (pw > 0) & (ph > 0) & (gw > 0) & (gh > 0)
    if ok.sum() < MIN_PAIRS:
        raise DataError(f"only {int(ok.sum())} matched prediction/ground-truth pairs away from the image borders "
                        f"(need {MIN_PAIRS}); use more validation images or a lower matching IoU")
    sx = float(np.median(gw[ok] / pw[ok]))
    sy = float(np.median(gh[ok] / ph[ok]))
    pb, gb = pb[keep][ok], gb[keep][ok]
    scaled = apply_box_scale(pd.DataFrame(pb, columns=BOX_COLUMNS), sx, sy).to_numpy(np.float64)
    before = float(np.mean([box_iou(a, b)[0, 0] for a, b in zip(pb, gb)]))
    after = float(np.mean([box_iou(a, b)[0, 0] for a, b in zip(scaled, gb)]))
    return BoxScale(sx, sy, int(ok.sum()), float(match_iou), float(conf), before, after)


def require_simulated(src, name, purpose: str) -> None:
    """Refuse a source that is not simulator output (``ParameterError``): ``purpose`` is chosen on
    synthetic validation data only, never on real labels."""
    if src.kind not in ("hdf5", "shards") or src.sample_kind not in SIMULATED_KINDS:
        raise ParameterError(f"{name} is not simulated data (kind {src.sample_kind!r}); {purpose} on synthetic "
                             f"validation data only ({', '.join(SIMULATED_KINDS)}), never on real labels")


def mask_boxes(src) -> pd.DataFrame:
    """Tight boxes ``sample, x0, y0, x1, y1`` of every instance of every mask of an open Source (pixels)."""
    from scipy.ndimage import find_objects

    parts = []
    for k in range(len(src)):
        labels = src.mask(k)
        if labels is None:
            raise DataError(f"{src.path}: sample {k} has no instance mask")
        sl = [s for s in find_objects(np.asarray(labels).astype(np.int64)) if s is not None]
        b = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in sl], np.float64).reshape(-1, 4)
        parts.append(pd.DataFrame(b, columns=BOX_COLUMNS).assign(sample=k))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["sample", *BOX_COLUMNS])


def stored_box_scale(meta: dict) -> tuple[float, float] | None:
    """The ``(x, y)`` factors of a checkpoint's ``simgen`` metadata, or ``None`` when not calibrated."""
    entry = (meta or {}).get("box_scale")
    if not entry:
        return None
    try:
        sx, sy = float(entry["x"]), float(entry["y"])
    except (KeyError, TypeError, ValueError):
        raise DataError("checkpoint metadata 'box_scale' must hold numbers x and y") from None
    if not (np.isfinite(sx) and np.isfinite(sy) and 0.05 <= sx <= 20 and 0.05 <= sy <= 20):
        raise DataError(f"checkpoint box scale ({sx}, {sy}) is outside [0.05, 20]")
    return sx, sy
