"""Linking with trackpy, MOT metrics on hand-made cases, per-frame statistics."""

import numpy as np
import pandas as pd
import pytest

from simgen.errors import DataError, ParameterError
from simgen.evaluate.tracking import (
    counts_per_frame,
    link_tracks,
    mot_metrics,
    nn_distance_per_frame,
    position_rmse,
)


def _walkers(rng, n=12, frames=25, spacing=40.0, step=0.7):
    start = np.array([(spacing * (i % 4) + 20, spacing * (i // 4) + 20) for i in range(n)], float)
    pos = start + np.cumsum(rng.normal(0, step, (frames, n, 2)), axis=0)
    t = np.repeat(np.arange(frames), n)
    ids = np.tile(np.arange(n), frames)
    return pd.DataFrame({"sample": t, "track_id": ids, "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel()})


def test_link_recovers_well_separated_tracks(rng):
    gt = _walkers(rng)
    det = gt.drop(columns="track_id").sample(frac=1, random_state=1)  # order must not matter
    tracks = link_tracks(det, search_range=5, memory=0)
    assert tracks["sample"].is_monotonic_increasing
    pairs = tracks.merge(gt, on=["sample", "x", "y"])
    # one linked id per true id and vice versa
    assert pairs.groupby("track_id_x")["track_id_y"].nunique().max() == 1
    assert pairs.groupby("track_id_y")["track_id_x"].nunique().max() == 1
    assert tracks["track_id"].nunique() == 12


def test_memory_bridges_missed_frames(rng):
    gt = _walkers(rng, n=4)
    det = gt[~((gt["track_id"] == 2) & gt["sample"].isin([10, 11]))].drop(columns="track_id")
    assert link_tracks(det, search_range=5, memory=0)["track_id"].nunique() == 5
    assert link_tracks(det, search_range=5, memory=2)["track_id"].nunique() == 4


def test_link_strategies_agree(rng):
    det = _walkers(rng, n=8).drop(columns="track_id")
    ref = link_tracks(det, link_strategy="nonrecursive")["track_id"].to_numpy()
    for strategy in ("recursive", "auto"):
        np.testing.assert_array_equal(link_tracks(det, link_strategy=strategy)["track_id"].to_numpy(), ref)


def test_link_uses_box_centres_and_handles_empty_input():
    det = pd.DataFrame({"sample": [0, 1], "x0": [0.0, 1.0], "y0": [0.0, 0.0], "x1": [4.0, 5.0], "y1": [4.0, 4.0]})
    tracks = link_tracks(det)
    assert tracks["track_id"].nunique() == 1 and tracks["x"].tolist() == [2.0, 3.0]
    empty = link_tracks(det.iloc[:0])
    assert len(empty) == 0 and "track_id" in empty.columns


def test_link_bad_parameters():
    det = pd.DataFrame({"sample": [0], "x": [0.0], "y": [0.0]})
    for kwargs in ({"search_range": 0}, {"memory": -1}, {"memory": 1.5}, {"link_strategy": "magic"}):
        with pytest.raises(ParameterError):
            link_tracks(det, **kwargs)


def _track(frames, tid, x, y=0.0, half=2.0):
    frames = np.asarray(frames)
    x = np.broadcast_to(np.asarray(x, float), frames.shape)
    return pd.DataFrame({"sample": frames, "track_id": tid, "x": x, "y": y,
                         "x0": x - half, "y0": y - half, "x1": x + half, "y1": y + half})


def test_mot_metrics_on_an_id_switch_and_a_fragment():
    gt = pd.concat([_track(range(10), 0, 10.0), _track(range(10), 1, 50.0)], ignore_index=True)
    # track 0 predicted as id 7 then id 8 (one switch); track 1 missed in frames 4-5 (one fragmentation)
    pred = pd.concat([_track(range(5), 7, 10.3), _track(range(5, 10), 8, 10.3),
                      _track([0, 1, 2, 3, 6, 7, 8, 9], 9, 50.0)], ignore_index=True)
    r = mot_metrics(pred, gt)
    s = r.summary
    assert s["similarity"] == "iou"
    assert (s["CLR_TP"], s["CLR_FN"], s["CLR_FP"], s["IDSW"], s["Frag"]) == (18, 2, 0, 1, 1)
    assert s["MOTA"] == pytest.approx((18 - 0 - 1) / 20)
    iou = (4 - 0.3) * 4 / ((4 + 0.3) * 4)
    assert s["MOTP"] == pytest.approx((10 * iou + 8 * 1.0) / 18)
    # IDF1: gt 0 <-> id 7 for 5 frames, gt 1 <-> id 9 for 8 frames
    assert s["IDTP"] == 13 and s["IDFN"] == 7 and s["IDFP"] == 5
    assert s["IDF1"] == pytest.approx(13 / (13 + 6))
    # track 1 is tracked in exactly 8 of 10 frames: MT needs > 80 % (TrackEval), so it is PT
    assert (s["MT"], s["PT"], s["ML"]) == (1, 1, 0)
    assert s["RMSE_px"] == pytest.approx(np.sqrt(10 * 0.09 / 18))
    assert len(r.matches) == 18 and set(r.matches.columns) >= {"gt_id", "pred_id", "dx", "distance"}


def test_point_tracks_use_distance_similarity():
    gt = _track(range(5), 0, 10.0).drop(columns=["x0", "y0", "x1", "y1"])
    near = _track(range(5), 3, 13.0).drop(columns=["x0", "y0", "x1", "y1"])
    s = mot_metrics(near, gt, max_distance=5.0).summary
    assert s["similarity"] == "distance" and s["CLR_TP"] == 5
    assert s["MOTP"] == pytest.approx(1 - 3 / 10) and s["MOTP_px"] == pytest.approx(3.0)
    assert mot_metrics(near, gt, max_distance=2.9).summary["CLR_TP"] == 0


def test_empty_predictions_follow_trackeval():
    gt = _track(range(5), 0, 10.0)
    s = mot_metrics(gt.iloc[:0], gt).summary
    assert s["CLR_FN"] == 5 and s["ML"] == 1 and s["MOTA"] == 0 and s["IDF1"] == 0 and s["MLR"] == 1.0
    assert np.isnan(s["RMSE_px"])


def test_bad_track_tables():
    gt = _track(range(3), 0, 10.0)
    with pytest.raises(DataError, match="track_id"):
        mot_metrics(gt.drop(columns="track_id"), gt)
    dup = pd.concat([gt, gt.iloc[:1]], ignore_index=True)
    with pytest.raises(DataError, match="more than once"):
        mot_metrics(dup, gt)
    with pytest.raises(DataError, match="frames"):
        mot_metrics(gt, gt, n_frames=2)
    with pytest.raises(DataError, match="needs box"):
        mot_metrics(gt[["sample", "track_id", "x", "y"]], gt, similarity="iou")
    with pytest.raises(ParameterError):
        mot_metrics(gt, gt, threshold=0)


def test_counts_and_nearest_neighbour_distance_per_frame():
    df = pd.DataFrame({"sample": [0, 0, 0, 2], "x": [0.0, 3.0, 3.0, 1.0], "y": [0.0, 4.0, 0.0, 1.0]})
    assert counts_per_frame(df, 4).tolist() == [3, 0, 1, 0]
    nn = nn_distance_per_frame(df, 4)
    assert nn[0] == pytest.approx((3 + 4 + 3) / 3) and np.isnan(nn[1]) and np.isnan(nn[2])


def test_position_rmse():
    m = pd.DataFrame({"dx": [3.0, 0.0], "dy": [4.0, 0.0]})
    assert position_rmse(m) == pytest.approx(np.sqrt(25 / 2))


def test_dense_detections_at_a_large_search_range_link_adaptively_and_say_so():
    """Once `simgen track` hung or failed on dense frames at --search-range 30."""
    from simgen.evaluate.tracking import link_tracks

    rng = np.random.default_rng(0)
    det = pd.concat([pd.DataFrame({"sample": f, "x": rng.uniform(0, 256, 120), "y": rng.uniform(0, 256, 120)})
                     for f in range(6)], ignore_index=True)
    with pytest.warns(UserWarning, match="adaptive search"):
        out = link_tracks(det, search_range=30.0, memory=2)
    assert len(out) == len(det) and out["track_id"].nunique() < len(det)
