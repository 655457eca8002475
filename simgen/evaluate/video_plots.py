"""Plots of a video analysis (``simgen analyze``): density, sizes, diffusivity, lifetimes.

Matplotlib without pyplot state; each function returns a Figure (write it with
:func:`simgen.evaluate.plots.save_figure`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_density", "plot_size_quartiles", "plot_diffusivity", "plot_track_lifetimes", "plot_agreement"]


def _figure(rows: int = 1, width: float = 5.5, height: float = 4.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height * rows), dpi=100, layout="constrained")
    return fig, [fig.add_subplot(rows, 1, i + 1) for i in range(rows)]


def _x(per_frame: pd.DataFrame) -> tuple[np.ndarray, str]:
    if "dose" in per_frame.columns:
        return per_frame["dose"].to_numpy(), "dose"
    if "time_s" in per_frame.columns:
        return per_frame["time_s"].to_numpy(), "time (s)"
    return per_frame["sample"].to_numpy(), "frame"


def plot_density(per_frame: pd.DataFrame) -> Figure:
    """Count per frame and (volumetric, else areal) density against dose, time or frame."""
    x, xlabel = _x(per_frame)
    fig, (a, b) = _figure(2, height=3.0)
    a.plot(x, per_frame["count"], ".-", lw=0.8, ms=3)
    a.set_ylabel("visible defects per frame")
    col, label = (("volumetric_density_m3", "density (m$^{-3}$)") if "volumetric_density_m3" in per_frame.columns
                  else ("areal_density_m2", "areal density (m$^{-2}$)"))
    b.plot(x, per_frame[col], ".-", lw=0.8, ms=3, color="C1")
    b.set_ylabel(label + ", × 7/4")
    b.set_xlabel(xlabel)
    return fig


def plot_size_quartiles(per_frame: pd.DataFrame, unit: str = "nm") -> Figure:
    """Median size and the Q1-Q3 band per frame."""
    x, xlabel = _x(per_frame)
    fig, (ax,) = _figure()
    ax.fill_between(x, per_frame[f"size_q1_{unit}"], per_frame[f"size_q3_{unit}"], alpha=0.3, label="Q1-Q3")
    ax.plot(x, per_frame[f"size_median_{unit}"], "-", lw=1.2, label="median")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"defect size, ellipse major axis ({unit})")
    ax.legend(frameon=False)
    return fig


def plot_diffusivity(by_size: pd.DataFrame, unit: str) -> Figure:
    """Diffusivity of each size bin (ensemble value; median of the tracks as open marks)."""
    fig, (ax,) = _figure()
    mid = (by_size["size_lo"] + by_size["size_hi"]).to_numpy() / 2
    ax.errorbar(mid, by_size["D"], yerr=by_size["D_sem"], xerr=(by_size["size_hi"] - by_size["size_lo"]) / 2,
                fmt="o", label="ensemble (trackpy.emsd)")
    ax.plot(mid, by_size["D_median"], "o", mfc="none", label="median of tracks")
    for m, n, d in zip(mid, by_size["n_tracks"], by_size["D"]):
        if np.isfinite(d):
            ax.annotate(f"n={n}", (m, d), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("defect size (track median)")
    ax.set_ylabel(f"D ({unit})")
    ax.legend(frameon=False)
    return fig


def plot_track_lifetimes(lifetimes: np.ndarray, xlabel: str = "lifetime (frames)") -> Figure:
    """Histogram of track lifetimes (Doane bins)."""
    fig, (ax,) = _figure()
    lifetimes = np.asarray(lifetimes, np.float64)
    if len(lifetimes):
        ax.hist(lifetimes, bins=np.histogram_bin_edges(lifetimes, "doane"), color="C2")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("tracks")
    return fig


def plot_agreement(table: pd.DataFrame) -> Figure:
    """Machine against human per frame: counts (top) and size median with Q1-Q3 bars (bottom)."""
    x = np.arange(len(table))
    labels = table["name"].astype(str).tolist() if "name" in table.columns else [str(v) for v in table["sample"]]
    fig, (a, b) = _figure(2, width=max(5.5, 0.5 * len(table) + 2), height=3.0)
    w = 0.38
    a.bar(x - w / 2, table["count_human"], w, label="human")
    a.bar(x + w / 2, table["count_machine"], w, label="machine")
    a.set_ylabel("defects per frame")
    a.legend(frameon=False)
    for off, side in ((-w / 2, "human"), (w / 2, "machine")):
        med = table[f"size_median_nm_{side}"].to_numpy()
        lo = med - table[f"size_q1_nm_{side}"].to_numpy()
        hi = table[f"size_q3_nm_{side}"].to_numpy() - med
        b.errorbar(x + off, med, yerr=[lo, hi], fmt="o", capsize=3, label=side)
    b.set_ylabel("size, major axis (nm): median, Q1-Q3")
    b.set_xticks(x, labels, rotation=45, ha="right", fontsize=8)
    a.set_xticks(x, [""] * len(x))
    b.legend(frameon=False)
    return fig
