"""Ultralytics' ByteTrack / BoT-SORT driven from simgen detection tables (offline, `lap` installed)."""

import socket

import numpy as np
import pandas as pd
import pytest

from simgen.errors import DataError, ParameterError
from simgen.train.yolo.track import TrackerSettings, track_boxes


def _detections(n_frames=12, fade=(5, 6), weak=(8,)):
    """Two defects drifting right; B is missing in the ``fade`` frames and scores low in ``weak`` ones.

    Plus one spurious detection in frame 3 alone (a false positive that must not become a track).
    """
    rows = []
    for t in range(n_frames):
        rows.append((t, 10 + 0.5 * t, 10, 0.9))  # A
        if t not in fade:
            rows.append((t, 40 + 0.3 * t, 30, 0.15 if t in weak else 0.8))  # B
    rows.append((3, 70, 70, 0.9))
    s, x, y, score = map(np.asarray, zip(*rows))
    return pd.DataFrame({"sample": s.astype(np.int64), "x0": x - 4, "y0": y - 4, "x1": x + 4, "y1": y + 4,
                         "class": np.zeros(len(s), np.int16), "score": score.astype(np.float32),
                         "det": np.arange(len(s))})


@pytest.mark.parametrize("tracker", ["bytetrack", "botsort"])
def test_tracks_keep_ids_through_gaps_and_low_scores(tracker):
    det = _detections()
    out = track_boxes(det, tracker=tracker, settings=TrackerSettings(track_buffer=5))
    assert out["track_id"].nunique() == 2  # A and B; the one-frame false positive never became a track
    assert 70 not in out["x0"].to_numpy() + 4
    a = out[out["x"] < 30]
    b = out[out["x"] > 30]
    assert a["track_id"].nunique() == 1 and b["track_id"].nunique() == 1
    assert sorted(a["sample"]) == list(range(12))  # the first frame of a track is kept
    assert sorted(b["sample"]) == [t for t in range(12) if t not in (5, 6)]  # re-found after the 2-frame gap
    assert 8 in b["sample"].to_numpy()  # the low-score detection continued the track (second association)
    # rows are input detections, boxes unchanged; extra columns carried along
    merged = out.merge(det, on="det", suffixes=("", "_in"))
    np.testing.assert_array_equal(merged["x0"], merged["x0_in"])
    assert out["track_id"].min() == 0 and out["sample"].is_monotonic_increasing


def test_settings_matter_short_buffer_and_high_low_threshold():
    gap3 = _detections(fade=(5, 6, 7), weak=())
    # Ultralytics drops a lost track after track_buffer frames but may re-find it one frame later
    assert track_boxes(gap3, settings=TrackerSettings(track_buffer=2))["track_id"].nunique() == 2
    assert track_boxes(gap3, settings=TrackerSettings(track_buffer=1))["track_id"].nunique() == 3  # B gets a new id
    det = _detections()
    strict = track_boxes(det, settings=TrackerSettings(track_buffer=5, track_low_thresh=0.2))
    assert 8 not in strict[strict["x"] > 30]["sample"].to_numpy()  # 0.15 is below the low threshold now


def test_empty_and_bad_input():
    empty = track_boxes(_detections().iloc[:0])
    assert len(empty) == 0 and "track_id" in empty.columns
    with pytest.raises(ParameterError, match="tracker"):
        track_boxes(_detections(), tracker="sort")
    with pytest.raises(ParameterError, match="track_low_thresh"):
        TrackerSettings(track_low_thresh=0.5, track_high_thresh=0.2).validate()
    with pytest.raises(ParameterError, match="gmc"):
        TrackerSettings(gmc_method="orb").validate()
    with pytest.raises(DataError, match="score"):
        track_boxes(_detections().drop(columns="score"))
    with pytest.raises(ParameterError, match="n_frames"):
        track_boxes(_detections(), n_frames=3)


def test_missing_lap_is_a_clear_error_not_a_pip_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lap" else real(name, *a))
    with pytest.raises(ParameterError, match="lap"):
        track_boxes(_detections())


def test_tracking_never_touches_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    assert track_boxes(_detections(), tracker="botsort")["track_id"].nunique() == 2
