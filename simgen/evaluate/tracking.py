"""Tracking: link detections with trackpy and score tracks with the MOTChallenge metrics.

Pipeline steps (each a small function on DataFrames, trackpy style)::

    drift = estimate_drift(detections, search_range=5)               # stage drift, trackpy.compute_drift
    steady = shift_by_drift(detections, drift)                       # drift subtracted before linking
    tracks = link_tracks(steady, search_range=5, memory=2)           # adds track_id
    tracks = drop_short_tracks(shift_by_drift(tracks, drift, sign=+1), min_length=3)
    result = mot_metrics(tracks, gt_tracks)                          # MOTA, MOTP, IDF1, ...
    rmse = position_rmse(result.matches)

Metric definitions follow TrackEval (the MOTChallenge reference implementation)
exactly: :func:`clear_metrics` and :func:`identity_metrics` take the same
per-frame ``data`` dictionary TrackEval's ``CLEAR`` / ``Identity`` metrics take
and return the same fields (the test suite checks equality on random
sequences).  In particular

* a match needs similarity >= 0.5 (IoU for boxes; for points
  ``sim = max(0, 1 - d / (2 r))`` so that the 0.5 threshold means distance <= ``r``,
  TrackEval's Euclidean similarity with ``zero_distance = 2 r``);
* per frame, the assignment maximises ``1000 * continues_previous_frame + similarity``
  (Hungarian algorithm), i.e. keeps identities from the previous frame first;
* MOTP is the mean *similarity* of matches (higher is better; mean IoU for boxes),
  ``MOTA = (TP - FP - IDSW) / (TP + FN)``, ``IDF1 = IDTP / (IDTP + (IDFP + IDFN) / 2)``;
* MT: tracked in > 80 % of its frames, ML: < 20 %, PT: the rest; Frag counts
  re-starts of tracking of a ground-truth track.

Differences from py-motmetrics are listed in ``docs/evaluate.md`` and shown by
tests in ``tests/evaluate/test_tracking_crosscheck.py``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from simgen.errors import DataError, ParameterError
from simgen.evaluate.matching import BOX_COLUMNS, box_centres, box_iou, check_detections, pairwise_distance
from simgen.progress import track

__all__ = [
    "LINK_STRATEGIES",
    "link_tracks",
    "drop_short_tracks",
    "estimate_drift",
    "shift_by_drift",
    "tracking_data",
    "clear_metrics",
    "identity_metrics",
    "MOTResult",
    "mot_metrics",
    "position_rmse",
    "counts_per_frame",
    "nn_distance_per_frame",
]

LINK_STRATEGIES = ("auto", "numba", "nonrecursive", "recursive", "hybrid", "drop")
_EPS = np.finfo("float").eps


# -- linking ------------------------------------------------------------------
def _with_centres(df: pd.DataFrame) -> pd.DataFrame:
    if "x" in df.columns and "y" in df.columns:
        return df
    if all(c in df.columns for c in BOX_COLUMNS):
        c = box_centres(df[BOX_COLUMNS].to_numpy(np.float64))
        return df.assign(x=c[:, 0], y=c[:, 1])
    raise DataError(f"detections need x, y or box columns x0, y0, x1, y1 (have {list(df.columns)})")


#: Adaptive search (oversize subnetworks only) may shrink the search range down to this fraction.
ADAPTIVE_STOP_FRACTION = 0.2


def link_tracks(
    detections: pd.DataFrame,
    *,
    search_range: float = 5.0,
    memory: int = 2,
    link_strategy: str = "nonrecursive",
    progress: bool = False,
) -> pd.DataFrame:
    """Link per-frame detections into tracks with trackpy (Crocker-Grier).

    Parameters
    ----------
    detections : DataFrame
        Columns ``sample`` (frame) and ``x, y`` (or box columns; box centres are
        used).  Other columns are carried along.
    search_range : float
        Largest displacement between linked frames, in pixels.
    memory : int
        Frames a defect may vanish and still keep its identity.
    link_strategy : str
        trackpy subnet solver (all give the same tracks except ``"drop"``).  Adaptive
        search is used only when a subnetwork is too large to solve exactly (with a warning).  ``"nonrecursive"`` measured fastest on 200 defects/frame
        (see ``benchmarks/evaluate.py``).
    progress : bool
        Show a progress bar over the frames linked on stderr (``"linking"``).

    Returns
    -------
    DataFrame
        The detections sorted by ``sample`` with an int64 ``track_id`` column numbered
        0, 1, ... in order of first detection (the same for every run; trackpy's own
        numbering varies), and ``x, y`` added when they were absent.

    Raises
    ------
    ParameterError
        For a non-positive search range, negative memory or unknown strategy.
    DataError
        For unusable detections or a subnetwork too large for trackpy (then
        lower the search range).
    """
    if not np.isfinite(search_range) or search_range <= 0:
        raise ParameterError(f"search range must be > 0 pixels, got {search_range}")
    if int(memory) != memory or memory < 0:
        raise ParameterError(f"memory must be a non-negative integer, got {memory}")
    if link_strategy not in LINK_STRATEGIES:
        raise ParameterError(f"link strategy must be one of {LINK_STRATEGIES}, got {link_strategy!r}")
    df = _with_centres(detections)
    check_detections(df, "detections", boxes=False)
    df = df.drop(columns=[c for c in ("track_id", "particle") if c in df.columns])
    if len(df) == 0:
        return df.assign(track_id=np.zeros(0, np.int64)).reset_index(drop=True)
    import trackpy
    from trackpy.linking.utils import SubnetOversizeException

    trackpy.quiet()
    df = df.assign(sample=df["sample"].to_numpy(np.int64)).sort_values("sample", kind="stable")
    df = df.reset_index(drop=True)
    link = {"memory": int(memory), "link_strategy": link_strategy}
    try:
        out = _link_frames(df, float(search_range), progress, adaptive_stop=None, **link)
    except SubnetOversizeException:
        # Dense detections at a large search range form subnetworks whose exact solution explodes
        # combinatorially: fall back to trackpy's adaptive search, which shrinks the range only
        # inside such subnetworks (bounded subnet size), and say so.
        warnings.warn(f"trackpy: subnetworks too large at search range {search_range:g} px; the range was "
                      f"reduced locally (adaptive search, down to {ADAPTIVE_STOP_FRACTION:g} x the range)",
                      stacklevel=2)
        try:
            out = _link_frames(df, float(search_range), progress, adaptive_step=0.9,
                               adaptive_stop=ADAPTIVE_STOP_FRACTION * float(search_range), **link)
        except SubnetOversizeException as exc:
            raise DataError(f"trackpy: {exc} (lower --search-range)") from None
    # trackpy numbers particles in an order that varies from run to run (sets of objects); number
    # tracks by first detection instead, so the same detections always give the same file
    out = out.rename(columns={"particle": "track_id"})
    out["track_id"] = pd.factorize(out["track_id"].to_numpy())[0].astype(np.int64)
    return out.reset_index(drop=True)


def _link_frames(df: pd.DataFrame, search_range: float, progress: bool, **kwargs) -> pd.DataFrame:
    """``trackpy.link`` frame by frame: its own steps (``coords_from_df`` + ``link_iter``), with a bar.

    ``df`` is sorted by an int64 ``sample`` column; returns it with trackpy's ``particle`` column.
    """
    import trackpy
    from trackpy.linking.utils import coords_from_df

    frames = df["sample"].to_numpy(np.int64)
    n_frames = int(frames[-1] - frames[0] + 1)  # coords_from_df yields empty frames in gaps too
    ids: list = []
    steps = trackpy.link_iter(coords_from_df(df, ["x", "y"], "sample"), search_range, **kwargs)
    for _t, frame_ids in track(steps, total=n_frames, description="linking", enabled=progress):
        ids.extend(frame_ids)
    return df.assign(particle=np.asarray(ids, np.int64))


def drop_short_tracks(tracks: pd.DataFrame, min_length: int = 1) -> pd.DataFrame:
    """Keep the tracks detected in at least ``min_length`` frames (gaps do not count).

    Parameters
    ----------
    tracks : DataFrame
        Columns ``sample`` and ``track_id``.
    min_length : int
        Fewest detections a kept track has (1 keeps everything).

    Returns
    -------
    DataFrame
        The rows of the kept tracks, in their order, index reset.
    """
    if int(min_length) != min_length or min_length < 1:
        raise ParameterError(f"minimum track length must be an integer >= 1, got {min_length}")
    if "track_id" not in tracks.columns:
        raise DataError(f"tracks need a 'track_id' column (have {list(tracks.columns)})")
    if min_length == 1 or len(tracks) == 0:
        return tracks.reset_index(drop=True)
    size = tracks.groupby("track_id")["track_id"].transform("size").to_numpy()
    return tracks[size >= int(min_length)].reset_index(drop=True)


def estimate_drift(detections: pd.DataFrame, *, search_range: float = 5.0, memory: int = 0, smoothing: int = 0,
                   n_frames: int | None = None) -> pd.DataFrame:
    """Stage drift of every frame from the mean motion of linked detections (``trackpy.compute_drift``).

    The detections are linked with trackpy (:func:`link_tracks`), and the drift is the cumulative
    mean displacement of the defects linked between consecutive frames, as trackpy computes it.

    Parameters
    ----------
    detections : DataFrame
        ``sample`` and ``x, y`` (or box columns).
    search_range, memory : float, int
        Linking for the estimate (pixels, frames).
    smoothing : int
        Forward rolling mean over this many frames (0: none).
    n_frames : int, optional
        Frames to report (default: highest frame + 1).

    Returns
    -------
    DataFrame
        Index ``sample`` (0 .. n_frames-1), columns ``x, y``: the drift in pixels relative to
        frame 0 (frames without links keep the previous value).
    """
    if int(smoothing) != smoothing or smoothing < 0:
        raise ParameterError(f"drift smoothing must be a non-negative integer, got {smoothing}")
    linked = link_tracks(detections, search_range=search_range, memory=memory)
    n = int(linked["sample"].max()) + 1 if len(linked) else 0
    n = n if n_frames is None else int(n_frames)
    frames = pd.RangeIndex(n, name="sample")
    if len(linked) == 0:
        return pd.DataFrame({"x": np.zeros(n), "y": np.zeros(n)}, index=frames)
    import trackpy

    traj = linked[["x", "y", "sample", "track_id"]].rename(columns={"sample": "frame", "track_id": "particle"})
    drift = trackpy.compute_drift(traj, smoothing=int(smoothing), pos_columns=["x", "y"])
    drift = drift.reindex(frames).ffill().fillna(0.0)
    drift.index.name = "sample"
    return drift[["x", "y"]].astype(np.float64)


def shift_by_drift(df: pd.DataFrame, drift: pd.DataFrame, *, sign: float = -1.0) -> pd.DataFrame:
    """Subtract (``sign=-1``) or add back (``sign=+1``) the drift of each row's frame.

    Shifts ``x, y`` and the box columns when present; frames missing from ``drift`` are not moved.
    """
    if sign not in (-1, 1, -1.0, 1.0):
        raise ParameterError(f"sign must be -1 or +1, got {sign}")
    d = drift.reindex(df["sample"].to_numpy(np.int64)).fillna(0.0)
    dx = sign * d["x"].to_numpy(np.float64)
    dy = sign * d["y"].to_numpy(np.float64)
    out = df.copy()
    for col, delta in (("x", dx), ("x0", dx), ("x1", dx), ("y", dy), ("y0", dy), ("y1", dy)):
        if col in out.columns:
            out[col] = (out[col].to_numpy(np.float64) + delta).astype(out[col].dtype)
    return out


# -- TrackEval-style data --------------------------------------------------------
def _similarity_kind(pred, gt, similarity):
    boxes = all(c in pred.columns for c in BOX_COLUMNS) and all(c in gt.columns for c in BOX_COLUMNS)
    if similarity == "auto":
        return "iou" if boxes else "distance"
    if similarity == "iou" and not boxes:
        raise DataError("similarity 'iou' needs box columns x0, y0, x1, y1 in both tracks tables")
    if similarity not in ("iou", "distance"):
        raise ParameterError(f"similarity must be 'auto', 'iou' or 'distance', got {similarity!r}")
    return similarity


def _check_tracks(df: pd.DataFrame, what: str) -> pd.DataFrame:
    if "track_id" not in df.columns:
        raise DataError(f"{what} have no track_id column; link detections first (simgen track)")
    df = _with_centres(df)
    check_detections(df, what, boxes=False)
    tid = df["track_id"].to_numpy()
    if len(df) and (tid.dtype.kind == "f" and (not np.all(np.isfinite(tid)) or np.any(tid != np.round(tid)))):
        raise DataError(f"{what}: track ids must be integers (some are missing)")
    if len(df) and tid.dtype.kind not in "iuf":
        raise DataError(f"{what}: track ids must be integers, got {tid.dtype}")
    if len(df):
        dup = pd.DataFrame({"s": df["sample"].to_numpy(np.int64), "t": tid.astype(np.int64)}).duplicated().to_numpy()
        if dup.any():
            i = int(np.flatnonzero(dup)[0])
            raise DataError(
                f"{what}: track id {int(tid[i])} occurs more than once in frame {int(df['sample'].iloc[i])}"
            )
    return df


def tracking_data(
    pred: pd.DataFrame,
    gt: pd.DataFrame,
    *,
    similarity: str = "auto",
    max_distance: float = 5.0,
    n_frames: int | None = None,
) -> dict:
    """Build the per-frame ``data`` dictionary TrackEval's metrics consume.

    Parameters
    ----------
    pred, gt : DataFrame
        Tracks with ``sample, track_id`` and ``x, y`` and/or box columns.
    similarity : {"auto", "iou", "distance"}
        Box IoU, or Euclidean similarity ``max(0, 1 - d / (2 * max_distance))``;
        ``"auto"`` uses IoU when both tables have boxes.
    max_distance : float
        Distance (pixels) that corresponds to similarity 0.5 (the match threshold).
    n_frames : int, optional
        Number of frames (default: highest frame id + 1).

    Returns
    -------
    dict
        TrackEval keys (``num_timesteps, num_gt_ids, num_tracker_ids, num_gt_dets,
        num_tracker_dets, gt_ids, tracker_ids, similarity_scores``) with ids
        relabelled to ``0..n-1`` in sorted order, plus ``gt_rows, tracker_rows``
        (row positions per frame), ``gt_id_values, tracker_id_values`` (original
        ids) and ``similarity``.
    """
    pred = _check_tracks(pred, "predicted tracks")
    gt = _check_tracks(gt, "ground-truth tracks")
    kind = _similarity_kind(pred, gt, similarity)
    if kind == "distance" and not (np.isfinite(max_distance) and max_distance > 0):
        raise ParameterError(f"max distance must be > 0 pixels, got {max_distance}")
    ps = pred["sample"].to_numpy(np.int64)
    gs = gt["sample"].to_numpy(np.int64)
    top = int(max(ps.max(initial=-1), gs.max(initial=-1)) + 1)
    if n_frames is None:
        n_frames = top
    elif n_frames < top:
        raise DataError(f"tracks reach frame {top - 1} but the sequence has {n_frames} frames")
    g_vals, g_ids = np.unique(gt["track_id"].to_numpy(np.int64), return_inverse=True)
    p_vals, p_ids = np.unique(pred["track_id"].to_numpy(np.int64), return_inverse=True)
    g_order = np.argsort(gs, kind="stable")
    p_order = np.argsort(ps, kind="stable")
    frames = np.arange(n_frames)
    glo, ghi = np.searchsorted(gs[g_order], frames, "left"), np.searchsorted(gs[g_order], frames, "right")
    plo, phi = np.searchsorted(ps[p_order], frames, "left"), np.searchsorted(ps[p_order], frames, "right")
    if kind == "iou":
        gpos = gt[BOX_COLUMNS].to_numpy(np.float64)
        ppos = pred[BOX_COLUMNS].to_numpy(np.float64)
    else:
        gpos = gt[["x", "y"]].to_numpy(np.float64)
        ppos = pred[["x", "y"]].to_numpy(np.float64)
    data: dict[str, Any] = {k: [] for k in ("gt_ids", "tracker_ids", "similarity_scores", "gt_rows", "tracker_rows")}
    for t in range(n_frames):
        gr = g_order[glo[t]:ghi[t]]
        pr = p_order[plo[t]:phi[t]]
        if kind == "iou":
            sim = box_iou(gpos[gr], ppos[pr])
        else:
            sim = np.maximum(0.0, 1.0 - pairwise_distance(gpos[gr], ppos[pr]) / (2.0 * max_distance))
        data["gt_ids"].append(g_ids[gr].astype(np.int64))
        data["tracker_ids"].append(p_ids[pr].astype(np.int64))
        data["similarity_scores"].append(sim)
        data["gt_rows"].append(gr)
        data["tracker_rows"].append(pr)
    data.update(
        num_timesteps=int(n_frames), num_gt_ids=len(g_vals), num_tracker_ids=len(p_vals),
        num_gt_dets=len(gt), num_tracker_dets=len(pred), gt_id_values=g_vals, tracker_id_values=p_vals,
        similarity=kind, max_distance=float(max_distance),
    )
    return data


# -- CLEAR MOT ---------------------------------------------------------------------
def _max_assignment(score: np.ndarray):
    """Rows/cols of a maximum-weight assignment restricted to entries > eps.

    Same optimum as ``linear_sum_assignment(-score)`` on the full matrix (the
    problem splits into independent parts along zero entries); uncontested
    pairs are taken directly and only the rest goes to the Hungarian solver.
    """
    pos = score > _EPS
    rdeg = pos.sum(axis=1)
    cdeg = pos.sum(axis=0)
    r, c = np.nonzero(pos)
    lone = (rdeg[r] == 1) & (cdeg[c] == 1)
    rows, cols = [r[lone]], [c[lone]]
    rest_r = np.flatnonzero(rdeg > 0)
    rest_c = np.flatnonzero(cdeg > 0)
    if len(r) > lone.sum():
        rest_r = np.setdiff1d(rest_r, r[lone], assume_unique=True)
        rest_c = np.setdiff1d(rest_c, c[lone], assume_unique=True)
        sub = score[np.ix_(rest_r, rest_c)]
        sr, sc = linear_sum_assignment(-sub)
        ok = sub[sr, sc] > _EPS
        rows.append(rest_r[sr[ok]])
        cols.append(rest_c[sc[ok]])
    return np.concatenate(rows), np.concatenate(cols)


_CLEAR_INT = ["CLR_TP", "CLR_FN", "CLR_FP", "IDSW", "MT", "PT", "ML", "Frag", "CLR_Frames"]
_CLEAR_FLOAT = ["MOTA", "MOTP", "MODA", "CLR_Re", "CLR_Pr", "MTR", "PTR", "MLR", "sMOTA", "CLR_F1",
                "FP_per_frame", "MOTAL", "MOTP_sum"]


def _clear_final(res: dict) -> dict:
    """TrackEval ``CLEAR._compute_final_fields``."""
    n_ids = res["MT"] + res["ML"] + res["PT"]
    tp, fn, fp, idsw = res["CLR_TP"], res["CLR_FN"], res["CLR_FP"], res["IDSW"]
    res["MTR"] = res["MT"] / max(1.0, n_ids)
    res["MLR"] = res["ML"] / max(1.0, n_ids)
    res["PTR"] = res["PT"] / max(1.0, n_ids)
    res["CLR_Re"] = tp / max(1.0, tp + fn)
    res["CLR_Pr"] = tp / max(1.0, tp + fp)
    res["MODA"] = (tp - fp) / max(1.0, tp + fn)
    res["MOTA"] = (tp - fp - idsw) / max(1.0, tp + fn)
    res["MOTP"] = res["MOTP_sum"] / max(1.0, tp)
    res["sMOTA"] = (res["MOTP_sum"] - fp - idsw) / max(1.0, tp + fn)
    res["CLR_F1"] = tp / max(1.0, tp + 0.5 * fn + 0.5 * fp)
    res["FP_per_frame"] = fp / max(1.0, res["CLR_Frames"])
    safe_log_idsw = np.log10(idsw) if idsw > 0 else idsw
    res["MOTAL"] = (tp - fp - safe_log_idsw) / max(1.0, tp + fn)
    return res


@overload
def clear_metrics(data: dict, threshold: float = ..., return_matches: Literal[False] = ...) -> dict[str, float]: ...


@overload
def clear_metrics(data: dict, threshold: float, return_matches: Literal[True]) -> tuple[dict[str, float],
                                                                                      list[np.ndarray]]: ...


@overload
def clear_metrics(data: dict, threshold: float = ..., *,
                  return_matches: Literal[True]) -> tuple[dict[str, float], list[np.ndarray]]: ...


@overload
def clear_metrics(data: dict, threshold: float = ...,
                  return_matches: bool = ...) -> dict[str, float] | tuple[dict[str, float], list[np.ndarray]]: ...


def clear_metrics(data: dict, threshold: float = 0.5,
                  return_matches: bool = False) -> dict[str, float] | tuple[dict[str, float], list[np.ndarray]]:
    """CLEAR MOT metrics of one sequence, as TrackEval's ``CLEAR.eval_sequence``.

    Parameters
    ----------
    data : dict
        Per-frame data (see :func:`tracking_data`; a TrackEval ``data`` dict works too).
    threshold : float
        Similarity needed for a match (MOTChallenge: 0.5).
    return_matches : bool
        Also return the matched pairs ``(t, gt_index_in_frame, tracker_index_in_frame)``.

    Returns
    -------
    dict
        ``CLR_TP, CLR_FN, CLR_FP, IDSW, MT, PT, ML, Frag, MOTA, MOTP, MODA, CLR_Re,
        CLR_Pr, MTR, PTR, MLR, sMOTA, CLR_F1, FP_per_frame, MOTAL, MOTP_sum, CLR_Frames``
        (and the matches as a second value when ``return_matches``).

    Notes
    -----
    TrackEval quirks kept on purpose: a sequence without predictions (or without
    ground truth) returns early with only the counts and ``MLR = 1`` set (MOTA 0);
    frames without ground truth or without predictions do not reset the
    "tracked in the previous frame" state used for ID-switch matching and Frag.
    """
    res: dict[str, float] = {k: 0 for k in _CLEAR_INT + _CLEAR_FLOAT}  # ints and floats, as in TrackEval
    matches = [np.zeros(0, np.int64)] * 3
    if data["num_tracker_dets"] == 0:
        res["CLR_FN"] = data["num_gt_dets"]
        res["ML"] = data["num_gt_ids"]
        res["MLR"] = 1.0
        return (res, matches) if return_matches else res
    if data["num_gt_dets"] == 0:
        res["CLR_FP"] = data["num_tracker_dets"]
        res["MLR"] = 1.0
        return (res, matches) if return_matches else res
    n_ids = data["num_gt_ids"]
    gt_id_count = np.zeros(n_ids)
    gt_matched_count = np.zeros(n_ids)
    gt_frag_count = np.zeros(n_ids)
    prev_tracker_id = np.full(n_ids, np.nan)
    prev_timestep_tracker_id = np.full(n_ids, np.nan)
    tp = fn = fp = idsw = 0
    motp_sum = 0.0
    m_t, m_r, m_c = [], [], []
    for t, (gt_ids_t, tracker_ids_t) in enumerate(zip(data["gt_ids"], data["tracker_ids"])):
        gt_ids_t = np.asarray(gt_ids_t, np.int64)
        tracker_ids_t = np.asarray(tracker_ids_t, np.int64)
        if len(gt_ids_t) == 0:
            fp += len(tracker_ids_t)
            continue
        if len(tracker_ids_t) == 0:
            fn += len(gt_ids_t)
            gt_id_count[gt_ids_t] += 1
            continue
        sim = data["similarity_scores"][t]
        score = (tracker_ids_t[None, :] == prev_timestep_tracker_id[gt_ids_t][:, None]) * 1000.0 + sim
        score[sim < threshold - _EPS] = 0
        rows, cols = _max_assignment(score)
        matched_gt = gt_ids_t[rows]
        matched_tr = tracker_ids_t[cols]
        prev = prev_tracker_id[matched_gt]
        idsw += int(np.sum(~np.isnan(prev) & (matched_tr != prev)))
        gt_id_count[gt_ids_t] += 1
        gt_matched_count[matched_gt] += 1
        not_previously_tracked = np.isnan(prev_timestep_tracker_id)
        prev_tracker_id[matched_gt] = matched_tr
        prev_timestep_tracker_id[:] = np.nan
        prev_timestep_tracker_id[matched_gt] = matched_tr
        gt_frag_count += not_previously_tracked & ~np.isnan(prev_timestep_tracker_id)
        n = len(rows)
        tp += n
        fn += len(gt_ids_t) - n
        fp += len(tracker_ids_t) - n
        if n:
            motp_sum += float(sim[rows, cols].sum())
            if return_matches:
                m_t.append(np.full(n, t, np.int64))
                m_r.append(rows)
                m_c.append(cols)
    ratio = gt_matched_count[gt_id_count > 0] / gt_id_count[gt_id_count > 0]
    res.update(CLR_TP=tp, CLR_FN=fn, CLR_FP=fp, IDSW=idsw, MOTP_sum=motp_sum)
    res["MT"] = int(np.sum(ratio > 0.8))
    res["PT"] = int(np.sum(ratio >= 0.2)) - res["MT"]
    res["ML"] = n_ids - res["MT"] - res["PT"]
    res["Frag"] = int(np.sum(gt_frag_count[gt_frag_count > 0] - 1))
    res["CLR_Frames"] = data["num_timesteps"]
    res = _clear_final(res)
    if return_matches:
        matches = [np.concatenate(x) if x else np.zeros(0, np.int64) for x in (m_t, m_r, m_c)]
        return res, matches
    return res


# -- identity metrics -------------------------------------------------------------
def _max_weight_matching(gi: np.ndarray, ti: np.ndarray, w: np.ndarray, n_g: int, n_t: int) -> float:
    """Total weight of a maximum-weight bipartite matching on a sparse edge list.

    Split into connected components; single-edge components are taken directly,
    the others solved with the Hungarian algorithm.
    """
    if len(w) == 0:
        return 0.0
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = n_g + n_t
    graph = coo_matrix((np.ones(len(w)), (gi, n_g + ti)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    comp = label[gi]
    edges_per_comp = np.bincount(comp)
    single = edges_per_comp[comp] == 1
    total = float(w[single].sum())
    rest = np.flatnonzero(~single)
    if len(rest):
        order = rest[np.argsort(comp[rest], kind="stable")]
        bounds = np.flatnonzero(np.diff(comp[order])) + 1
        for part in np.split(order, bounds):
            rg, rinv = np.unique(gi[part], return_inverse=True)
            rt, tinv = np.unique(ti[part], return_inverse=True)
            mat = np.zeros((len(rg), len(rt)))
            mat[rinv, tinv] = w[part]
            r, c = linear_sum_assignment(mat, maximize=True)
            total += float(mat[r, c].sum())
    return total


def identity_metrics(data: dict, threshold: float = 0.5) -> dict[str, float]:
    """ID metrics (IDF1, IDP, IDR, IDTP, IDFP, IDFN), as TrackEval's ``Identity.eval_sequence``.

    The global one-to-one assignment of ground-truth to predicted identities
    maximises the number of frames in which the pair is matched (similarity >=
    ``threshold``); TrackEval solves the equivalent ``(G+T) x (G+T)`` min-cost
    problem, this solves the sparse max-weight matching component by component.
    """
    res: dict[str, float] = {"IDF1": 0, "IDR": 0, "IDP": 0, "IDTP": 0, "IDFN": 0, "IDFP": 0}
    if data["num_tracker_dets"] == 0:
        res["IDFN"] = data["num_gt_dets"]
        return res
    if data["num_gt_dets"] == 0:
        res["IDFP"] = data["num_tracker_dets"]
        return res
    n_g, n_t = data["num_gt_ids"], data["num_tracker_ids"]
    key_parts: list[np.ndarray] = []
    g_all, t_all = [], []
    for gt_ids_t, tracker_ids_t, sim in zip(data["gt_ids"], data["tracker_ids"], data["similarity_scores"]):
        gt_ids_t = np.asarray(gt_ids_t, np.int64)
        tracker_ids_t = np.asarray(tracker_ids_t, np.int64)
        g_all.append(gt_ids_t)
        t_all.append(tracker_ids_t)
        if len(gt_ids_t) and len(tracker_ids_t):
            i, j = np.nonzero(np.asarray(sim) >= threshold)
            key_parts.append(gt_ids_t[i] * n_t + tracker_ids_t[j])
    keys = np.concatenate(key_parts) if key_parts else np.zeros(0, np.int64)
    uk, counts = np.unique(keys, return_counts=True)
    gi, ti = np.divmod(uk, n_t)
    n_gt_dets = int(sum(len(g) for g in g_all))
    n_tr_dets = int(sum(len(t) for t in t_all))
    idtp = int(round(_max_weight_matching(gi, ti, counts.astype(np.float64), n_g, n_t)))
    res["IDTP"] = idtp
    res["IDFN"] = n_gt_dets - idtp
    res["IDFP"] = n_tr_dets - idtp
    res["IDR"] = idtp / max(1.0, idtp + res["IDFN"])
    res["IDP"] = idtp / max(1.0, idtp + res["IDFP"])
    res["IDF1"] = idtp / max(1.0, idtp + 0.5 * res["IDFP"] + 0.5 * res["IDFN"])
    return res


# -- DataFrame front end ----------------------------------------------------------
@dataclass
class MOTResult:
    """Result of :func:`mot_metrics`.

    Attributes
    ----------
    summary : dict
        CLEAR and identity fields (TrackEval names) plus ``MOTP_px`` (mean centre
        distance of matches in pixels), ``RMSE_px``, ``num_gt_ids``, ``num_pred_ids``,
        ``similarity`` and ``threshold``.
    matches : DataFrame
        One row per matched (frame, ground truth, prediction): ``sample, gt_row,
        pred_row, gt_id, pred_id, similarity, dx, dy, distance`` (rows are positions
        in the input tables; ``dx = x_pred - x_gt``).
    """

    summary: dict
    matches: pd.DataFrame


def mot_metrics(
    pred: pd.DataFrame,
    gt: pd.DataFrame,
    *,
    similarity: str = "auto",
    threshold: float = 0.5,
    max_distance: float = 5.0,
    n_frames: int | None = None,
) -> MOTResult:
    """MOTA, MOTP, IDF1, MT, ML, ID switches, fragmentations (TrackEval definitions).

    Parameters
    ----------
    pred, gt : DataFrame
        Tracks: ``sample`` (frame), ``track_id`` and ``x, y`` and/or box columns.
    similarity : {"auto", "iou", "distance"}
        See :func:`tracking_data`.
    threshold : float
        Similarity threshold for a match (0.5 in MOTChallenge; with
        ``similarity="distance"`` keep 0.5 so that it means distance <= ``max_distance``).
    max_distance : float
        Matching radius in pixels for point tracks.
    n_frames : int, optional
        Sequence length (default: highest frame id + 1).

    Returns
    -------
    MOTResult
    """
    if not 0.0 < threshold <= 1.0:
        raise ParameterError(f"similarity threshold must be in (0, 1], got {threshold}")
    pred = _with_centres(pred).reset_index(drop=True)
    gt = _with_centres(gt).reset_index(drop=True)
    data = tracking_data(pred, gt, similarity=similarity, max_distance=max_distance, n_frames=n_frames)
    clear, (mt, mr, mc) = clear_metrics(data, threshold, return_matches=True)
    ident = identity_metrics(data, threshold)
    gt_rows = np.array([data["gt_rows"][t][r] for t, r in zip(mt.tolist(), mr.tolist())], np.int64)
    pr_rows = np.array([data["tracker_rows"][t][c] for t, c in zip(mt.tolist(), mc.tolist())], np.int64)
    sims = np.array([data["similarity_scores"][t][r, c] for t, r, c in zip(mt.tolist(), mr.tolist(), mc.tolist())])
    gxy = gt[["x", "y"]].to_numpy(np.float64)[gt_rows] if len(gt_rows) else np.zeros((0, 2))
    pxy = pred[["x", "y"]].to_numpy(np.float64)[pr_rows] if len(pr_rows) else np.zeros((0, 2))
    d = pxy - gxy
    dist = np.hypot(d[:, 0], d[:, 1])
    matches = pd.DataFrame({
        "sample": mt, "gt_row": gt_rows, "pred_row": pr_rows,
        "gt_id": gt["track_id"].to_numpy(np.int64)[gt_rows] if len(gt_rows) else np.zeros(0, np.int64),
        "pred_id": pred["track_id"].to_numpy(np.int64)[pr_rows] if len(pr_rows) else np.zeros(0, np.int64),
        "similarity": sims.astype(np.float64), "dx": d[:, 0], "dy": d[:, 1], "distance": dist,
    })
    summary = {**{k: _plain(v) for k, v in clear.items()}, **{k: _plain(v) for k, v in ident.items()}}
    summary.update(
        MOTP_px=float(dist.mean()) if len(dist) else float("nan"),
        RMSE_px=position_rmse(matches),
        num_gt_ids=int(data["num_gt_ids"]), num_pred_ids=int(data["num_tracker_ids"]),
        similarity=data["similarity"], threshold=float(threshold),
    )
    if data["similarity"] == "distance":
        summary["max_distance"] = float(max_distance)
    return MOTResult(summary, matches)


def _plain(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


def position_rmse(matches: pd.DataFrame) -> float:
    """Root-mean-square position error of matched predictions (pixels; NaN if none).

    ``sqrt(mean(dx**2 + dy**2))`` over the matches of :func:`mot_metrics`.
    """
    if len(matches) == 0:
        return float("nan")
    return float(np.sqrt(np.mean(matches["dx"].to_numpy() ** 2 + matches["dy"].to_numpy() ** 2)))


# -- per-frame statistics ------------------------------------------------------------
def counts_per_frame(df: pd.DataFrame, n_frames: int | None = None) -> np.ndarray:
    """Number of objects in each frame ``0..n_frames-1``."""
    s = df["sample"].to_numpy(np.int64)
    n = int(s.max(initial=-1) + 1) if n_frames is None else int(n_frames)
    return np.bincount(s[s < n], minlength=n)[:n]


def nn_distance_per_frame(df: pd.DataFrame, n_frames: int | None = None) -> np.ndarray:
    """Mean nearest-neighbour distance (pixels) between objects of each frame (NaN if < 2 objects)."""
    from scipy.spatial import cKDTree

    df = _with_centres(df)
    s = df["sample"].to_numpy(np.int64)
    n = int(s.max(initial=-1) + 1) if n_frames is None else int(n_frames)
    order = np.argsort(s, kind="stable")
    s = s[order]
    xy = df[["x", "y"]].to_numpy(np.float64)[order]
    out = np.full(n, np.nan)
    lo = np.searchsorted(s, np.arange(n), "left")
    hi = np.searchsorted(s, np.arange(n), "right")
    for t in range(n):
        if hi[t] - lo[t] >= 2:
            d, _ = cKDTree(xy[lo[t]:hi[t]]).query(xy[lo[t]:hi[t]], k=2)
            out[t] = d[:, 1].mean()
    return out
