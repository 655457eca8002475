"""Segmentation metrics: confusion matrices, Dice and IoU per class, per image and dataset-wide.

Label images are integer arrays of class ids ``0..n_classes-1`` (instance masks
are turned into foreground/background with :func:`foreground`).  For each class
``c`` with ``tp = |P_c ∩ G_c|``, ``fp = |P_c \\ G_c|``, ``fn = |G_c \\ P_c|``::

    Dice = 2 tp / (2 tp + fp + fn)        IoU = tp / (tp + fp + fn)

A class absent from both prediction and ground truth of an image has an
undefined score: NaN in the per-image table, ignored by the per-image mean.  The
*dataset-wide* scores pool the pixel counts of all images first (so large images
weigh more); the *mean per image* averages the per-image scores.

Change maps of filament pairs use four classes, by default in the order of
:data:`CHANGE_CLASSES` (``0`` no change, ``1`` appearing, ``2`` disappearing,
``3`` overlapping); :func:`change_map_confusion` reports their per-pixel confusion.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from simgen.errors import DataError, ParameterError

__all__ = [
    "CHANGE_CLASSES",
    "confusion_matrix",
    "scores_from_confusion",
    "dice",
    "iou",
    "foreground",
    "segmentation_scores",
    "change_map_confusion",
]

CHANGE_CLASSES = ("no change", "appearing", "disappearing", "overlapping")


def _check_pair(pred: ArrayLike, gt: ArrayLike, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise DataError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    for name, a in (("prediction", pred), ("ground truth", gt)):
        if a.dtype.kind == "b":
            continue
        if a.dtype.kind not in "iu" and (not np.all(np.isfinite(a)) or np.any(a != np.round(a))):
            raise DataError(f"{name} label image must hold integer class ids")
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise DataError(f"{name} label image has ids outside [0, {n_classes - 1}] (min {a.min()}, max {a.max()})")
    return pred.astype(np.int64, copy=False), gt.astype(np.int64, copy=False)


def confusion_matrix(pred: ArrayLike, gt: ArrayLike, n_classes: int = 2) -> np.ndarray:
    """Per-pixel confusion matrix ``C[true, predicted]`` (int64, ``n_classes x n_classes``).

    Examples
    --------
    >>> confusion_matrix([[0, 1], [1, 1]], [[0, 1], [0, 1]])
    array([[1, 1],
           [0, 2]])
    """
    if n_classes < 1:
        raise ParameterError(f"n_classes must be >= 1, got {n_classes}")
    pred, gt = _check_pair(pred, gt, n_classes)
    return np.bincount(gt.ravel() * n_classes + pred.ravel(), minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


def scores_from_confusion(cm: ArrayLike) -> pd.DataFrame:
    """Per-class ``tp, fp, fn, dice, iou`` from a confusion matrix ``C[true, predicted]``.

    Classes absent from prediction and truth get NaN scores.
    """
    cm = np.asarray(cm, np.int64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        j = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
    return pd.DataFrame({"class": np.arange(len(tp)), "tp": tp, "fp": fp, "fn": fn, "dice": d, "iou": j})


def dice(pred: ArrayLike, gt: ArrayLike) -> float:
    """Dice coefficient of two binary masks (NaN when both are empty)."""
    return float(scores_from_confusion(confusion_matrix(np.asarray(pred) > 0, np.asarray(gt) > 0, 2))["dice"][1])


def iou(pred: ArrayLike, gt: ArrayLike) -> float:
    """Jaccard index (IoU) of two binary masks (NaN when both are empty)."""
    return float(scores_from_confusion(confusion_matrix(np.asarray(pred) > 0, np.asarray(gt) > 0, 2))["iou"][1])


def foreground(labels: ArrayLike) -> np.ndarray:
    """Instance-id label image → class image (0 background, 1 any instance)."""
    return (np.asarray(labels) > 0).astype(np.int64)


def segmentation_scores(preds: Iterable[ArrayLike], gts: Iterable[ArrayLike], n_classes: int = 2,
                        class_names: Sequence[str] | None = None) -> dict:
    """Dice and IoU per class, per image and dataset-wide.

    Parameters
    ----------
    preds, gts : sequences of (H, W) integer arrays
        Predicted and true class-label images, paired by position.
    n_classes : int
        Number of classes (ids ``0..n_classes-1``; 0 is usually background).
    class_names : sequence of str, optional

    Returns
    -------
    dict with
        ``per_image``: DataFrame (image, class, name, tp, fp, fn, dice, iou);
        ``dataset``: DataFrame per class from the pooled confusion matrix;
        ``mean_per_image``: DataFrame per class (mean of per-image scores, NaN ignored);
        ``confusion``: pooled confusion matrix ``C[true, predicted]``.
    """
    preds, gts = list(preds), list(gts)
    if len(preds) != len(gts):
        raise DataError(f"{len(preds)} predicted label images but {len(gts)} ground-truth ones")
    names = list(class_names) if class_names is not None else [str(c) for c in range(n_classes)]
    if len(names) != n_classes:
        raise ParameterError(f"{len(names)} class names for {n_classes} classes")
    total = np.zeros((n_classes, n_classes), np.int64)
    frames = []
    for i, (p, g) in enumerate(zip(preds, gts)):
        cm = confusion_matrix(p, g, n_classes)
        total += cm
        s = scores_from_confusion(cm)
        s.insert(0, "image", i)
        frames.append(s)
    per_image = pd.concat(frames, ignore_index=True) if frames else scores_from_confusion(total).iloc[:0].assign(image=0)
    per_image["name"] = [names[c] for c in per_image["class"]]
    dataset = scores_from_confusion(total)
    dataset["name"] = names
    mean = per_image.groupby("class")[["dice", "iou"]].mean().reindex(range(n_classes)).reset_index()
    mean["name"] = names
    return {"per_image": per_image, "dataset": dataset, "mean_per_image": mean, "confusion": total}


def change_map_confusion(preds: np.ndarray | Iterable[ArrayLike], gts: np.ndarray | Iterable[ArrayLike],
                         class_names: Sequence[str] = CHANGE_CLASSES, normalize: bool = False) -> pd.DataFrame:
    """Per-pixel confusion of change maps (rows: true class, columns: predicted class).

    Parameters
    ----------
    preds, gts : (H, W) array or sequence of them
        Change maps with ids ``0..len(class_names)-1`` (default order: no change,
        appearing, disappearing, overlapping).
    class_names : sequence of str
    normalize : bool
        Divide each row by its total (rows without pixels become NaN).

    Returns
    -------
    DataFrame indexed by true class name, columns = predicted class names.
    """
    single = isinstance(preds, np.ndarray) and preds.ndim == 2
    pred_maps: list[Any] = [preds] if single else list(preds)
    gt_maps: list[Any] = [gts] if single else list(gts)
    n = len(class_names)
    total = np.zeros((n, n), np.int64)
    if len(pred_maps) != len(gt_maps):
        raise DataError(f"{len(pred_maps)} predicted change maps but {len(gt_maps)} ground-truth ones")
    for p, g in zip(pred_maps, gt_maps):
        total += confusion_matrix(p, g, n)
    data = total.astype(np.float64)
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            data = data / data.sum(axis=1, keepdims=True)
    out = pd.DataFrame(data if normalize else total, index=list(class_names), columns=list(class_names))
    out.index.name = "true"
    out.columns.name = "predicted"
    return out
