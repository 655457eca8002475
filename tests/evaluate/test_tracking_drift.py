"""Drift correction before linking (trackpy.compute_drift) and the minimum track length."""

import numpy as np
import pandas as pd
import pytest

from simgen.errors import DataError, ParameterError
from simgen.evaluate.tracking import drop_short_tracks, estimate_drift, link_tracks, shift_by_drift


def _drifting(n_frames=10, step=(3.0, -1.0), seed=0):
    """A 5 x 5 lattice of defects (pitch 12 px) jittering by 0.3 px while the whole field drifts by ``step`` per frame."""
    rng = np.random.default_rng(seed)
    gx, gy = np.meshgrid(np.arange(5) * 12.0 + 20, np.arange(5) * 12.0 + 20)
    base = np.column_stack([gx.ravel(), gy.ravel()])
    rows = []
    for t in range(n_frames):
        p = base + np.asarray(step) * t + rng.normal(0, 0.3, base.shape)
        rows.append(pd.DataFrame({"sample": t, "x": p[:, 0], "y": p[:, 1], "truth": np.arange(len(base))}))
    return pd.concat(rows, ignore_index=True)


def test_estimate_drift_recovers_a_uniform_drift():
    det = _drifting()
    drift = estimate_drift(det, search_range=5.0)
    assert list(drift.index) == list(range(10)) and drift.loc[0].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(drift["x"].to_numpy(), 3.0 * np.arange(10), atol=0.3)
    np.testing.assert_allclose(drift["y"].to_numpy(), -1.0 * np.arange(10), atol=0.3)
    assert len(estimate_drift(det.iloc[:0], n_frames=4)) == 4


def test_subtracting_the_drift_lets_a_small_search_range_link():
    """Steps of 3.2 px exceed a 2.5 px search range: linked raw, every frame starts new tracks;
    with the drift subtracted first every defect is one track (the drift comes from a wider linking)."""
    det = _drifting()
    raw = link_tracks(det, search_range=2.5, memory=0)
    assert raw["track_id"].nunique() > 100
    drift = estimate_drift(det, search_range=5.0)
    steady = link_tracks(shift_by_drift(det, drift), search_range=2.5, memory=0)
    assert steady["track_id"].nunique() == 25
    assert steady.groupby("track_id")["truth"].nunique().max() == 1
    back = shift_by_drift(steady, drift, sign=+1).sort_values(["sample", "truth"])
    ref = det.sort_values(["sample", "truth"])
    np.testing.assert_allclose(back["x"].to_numpy(), ref["x"].to_numpy())  # image coordinates restored


def test_shift_moves_boxes_too():
    df = pd.DataFrame({"sample": [0, 1], "x0": [0.0, 10.0], "y0": [0.0, 0.0], "x1": [4.0, 14.0], "y1": [4.0, 4.0]})
    drift = pd.DataFrame({"x": [0.0, 10.0], "y": [0.0, -2.0]}, index=pd.RangeIndex(2, name="sample"))
    out = shift_by_drift(df, drift)
    assert out["x0"].tolist() == [0.0, 0.0] and out["y1"].tolist() == [4.0, 6.0]
    with pytest.raises(ParameterError):
        shift_by_drift(df, drift, sign=2)


def test_drop_short_tracks():
    t = pd.DataFrame({"sample": [0, 1, 2, 0, 5, 3], "track_id": [1, 1, 1, 2, 2, 3]})
    assert drop_short_tracks(t, 2)["track_id"].tolist() == [1, 1, 1, 2, 2]
    assert drop_short_tracks(t, 3)["track_id"].tolist() == [1, 1, 1]
    assert len(drop_short_tracks(t, 1)) == 6
    with pytest.raises(ParameterError):
        drop_short_tracks(t, 0)
    with pytest.raises(DataError):
        drop_short_tracks(t.drop(columns="track_id"), 2)
