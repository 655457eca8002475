"""Evaluation plots (matplotlib, no pyplot state; each function returns a Figure).

Use :func:`save_figure` to write a figure atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from simgen.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_P = TypeVar("_P", bound=str | PathLike)

__all__ = ["save_figure", "plot_pr_curve", "plot_per_frame", "plot_lifetimes", "plot_sizes", "plot_lifetime_bars",
           "plot_metric_bars"]


def _figure(width: float = 5.0, height: float = 4.0) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def save_figure(fig: Figure, path: _P, overwrite: bool = False) -> _P:
    """Save a figure as PNG atomically (``path`` must not exist unless ``overwrite``)."""

    with atomic_path(path, overwrite=overwrite, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_pr_curve(curve: pd.DataFrame, curves: dict | None = None, class_names: Sequence[str] | None = None,
                  title: str = "") -> Figure:
    """Precision-recall curve with the peak-F1 point marked (per-class curves thin).

    Parameters
    ----------
    curve : DataFrame
        All-class curve from :func:`~simgen.evaluate.detection.pr_curve`.
    curves : dict, optional
        Per-class curves ``{class: DataFrame}`` (drawn when there are several).
    class_names : sequence of str, optional
    """
    fig, ax = _figure()
    if curves and len(curves) > 1:
        for c, cv in curves.items():
            name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
            ax.plot(cv["recall"], cv["precision"], lw=0.8, alpha=0.7, label=f"class {name}")
    if len(curve):
        ax.plot(curve["recall"], curve["precision"], color="k", lw=1.5, label="all classes")
        i = int(np.argmax(curve["f1"].to_numpy()))
        r, p, f, t = (float(curve[k].iloc[i]) for k in ("recall", "precision", "f1", "threshold"))
        ax.plot([r], [p], "o", color="tab:red", ms=7, label=f"peak F1 {f:.3f} @ conf {t:.3g}")
    else:
        ax.text(0.5, 0.5, "no predictions", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(title or "precision-recall")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_per_frame(frames: ArrayLike, pred: ArrayLike, gt: ArrayLike, ylabel: str, title: str = "",
                   frame_interval: float = 1.0, time_unit: str = "frame") -> Figure:
    """Predicted vs ground-truth value per frame (e.g. defect count, mean NN distance)."""
    fig, ax = _figure(6.0, 3.5)
    t = np.asarray(frames, np.float64) * frame_interval
    ax.plot(t, gt, color="k", lw=1.2, label="ground truth")
    ax.plot(t, pred, color="tab:red", lw=1.0, alpha=0.85, label="predicted")
    ax.set_xlabel(time_unit if frame_interval == 1.0 else f"time ({time_unit})")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_lifetimes(pred_lifetimes: Sequence[float] | np.ndarray, gt_lifetimes: Sequence[float] | np.ndarray,
                   bins: ArrayLike, stats: dict | None = None, unit: str = "frames") -> Figure:
    """Histograms of predicted and ground-truth track lifetimes (shared Doane bins)."""
    fig, ax = _figure()
    bins = np.asarray(bins, np.float64)
    # the ignores: matplotlib's stubs type bins as Sequence[float], but hist takes any array of bin edges
    ax.hist(np.asarray(gt_lifetimes, np.float64), bins=bins, histtype="stepfilled", alpha=0.4, color="k",  # type: ignore[arg-type]
            label=f"ground truth (n={len(gt_lifetimes)})")
    ax.hist(np.asarray(pred_lifetimes, np.float64), bins=bins, histtype="step", lw=1.5, color="tab:red",  # type: ignore[arg-type]
            label=f"predicted (n={len(pred_lifetimes)})")
    _finish_lifetime_axes(ax, stats, f"lifetime ({unit})")
    return fig


def plot_sizes(stats_pred: pd.DataFrame, stats_gt: pd.DataFrame, unit: str = "px") -> Figure:
    """Median and interquartile band of defect size per frame."""
    fig, ax = _figure(6.0, 3.5)
    for st, color, label in ((stats_gt, "k", "ground truth"), (stats_pred, "tab:red", "predicted")):
        ax.plot(st["sample"], st["median"], color=color, lw=1.2, label=f"{label} median")
        ax.fill_between(st["sample"], st["q1"], st["q3"], color=color, alpha=0.15)
    ax.set_xlabel("frame")
    ax.set_ylabel(f"size, major axis ({unit})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def plot_lifetime_bars(counts_pred: Sequence[int], counts_gt: Sequence[int], bins: ArrayLike,
                       stats: dict | None = None, unit: str = "frames") -> Figure:
    """Side-by-side bars of predicted and true track counts per lifetime bin (e.g. Doane bins).

    ``counts_*`` have one entry per bin of ``bins`` (``len(bins) - 1``); ``stats`` may hold
    ``chi2_p`` and ``ks_p`` for the title.
    """
    fig, ax = _figure(6.0, 4.0)
    edges = np.asarray(bins, np.float64)
    pos = np.arange(len(edges) - 1)
    ax.bar(pos - 0.2, np.asarray(counts_gt), width=0.4, color="0.4", label=f"true (n={int(np.sum(counts_gt))})")
    ax.bar(pos + 0.2, np.asarray(counts_pred), width=0.4, color="tab:red",
           label=f"predicted (n={int(np.sum(counts_pred))})")
    ax.set_xticks(pos, [f"{a:.0f}-{b:.0f}" for a, b in zip(edges[:-1], edges[1:])], rotation=45, fontsize=7)
    _finish_lifetime_axes(ax, stats, f"lifetime ({unit}, Doane bins)")
    return fig


def _finish_lifetime_axes(ax, stats: dict | None, xlabel: str) -> None:
    """Title with the χ² and KS p-values (when given), axis labels and legend of a lifetime plot."""
    if stats:
        ax.set_title(f"chi2 p = {stats.get('chi2_p', float('nan')):.3g}, KS p = {stats.get('ks_p', float('nan')):.3g}",
                     fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("tracks")
    ax.legend(fontsize=8)


def plot_metric_bars(summary: dict[str, dict[str, dict]], metrics: Sequence[str]) -> Figure:
    """Mean ± standard deviation of tracking metrics, one group of bars per metric, one bar per setting.

    ``summary[setting][metric]`` holds ``mean`` and ``std`` (e.g. settings = MOT IoU thresholds).
    """
    fig, ax = _figure(6.0, 3.5)
    settings = list(summary)
    width = 0.8 / max(len(settings), 1)
    pos = np.arange(len(metrics))
    for i, name in enumerate(settings):
        mean = [summary[name][m]["mean"] for m in metrics]
        std = [summary[name][m]["std"] for m in metrics]
        ax.bar(pos + (i - (len(settings) - 1) / 2) * width, np.nan_to_num(np.asarray(mean, float)), width=width,
               yerr=np.nan_to_num(np.asarray(std, float)), capsize=3, label=str(name))
    ax.set_xticks(pos, list(metrics))
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig
