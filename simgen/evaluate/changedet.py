"""Change maps → per-frame segmentation (fusion), and the scores of the MultiTaskDeltaNet study.

A change map of the pair ``(i, j)`` holds, per pixel, one of four classes: ``0`` no change
(absent in both frames), ``1`` appearing (absent in ``i``, present in ``j``), ``2``
disappearing (present in ``i`` only), ``3`` overlapping (present in both).  It therefore
encodes the masks of *both* frames, and a frame's mask can be read off any pair holding it
— no frame's ground truth is assumed known::

    mask(i) = {disappearing, overlapping}      mask(j) = {appearing, overlapping}

:func:`recover_masks` reconstructs the masks of a sequence of ``T`` frames from the change
maps of pairs ``(i, j)``, ``i <= j`` (the orientation of ``pairing="all"`` plus self pairs):

=============== =====================================================================
``forward``     frame ``t`` from the pair with the first frame, ``(0, t)``
``backward``    frame ``t`` from the pair with the last frame, ``(t, T - 1)``
``consecutive`` frame ``t`` from ``(t, t + 1)``; the last frame from ``(T - 2, T - 1)``
``ensemble``    majority vote (ties → present) of frame ``t``'s masks from every pair
                ``(min(t, n), max(t, n))``, ``n = 0 .. T - 1`` — the study's ensemble
=============== =====================================================================

In a self pair ``(t, t)`` the frame counts as the first one.  Scores are those of the
study: per task the binary confusion of a mask against the truth gives the F1 of
background and of foreground, their mean (**macro-F1**), the foreground **IoU** and the
mean IoU; change maps get the 4-class macro-F1 and mean IoU (classes absent from
prediction and truth are left out of the means).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from simgen.errors import DataError, ParameterError
from simgen.evaluate.segmentation import confusion_matrix, scores_from_confusion

__all__ = [
    "RECOVERY",
    "mask_from_change",
    "recovery_pairs",
    "recover_masks",
    "binary_scores",
    "multiclass_scores",
    "mask_confusion",
]

#: Ways of recovering a frame's mask from change maps (see the module docstring).
RECOVERY = ("forward", "backward", "consecutive", "ensemble")

APPEARING, DISAPPEARING, OVERLAPPING = 1, 2, 3


def mask_from_change(change: np.ndarray, side: str) -> np.ndarray:
    """The mask of the ``"first"`` or ``"second"`` frame of a pair from its (H, W) change map.

    Examples
    --------
    >>> c = np.array([0, 1, 2, 3])
    >>> mask_from_change(c, "first").tolist(), mask_from_change(c, "second").tolist()
    ([False, False, True, True], [False, True, False, True])
    """
    change = np.asarray(change)
    if side == "first":
        return (change == DISAPPEARING) | (change == OVERLAPPING)
    if side == "second":
        return (change == APPEARING) | (change == OVERLAPPING)
    raise ParameterError(f"side must be 'first' or 'second', got {side!r}")


def _pairs_of(t: int, n_frames: int, method: str) -> list[tuple[int, int]]:
    last = n_frames - 1
    if method == "forward":
        return [(0, t)]
    if method == "backward":
        return [(t, last)]
    if method == "consecutive":
        return [(t, t + 1)] if t < last else [(max(t - 1, 0), t)]
    if method == "ensemble":
        return [(min(t, n), max(t, n)) for n in range(n_frames)]
    raise ParameterError(f"recovery method must be one of {', '.join(RECOVERY)}, got {method!r}")


def recovery_pairs(n_frames: int, methods=RECOVERY) -> list[tuple[int, int]]:
    """Every pair ``(i, j)``, ``i <= j``, that :func:`recover_masks` reads for these methods (sorted)."""
    if isinstance(n_frames, bool) or int(n_frames) != n_frames or n_frames < 1:
        raise ParameterError(f"a sequence needs at least one frame, got {n_frames!r}")
    return sorted({p for m in methods for t in range(int(n_frames)) for p in _pairs_of(t, int(n_frames), m)})


def recover_masks(change: Mapping | Callable, n_frames: int, method: str = "ensemble") -> np.ndarray:
    """Masks ``(T, H, W)`` bool of the ``T`` frames of a sequence from the change maps of its pairs.

    Parameters
    ----------
    change : mapping or callable
        ``change[(i, j)]`` or ``change(i, j)`` → (H, W) change map (class ids) of frames ``i <= j``;
        only the pairs of :func:`recovery_pairs` are read.
    n_frames : int
    method : {"forward", "backward", "consecutive", "ensemble"}

    Raises
    ------
    DataError
        A needed pair is missing.
    """
    recovery_pairs(n_frames, (method,))  # validates both arguments
    out = []
    for t in range(int(n_frames)):
        votes = []
        for i, j in _pairs_of(t, int(n_frames), method):
            try:
                c = change(i, j) if callable(change) else change[(i, j)]
            except KeyError:
                raise DataError(f"recovery '{method}' needs the change map of the pair ({i}, {j})") from None
            votes.append(mask_from_change(c, "first" if t == i else "second"))
        out.append(np.mean(votes, axis=0) >= 0.5 if len(votes) > 1 else votes[0])
    return np.stack(out)


def mask_confusion(pred, truth) -> np.ndarray:
    """2x2 confusion ``C[true, predicted]`` of binary masks (any matching shapes, pooled)."""
    pred = np.asarray(pred).astype(bool)
    truth = np.asarray(truth).astype(bool)
    if pred.shape != truth.shape:
        raise DataError(f"predicted masks {pred.shape} and true masks {truth.shape} differ in shape")
    return confusion_matrix(pred, truth, 2)


def binary_scores(cm) -> dict:
    """Macro-F1 (mean F1 of background and foreground), foreground IoU, mean IoU, foreground F1 of a
    2x2 confusion matrix ``C[true, predicted]``.

    Examples
    --------
    >>> s = binary_scores([[6, 0], [1, 1]])  # 8 pixels: 2 true foreground, 1 found
    >>> round(s["f1_fg"], 3), round(s["iou"], 3), round(s["f1_macro"], 3)
    (0.667, 0.5, 0.795)
    """
    cm = np.asarray(cm, np.int64)
    if cm.shape != (2, 2):
        raise ParameterError(f"binary scores need a 2x2 confusion matrix, got shape {cm.shape}")
    s = scores_from_confusion(cm)
    f1, iou = s["dice"].to_numpy(), s["iou"].to_numpy()
    return {"f1_macro": float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan"),
            "iou": float(iou[1]), "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "f1_fg": float(f1[1])}


def multiclass_scores(cm) -> dict:
    """Macro-F1 and mean IoU over the classes present in prediction or truth, plus ``f1_<c>`` per class."""
    cm = np.asarray(cm, np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ParameterError(f"a confusion matrix must be square, got shape {cm.shape}")
    s = scores_from_confusion(cm)
    f1, iou = s["dice"].to_numpy(), s["iou"].to_numpy()
    ok = np.isfinite(f1)
    out = {"f1_macro": float(f1[ok].mean()) if ok.any() else float("nan"),
           "miou": float(iou[ok].mean()) if ok.any() else float("nan")}
    out.update({f"f1_{c}": float(v) for c, v in enumerate(f1)})
    return out
