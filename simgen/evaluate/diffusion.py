"""Per-defect diffusivity ``D = <|Δr|²> / (4 τ)`` and its dependence on defect size, with trackpy.

Each track's mean squared displacement at lag ``τ`` comes from ``trackpy.imsd`` (pairs of frames
exactly ``τ`` apart within the track; gaps are not interpolated) and the ensemble value of a size
bin from ``trackpy.emsd`` (all pairs of the bin's tracks pooled, weighted by their number)::

    per_track = track_diffusivity(tracks, lag=1, pixel_size=0.37, frame_interval=1.75)
    d = ensemble_diffusivity(tracks, lag=1, ...)                 # all tracks pooled (trackpy.emsd)
    by_size = diffusivity_by_size(tracks, bins=4, ...)          # tracks binned by their median size

Units: positions in pixels times ``pixel_size`` (e.g. nm), ``τ = lag × frame_interval``
(e.g. s), so ``D`` is in nm²/s; with the defaults, px²/frame.  Subtract stage drift first
(:func:`simgen.evaluate.tracking.shift_by_drift`) or it adds ``|v τ|² / 4τ``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simgen.errors import DataError, ParameterError

__all__ = ["track_diffusivity", "ensemble_diffusivity", "size_bins", "diffusivity_by_size"]


def _check(tracks: pd.DataFrame, lag: int, pixel_size: float, frame_interval: float, columns=("sample", "track_id", "x", "y")):
    if int(lag) != lag or lag < 1:
        raise ParameterError(f"lag must be a positive integer (frames), got {lag}")
    for name, v in (("pixel size", pixel_size), ("frame interval", frame_interval)):
        if not (np.isfinite(v) and v > 0):
            raise ParameterError(f"{name} must be > 0, got {v}")
    missing = [c for c in columns if c not in tracks.columns]
    if missing:
        raise DataError(f"tracks need columns {missing} for the diffusivity (have {list(tracks.columns)})")
    if tracks.duplicated(["track_id", "sample"]).any():
        raise DataError("tracks have a track id twice in one frame")


def _traj(tracks: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"frame": tracks["sample"].to_numpy(np.int64), "particle": tracks["track_id"].to_numpy(np.int64),
                         "x": tracks["x"].to_numpy(np.float64), "y": tracks["y"].to_numpy(np.float64)})


def _pairs(traj: pd.DataFrame, lag: int) -> pd.Series:
    """Number of position pairs exactly ``lag`` frames apart in each track."""
    key = set(zip(traj["particle"].tolist(), traj["frame"].tolist()))
    hits = [(p, f + lag) in key for p, f in zip(traj["particle"].tolist(), traj["frame"].tolist())]
    return pd.Series(hits, index=traj["particle"].to_numpy()).groupby(level=0).sum().astype(np.int64)


def _emsd_d(traj: pd.DataFrame, lag: int, pixel_size: float, frame_interval: float) -> float:
    """``trackpy.emsd`` of a trajectory table at ``lag`` frames, divided by ``4τ``; NaN without a pair."""
    if len(traj) == 0:
        return float("nan")
    import trackpy

    e = trackpy.emsd(traj, mpp=float(pixel_size), fps=1.0 / float(frame_interval), max_lagtime=int(lag), detail=True)
    if int(lag) not in e.index or not e.loc[int(lag), "N"] > 0:
        return float("nan")
    return float(e.loc[int(lag), "msd"]) / (4.0 * int(lag) * float(frame_interval))


def track_diffusivity(tracks: pd.DataFrame, *, lag: int = 1, pixel_size: float = 1.0,
                      frame_interval: float = 1.0) -> pd.DataFrame:
    """Diffusivity of every track from its own MSD at lag ``lag`` (``trackpy.imsd``).

    Parameters
    ----------
    tracks : DataFrame
        ``sample, track_id, x, y`` (pixels).
    lag : int
        ``τ`` in frames.
    pixel_size, frame_interval : float
        Length per pixel and time per frame.

    Returns
    -------
    DataFrame
        Index ``track_id``; ``msd`` (pixel_size² units), ``n_pairs`` and ``D`` (``msd / 4τ``);
        NaN for tracks without a pair ``lag`` frames apart.
    """
    _check(tracks, lag, pixel_size, frame_interval)
    ids = pd.Index(np.unique(tracks["track_id"].to_numpy(np.int64)), name="track_id")
    if len(tracks) == 0:
        return pd.DataFrame({"msd": [], "n_pairs": [], "D": []}, index=ids)
    import trackpy

    traj = _traj(tracks)
    fps = 1.0 / float(frame_interval)
    m = trackpy.imsd(traj, mpp=float(pixel_size), fps=fps, max_lagtime=int(lag))
    tau = lag * float(frame_interval)
    row = m.iloc[int(lag) - 1] if len(m) >= lag else pd.Series(np.nan, index=ids)
    msd = row.reindex(ids).to_numpy(np.float64, copy=True)
    n_pairs = _pairs(traj, int(lag)).reindex(ids).fillna(0).to_numpy(np.int64)
    msd[n_pairs == 0] = np.nan
    return pd.DataFrame({"msd": msd, "n_pairs": n_pairs, "D": msd / (4.0 * tau)}, index=ids)


def ensemble_diffusivity(tracks: pd.DataFrame, *, lag: int = 1, pixel_size: float = 1.0,
                         frame_interval: float = 1.0) -> float:
    """Diffusivity of all tracks pooled: ``trackpy.emsd`` at lag ``lag`` divided by ``4τ``.

    Parameters
    ----------
    tracks : DataFrame
        ``sample, track_id, x, y`` (pixels).
    lag, pixel_size, frame_interval
        See :func:`track_diffusivity`.

    Returns
    -------
    float
        ``D`` in ``pixel_size² / frame_interval`` (px²/frame by default); NaN when no track has
        two positions ``lag`` frames apart.

    Examples
    --------
    >>> t = pd.DataFrame({"sample": [0, 1, 2], "track_id": 0, "x": [0., 2., 4.], "y": 0.})
    >>> ensemble_diffusivity(t)
    1.0
    """
    _check(tracks, lag, pixel_size, frame_interval)
    return _emsd_d(_traj(tracks), int(lag), pixel_size, frame_interval)


def size_bins(sizes: np.ndarray, bins: int | np.ndarray = 4) -> np.ndarray:
    """Bin edges: ``bins`` quantile bins (about equal numbers of tracks each) or the given edges."""
    sizes = np.asarray(sizes, np.float64)
    sizes = sizes[np.isfinite(sizes)]
    if np.ndim(bins) == 0:
        if int(bins) != bins or bins < 1:
            raise ParameterError(f"size bins must be a positive integer or increasing edges, got {bins}")
        if len(sizes) == 0:
            return np.array([0.0, 1.0])
        edges = np.unique(np.quantile(sizes, np.linspace(0, 1, int(bins) + 1)))
        return edges if len(edges) > 1 else np.array([edges[0], edges[0] + 1.0])
    edges = np.asarray(bins, np.float64)
    if edges.ndim != 1 or len(edges) < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise ParameterError("size bin edges must be at least two increasing numbers")
    return edges


def diffusivity_by_size(tracks: pd.DataFrame, *, bins: int | np.ndarray = 4, size_column: str = "size",
                        lag: int = 1, pixel_size: float = 1.0, frame_interval: float = 1.0) -> pd.DataFrame:
    """Diffusivity of the tracks of each size bin (a track's size: the median over its frames).

    Parameters
    ----------
    tracks : DataFrame
        ``sample, track_id, x, y`` and ``size_column`` (pixels; NaN sizes ignored).
    bins : int or array
        Number of quantile bins, or bin edges in pixels.
    lag, pixel_size, frame_interval
        See :func:`track_diffusivity`.

    Returns
    -------
    DataFrame
        One row per bin: ``size_lo, size_hi`` (pixels), ``n_tracks`` (with at least one pair),
        ``n_pairs``, ``D`` (from ``trackpy.emsd`` of the bin's tracks), ``D_median`` and ``D_sem``
        (median and standard error of the per-track values).
    """
    _check(tracks, lag, pixel_size, frame_interval, ("sample", "track_id", "x", "y", size_column))
    per = track_diffusivity(tracks, lag=lag, pixel_size=pixel_size, frame_interval=frame_interval)
    size = tracks.groupby("track_id")[size_column].median().reindex(per.index)
    per = per.assign(size=size.to_numpy(np.float64))
    per = per[np.isfinite(per["size"]) & (per["n_pairs"] > 0)]
    edges = size_bins(per["size"].to_numpy(), bins)
    which = np.clip(np.searchsorted(edges, per["size"].to_numpy(), side="right") - 1, 0, len(edges) - 2)
    inside = (per["size"].to_numpy() >= edges[0]) & (per["size"].to_numpy() <= edges[-1])
    rows = []
    traj = _traj(tracks)
    for b in range(len(edges) - 1):
        members = per.index.to_numpy()[inside & (which == b)]
        d = per.loc[members, "D"].to_numpy(np.float64)
        row = {"size_lo": float(edges[b]), "size_hi": float(edges[b + 1]), "n_tracks": int(len(members)),
               "n_pairs": int(per.loc[members, "n_pairs"].sum()), "D": float("nan"),
               "D_median": float(np.median(d)) if len(d) else float("nan"),
               "D_sem": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")}
        if len(members):
            row["D"] = _emsd_d(traj[traj["particle"].isin(members)], int(lag), pixel_size, frame_interval)
        rows.append(row)
    return pd.DataFrame(rows, columns=["size_lo", "size_hi", "n_tracks", "n_pairs", "D", "D_median", "D_sem"])
