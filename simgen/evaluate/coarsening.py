"""Coarsening statistics of a defect video: count and spacing per frame, their power laws, plots.

Used by ``simgen film-coarsening`` (:mod:`simgen.experiments.film_coarsening`): the number of
defects ``n(t)`` and their mean nearest-neighbour distance ``ℓ(t)`` per frame, detected against
true, and log–log power-law fits ``n ∝ t^−a``, ``ℓ ∝ t^b`` (XY coarsening: ``a ≈ 1`` up to the
logarithm ``(t / ln t)^−1``, ``b ≈ 1/2``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from simgen.errors import ParameterError
from simgen.evaluate.tracking import counts_per_frame, nn_distance_per_frame

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["coarsening_table", "power_law_fit", "plot_count", "plot_spacing"]


def coarsening_table(pred: pd.DataFrame, gt: pd.DataFrame, times) -> pd.DataFrame:
    """Per-frame count and mean nearest-neighbour distance, detected vs true.

    Parameters
    ----------
    pred, gt : DataFrame
        Detections / true defects: ``sample`` (frame) and ``x, y`` (px) or box columns.
    times : (n_frames,) array
        Time of every frame (any unit, > 0 for the log axes).

    Returns
    -------
    DataFrame
        One row per frame: ``frame, time, count_gt, count_pred, count_rel_error``
        (``(pred − gt) / gt``, NaN when gt = 0), ``nn_gt, nn_pred`` (px, NaN with < 2 defects)
        and ``nn_rel_error``.
    """
    times = np.asarray(times, np.float64)
    if times.ndim != 1 or len(times) == 0:
        raise ParameterError("times must be a non-empty 1-D array (one per frame)")
    n = len(times)
    c_gt = counts_per_frame(gt, n).astype(np.float64)
    c_pr = counts_per_frame(pred, n).astype(np.float64)
    nn_gt = nn_distance_per_frame(gt, n)
    nn_pr = nn_distance_per_frame(pred, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        c_err = np.where(c_gt > 0, (c_pr - c_gt) / c_gt, np.nan)
        nn_err = (nn_pr - nn_gt) / nn_gt
    return pd.DataFrame({"frame": np.arange(n), "time": times, "count_gt": c_gt.astype(np.int64),
                         "count_pred": c_pr.astype(np.int64), "count_rel_error": c_err, "nn_gt": nn_gt,
                         "nn_pred": nn_pr, "nn_rel_error": nn_err})


def power_law_fit(t, y) -> dict | None:
    """Least-squares line through ``(log t, log y)`` over the points with ``t, y > 0`` finite.

    Returns
    -------
    dict ``exponent`` (the slope, so ``y ∝ t^exponent``), ``exponent_stderr``, ``prefactor``
    (``y = prefactor · t^exponent``), ``n_points``, ``r2``; ``None`` with fewer than 3 usable points.
    """
    from scipy.stats import linregress

    t, y = np.asarray(t, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(t) & np.isfinite(y) & (t > 0) & (y > 0)
    if ok.sum() < 3 or np.ptp(np.log(t[ok])) == 0:
        return None
    r = linregress(np.log(t[ok]), np.log(y[ok]))
    return {"exponent": float(r.slope), "exponent_stderr": float(r.stderr), "prefactor": float(np.exp(r.intercept)),
            "n_points": int(ok.sum()), "r2": float(r.rvalue ** 2)}


def _figure():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 4.0), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _plot_pair(table: pd.DataFrame, fits: dict, gt_col: str, pred_col: str, ylabel: str, time_unit: str,
               loglog: bool) -> Figure:
    fig, ax = _figure()
    t = table["time"].to_numpy(np.float64)
    for col, name, style in ((gt_col, "true", dict(color="k", marker="o", ms=3, lw=1.2)),
                             (pred_col, "detected", dict(color="tab:orange", marker="s", ms=3, lw=1.0))):
        y = table[col].to_numpy(np.float64)
        ax.plot(t, y, label=name, **style)
        fit = fits.get(name)
        if fit:
            ax.plot(t, fit["prefactor"] * t ** fit["exponent"], ls="--", lw=0.9, color=style["color"],
                    label=f"{name} fit: t^{fit['exponent']:.2f}±{fit['exponent_stderr']:.2f}")
    if loglog:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # within one decade the minor labels overlap
    ax.set_xlabel(f"time ({time_unit})")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return fig


def plot_count(table: pd.DataFrame, fits: dict, time_unit: str = "steps·dt") -> Figure:
    """Defect count vs time, log–log, true and detected with their power-law fits (``fits[name]``)."""
    return _plot_pair(table, fits, "count_gt", "count_pred", "defects per frame", time_unit, loglog=True)


def plot_spacing(table: pd.DataFrame, fits: dict, time_unit: str = "steps·dt") -> Figure:
    """Mean nearest-neighbour distance (px) vs time, log–log, true and detected with their fits."""
    return _plot_pair(table, fits, "nn_gt", "nn_pred", "mean nearest-neighbour distance (px)", time_unit, loglog=True)
