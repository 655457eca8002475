"""Defect lifetimes from tracks and their comparison between prediction and ground truth.

The lifetime of a track is the span of frames it covers, ``last - first + 1``
(gaps bridged by linking memory count as alive), times the frame interval.
Tracks that start in the first or end in the last frame are *censored* (the
defect may live longer than observed); :func:`track_lifetimes` can drop them.

:func:`compare_lifetimes` tests whether two lifetime samples come from the same
distribution with

* a chi-square test of homogeneity on a 2 x k table of histogram counts, bins
  from Doane's rule on the pooled sample (bins empty in both samples dropped),
* the two-sample Kolmogorov-Smirnov test (exact p-value for small samples, as
  chosen by :func:`scipy.stats.ks_2samp`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from simgen.errors import DataError, ParameterError

__all__ = ["track_lifetimes", "doane_bins", "compare_lifetimes"]


def track_lifetimes(
    tracks: pd.DataFrame,
    *,
    frame_interval: float = 1.0,
    n_frames: int | None = None,
    drop_censored: bool = False,
) -> pd.DataFrame:
    """Lifetime of every track.

    Parameters
    ----------
    tracks : DataFrame
        Columns ``sample`` (frame) and ``track_id``.
    frame_interval : float
        Time between frames (lifetimes are in these units; 1 = frames).
    n_frames : int, optional
        Sequence length, for censoring (default: highest frame + 1).
    drop_censored : bool
        Leave out tracks present in the first or the last frame.

    Returns
    -------
    DataFrame
        Index ``track_id``; columns ``first, last, n_detections, lifetime, censored``.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame({"sample": [0, 1, 3, 2, 3], "track_id": [7, 7, 7, 8, 8]})
    >>> track_lifetimes(t)["lifetime"].tolist()
    [4.0, 2.0]
    """
    if not np.isfinite(frame_interval) or frame_interval <= 0:
        raise ParameterError(f"frame interval must be > 0, got {frame_interval}")
    for col in ("sample", "track_id"):
        if col not in tracks.columns:
            raise DataError(f"tracks need a {col!r} column (have {list(tracks.columns)})")
    if len(tracks) == 0:
        return pd.DataFrame({"first": [], "last": [], "n_detections": [], "lifetime": [], "censored": []},
                            index=pd.Index([], name="track_id"))
    g = tracks.groupby("track_id")["sample"]
    out = pd.DataFrame({"first": g.min(), "last": g.max(), "n_detections": g.size()})
    top = int(tracks["sample"].max()) if n_frames is None else int(n_frames) - 1
    out["lifetime"] = (out["last"] - out["first"] + 1).astype(np.float64) * frame_interval
    out["censored"] = (out["first"] <= 0) | (out["last"] >= top)
    if drop_censored:
        out = out[~out["censored"]]
    return out


def doane_bins(x: ArrayLike) -> np.ndarray:
    """Histogram bin edges by Doane's rule (``numpy.histogram_bin_edges(x, "doane")``)."""
    x = np.asarray(x, np.float64)
    if len(x) == 0:
        return np.array([0.0, 1.0])
    return np.histogram_bin_edges(x, bins="doane")


def compare_lifetimes(pred: ArrayLike, gt: ArrayLike, bins: ArrayLike | None = None) -> dict:
    """Chi-square (Doane bins) and two-sample KS comparison of two lifetime samples.

    Parameters
    ----------
    pred, gt : 1-D array_like
        Lifetimes (e.g. ``track_lifetimes(t)["lifetime"]``).
    bins : array_like, optional
        Bin edges; default Doane's rule on the pooled sample.

    Returns
    -------
    dict
        ``n_pred, n_gt, mean_pred, mean_gt, median_pred, median_gt, bins,
        counts_pred, counts_gt, chi2, chi2_dof, chi2_p, ks, ks_p``.  Tests that
        cannot be computed (fewer than 2 values in a sample, a single occupied
        bin) give NaN statistics and p-values.
    """
    from scipy import stats

    a = np.asarray(pred, np.float64)
    b = np.asarray(gt, np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise DataError("lifetimes must be finite numbers")
    pooled = np.concatenate([a, b])
    edges = doane_bins(pooled) if bins is None else np.asarray(bins, np.float64)
    ca = np.histogram(a, edges)[0]
    cb = np.histogram(b, edges)[0]
    out = {
        "n_pred": int(len(a)), "n_gt": int(len(b)),
        "mean_pred": float(a.mean()) if len(a) else float("nan"),
        "mean_gt": float(b.mean()) if len(b) else float("nan"),
        "median_pred": float(np.median(a)) if len(a) else float("nan"),
        "median_gt": float(np.median(b)) if len(b) else float("nan"),
        "bins": edges.tolist(), "counts_pred": ca.tolist(), "counts_gt": cb.tolist(),
        "chi2": float("nan"), "chi2_dof": 0, "chi2_p": float("nan"), "ks": float("nan"), "ks_p": float("nan"),
    }
    if len(a) >= 2 and len(b) >= 2:
        ks = stats.ks_2samp(a, b)
        out["ks"], out["ks_p"] = float(ks.statistic), float(ks.pvalue)
        occupied = (ca + cb) > 0
        table = np.vstack([ca[occupied], cb[occupied]])
        if table.shape[1] >= 2 and table[0].sum() > 0 and table[1].sum() > 0:
            chi2, p, dof, _ = stats.chi2_contingency(table, correction=False)
            out["chi2"], out["chi2_p"], out["chi2_dof"] = float(chi2), float(p), int(dof)
    return out
