"""Detection scores against the IoU cut-off: precision, recall, F1 and AP per IoU value.

The loop study chose its IoU rule (0.15) from this curve: loops are small and their predicted
boxes a few pixels off, so F1 falls steeply as the cut-off rises.  Every row is an ordinary
:func:`~simgen.evaluate.detection.evaluate_detections` at that cut-off: P/R/F1 from the
quality-order matching of the predictions with ``score >= conf``, AP from the score-order
matching over all predictions (mean over classes).

Examples
--------
>>> parse_iou("0.05:0.5:0.05")[:3]
[0.05, 0.1, 0.15]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from simgen.errors import ParameterError
from simgen.evaluate.detection import evaluate_detections

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["parse_iou", "f1_vs_iou", "plot_f1_vs_iou", "SWEEP_COLUMNS"]

SWEEP_COLUMNS = ["iou", "tp", "fp", "fn", "precision", "recall", "f1", "mAP", "peak_f1", "peak_f1_threshold"]
_MAX_VALUES = 1000


def _value(text: str, spelled: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ParameterError(f"--iou must be a number, LO:HI:STEP or a comma list, got {spelled!r}") from None
    if not (np.isfinite(v) and 0.0 < v <= 1.0):
        raise ParameterError(f"--iou values must be in (0, 1], got {text.strip()} in {spelled!r}")
    return v


def parse_iou(text: str | float | Sequence[float]) -> list[float]:
    """IoU cut-offs from ``"0.15"``, a range ``"LO:HI:STEP"`` (HI included) or a list ``"0.1,0.3"``.

    Returns
    -------
    list of float
        One or more values in (0, 1], rounded to 10 decimals (so ``0.05:0.5:0.05`` gives 0.15,
        not 0.15000000000000002), duplicates removed, in the given order.

    Raises
    ------
    ParameterError
        Values outside (0, 1], NaN, a step <= 0, LO > HI, more than 1000 values.
    """
    if isinstance(text, (int, float, np.floating)):
        return [_value(str(text), str(text))]
    if not isinstance(text, str):
        out = [_value(str(v), str(list(text))) for v in text]
        if not out:
            raise ParameterError("--iou needs at least one value")
        return list(dict.fromkeys(round(v, 10) for v in out))
    spelled = text.strip()
    if ":" in spelled:
        parts = spelled.split(":")
        if len(parts) != 3:
            raise ParameterError(f"--iou range must be LO:HI:STEP, got {spelled!r}")
        lo, hi = _value(parts[0], spelled), _value(parts[1], spelled)
        try:
            step = float(parts[2])
        except ValueError:
            raise ParameterError(f"--iou range step must be a number, got {spelled!r}") from None
        if not (np.isfinite(step) and step > 0):
            raise ParameterError(f"--iou range step must be > 0, got {spelled!r}")
        if lo > hi:
            raise ParameterError(f"--iou range LO must not exceed HI, got {spelled!r}")
        count = int(np.floor((hi - lo) / step + 1e-9)) + 1
        if count > _MAX_VALUES:
            raise ParameterError(f"--iou range {spelled!r} gives {count} values (at most {_MAX_VALUES})")
        return list(dict.fromkeys(round(lo + k * step, 10) for k in range(count)))
    values = [_value(p, spelled) for p in spelled.split(",") if p.strip()]
    if not values:
        raise ParameterError("--iou needs at least one value")
    if len(values) > _MAX_VALUES:
        raise ParameterError(f"--iou gives {len(values)} values (at most {_MAX_VALUES})")
    return list(dict.fromkeys(round(v, 10) for v in values))


def f1_vs_iou(pred: pd.DataFrame, gt: pd.DataFrame, ious: Sequence[float], *, conf: float, ap_method: str = "coco",
              by_class: bool = True, n_frames: int | None = None) -> pd.DataFrame:
    """Counts, P, R, F1 at ``conf`` and mAP at each IoU cut-off.

    Parameters
    ----------
    pred, gt : DataFrame
        Box tables (``sample, x0, y0, x1, y1, class [, score]``, pixels).
    ious : sequence of float
        IoU cut-offs in (0, 1].
    conf : float
        Confidence threshold of the counts (the one the rest of the report uses).
    ap_method, by_class, n_frames
        As :func:`~simgen.evaluate.detection.evaluate_detections`.

    Returns
    -------
    DataFrame
        One row per cut-off with :data:`SWEEP_COLUMNS`.
    """
    rows = []
    for t in ious:
        s = evaluate_detections(pred, gt, metric="iou", threshold=float(t), conf=conf, ap_method=ap_method,
                                by_class=by_class, n_frames=n_frames).summary
        rows.append({"iou": float(t), **{k: s[k] for k in SWEEP_COLUMNS[1:]}})
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def plot_f1_vs_iou(table: pd.DataFrame, conf: float) -> Figure:
    """P, R, F1 (at ``conf``) and mAP against the IoU cut-off."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 4.0), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for col, style, label in (("f1", "k-o", f"F1 @ conf {conf:g}"), ("precision", "C0--", "precision"),
                              ("recall", "C1--", "recall"), ("mAP", "C2:s", "AP")):
        ax.plot(table["iou"], table[col], style, lw=1.5 if col == "f1" else 1.0, ms=3, label=label)
    ax.set_xlabel("IoU cut-off")
    ax.set_ylabel("score")
    ax.set_ylim(0, 1.02)
    ax.set_title("detection scores against the IoU cut-off")
    ax.legend(loc="lower left", fontsize="small")
    ax.grid(alpha=0.3)
    return fig
