"""Lever 2 of unsupervised adaptation (see ``docs/adapt.md``): flip-consistent pseudo-labels.

:func:`pseudo_label` lets a synthetic-trained detector label unlabeled real images; only
detections at least as confident as the teacher's *synthetic-validation* threshold that the
detector also finds on flipped copies of the image (:func:`flip_consistent`) are kept.  The images
are opened with :func:`~simgen.train.yolo.unlabeled.open_unlabeled` (no label is ever read).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from simgen.errors import ParameterError
from simgen.evaluate.matching import box_iou, greedy_assign
from simgen.progress import track
from simgen.train.yolo.predict import YoloDetector
from simgen.train.yolo.tta import flip_image, unflip_boxes
from simgen.train.yolo.unlabeled import UnlabeledImages, _Opened

__all__ = ["BOX_COLUMNS", "FLIPS", "flip_consistent", "pseudo_label"]

BOX_COLUMNS = ["x0", "y0", "x1", "y1", "class", "score"]
FLIPS = ("h", "v")


def flip_consistent(boxes: pd.DataFrame, others: Sequence[pd.DataFrame], iou: float = 0.5) -> pd.DataFrame:
    """The boxes of ``boxes`` that every table of ``others`` also holds (same class, IoU >= ``iou``).

    Parameters
    ----------
    boxes : DataFrame
        ``x0, y0, x1, y1, class, score`` found on the image.
    others : sequence of DataFrame
        The boxes found on transformed views (e.g. flips), already mapped back to the image frame.
    iou : float
        Minimum IoU of a match.  Matching is one-to-one, greedy by IoU (highest first).

    Returns
    -------
    The consistent rows of ``boxes`` (coordinates of ``boxes``), with ``score`` = the minimum of
    the matched scores over all views, sorted by decreasing score.
    """
    if not 0 < iou <= 1:
        raise ParameterError(f"iou must be in (0, 1], got {iou}")
    df = boxes.reset_index(drop=True)
    keep = np.ones(len(df), bool)
    score = df["score"].to_numpy(np.float32).copy() if len(df) else np.zeros(0, np.float32)
    xyxy = df[["x0", "y0", "x1", "y1"]].to_numpy(np.float64) if len(df) else np.zeros((0, 4))
    cls = df["class"].to_numpy() if len(df) else np.zeros(0, int)
    for other in others:
        if not keep.any():
            break
        o = other.reset_index(drop=True)
        if len(o) == 0:
            keep[:] = False
            break
        m = box_iou(xyxy, o[["x0", "y0", "x1", "y1"]].to_numpy(np.float64))
        m[cls[:, None] != o["class"].to_numpy()[None, :]] = 0.0
        rows, cols = np.nonzero(m >= iou)
        order = np.argsort(-m[rows, cols], kind="stable")
        row_match, _ = greedy_assign(rows[order], cols[order], len(df), len(o))
        matched = row_match >= 0
        keep &= matched
        other_score = o["score"].to_numpy(np.float32)
        score[matched] = np.minimum(score[matched], other_score[row_match[matched]])
    out = df.loc[keep].copy()
    out["score"] = score[keep]
    return out.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)


def _threshold(detector, conf: float | None) -> tuple[float, str]:
    """The pseudo-label threshold and where it came from (synthetic validation unless given)."""
    if conf is not None:
        if not 0 <= float(conf) < 1:
            raise ParameterError(f"conf must be in [0, 1), got {conf}")
        return float(conf), "given"
    meta = getattr(detector, "meta", None)
    if isinstance(meta, dict) and "conf_f1" in meta:
        return float(meta["conf_f1"]), "synthetic validation (checkpoint simgen.conf_f1)"
    if meta is None and getattr(detector, "conf_f1", None) is not None:
        return float(detector.conf_f1), "detector.conf_f1"
    raise ParameterError("the checkpoint records no threshold from synthetic validation (simgen.conf_f1); "
                         "give conf= explicitly (never pick it on real labels)")


def _pseudo_one(detector, image: np.ndarray, conf: float, flips: Sequence[str], iou: float) -> pd.DataFrame:
    base = detector.detect(image)
    base = base[base["score"] >= conf]
    if not len(base) or not flips:
        return base[BOX_COLUMNS].sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    others = []
    for f in flips:
        d = detector.detect(flip_image(image, f == "h", f == "v"))
        others.append(unflip_boxes(d[d["score"] >= conf], f == "h", f == "v", image.shape))
    return flip_consistent(base[BOX_COLUMNS], others, iou)


def _label_stream(detector, src: UnlabeledImages, conf: float, flips, iou: float,
                  progress: bool) -> Iterator[tuple[int, np.ndarray, pd.DataFrame]]:
    for k in track(range(len(src)), total=len(src), description="pseudo-label", enabled=progress):
        img = src.image(k)
        yield k, img, _pseudo_one(detector, img, conf, flips, iou)


def _check_flips(flip_consistency: bool, flips) -> tuple[str, ...]:
    if not flip_consistency:
        return ()
    flips = (flips,) if isinstance(flips, str) else tuple(flips)
    bad = [f for f in flips if f not in FLIPS]
    if bad or not flips:
        raise ParameterError(f"flips must be a non-empty subset of {FLIPS}, got {flips}")
    return flips


def pseudo_label(detector, images, *, conf: float | None = None, flip_consistency: bool = True,
                 iou: float = 0.5, flips: Sequence[str] = FLIPS, exclude: Sequence[str] = (),
                 progress: bool = False) -> list[pd.DataFrame]:
    """Pseudo-label unlabeled real images with a synthetic-trained detector.

    A detection is kept when its confidence is at least ``conf`` and, with ``flip_consistency``,
    when the detector also finds it (same class, IoU >= ``iou`` after mapping back) with
    confidence >= ``conf`` on every flipped copy of the image (horizontal and vertical by
    default).  Its score becomes the minimum of the matched scores; its box is the one found on
    the original image.

    Parameters
    ----------
    detector : YoloDetector or path
        The teacher (a path is opened as ``YoloDetector(path)``).  Any object with
        ``detect(image) -> DataFrame`` and ``meta["conf_f1"]`` works.
    images : path, sequence or UnlabeledImages
        Unlabeled real images (labels are never read; see :class:`UnlabeledImages`).
    conf : float, optional
        Confidence threshold.  Default: the threshold that maximised F1 on the *synthetic*
        validation data (``detector.meta["conf_f1"]``); never a threshold tuned on real labels.
    flip_consistency : bool
        Require agreement under flips (``False``: confidence only).
    iou : float
        IoU needed to match a box with its flipped counterpart.
    flips : sequence of {"h", "v"}
        The flips checked.
    exclude : sequence of str
        Image names to leave out.

    Returns
    -------
    One DataFrame ``x0, y0, x1, y1, class, score`` per image, in image order (sorted by
    decreasing score).
    """
    if not 0 < iou <= 1:
        raise ParameterError(f"iou must be in (0, 1], got {iou}")
    flips = _check_flips(flip_consistency, flips)
    if isinstance(detector, (str, Path)):
        detector = YoloDetector(detector)
    conf, _ = _threshold(detector, conf)
    with _Opened(images, exclude) as src:
        return [df for _, _, df in _label_stream(detector, src, conf, flips, iou, progress)]
