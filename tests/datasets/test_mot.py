"""MOTChallenge reader/writer: conventions, round trips, seqinfo, malformed files."""

import numpy as np
import pandas as pd
import pytest

from simgen.datasets.formats.mot import (
    export_mot,
    format_mot,
    open_mot_sequence,
    read_mot,
    read_seqinfo,
    tracks_with_boxes,
    write_mot_file,
)
from simgen.datasets.h5io import DatasetWriter
from simgen.errors import DataError, ParameterError


def _tracks():
    return pd.DataFrame({"sample": [0, 0, 1, 3], "track_id": [0, 4, 0, 4], "x0": [1.5, 10.0, 2.0, 11.0],
                         "y0": [2.0, 3.0, 2.5, 3.0], "x1": [5.5, 16.0, 6.0, 17.0], "y1": [6.0, 9.0, 6.5, 9.0],
                         "class": [0, 1, 0, 1]})


def test_gt_format_conventions():
    text = format_mot(_tracks(), kind="gt")
    first = text.splitlines()[0].split(",")
    # frame and id 1-based, bb_left = x0 (pixel origin 0), w, h, consider flag, class + 1, visibility
    assert first == ["1", "1", "1.500", "2.000", "4.000", "4.000", "1", "1", "1"]
    assert text.splitlines()[3].split(",")[:2] == ["4", "5"]
    shifted = format_mot(_tracks(), kind="gt", pixel_origin=1).splitlines()[0].split(",")
    assert shifted[2:4] == ["2.500", "3.000"]


def test_round_trip_gt_and_results(tmp_path):
    t = _tracks()
    write_mot_file(t, tmp_path / "gt.txt", kind="gt", keep_classes=True)
    back = read_mot(tmp_path / "gt.txt")
    for col in ("sample", "track_id", "x0", "y0", "x1", "y1", "class"):
        np.testing.assert_allclose(back[col].to_numpy(float), t[col].to_numpy(float))
    np.testing.assert_allclose(back["x"], (t["x0"] + t["x1"]) / 2)
    res = t.assign(score=[0.9, 0.8, 0.7, 0.6])
    write_mot_file(res, tmp_path / "trk.txt", kind="results")
    assert (tmp_path / "trk.txt").read_text().splitlines()[0].endswith(",0.9,-1,-1,-1")
    back = read_mot(tmp_path / "trk.txt")
    assert back["score"].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6]) and "visibility" not in back
    back1 = read_mot(tmp_path / "trk.txt", pixel_origin=1)
    np.testing.assert_allclose(back1["x0"], t["x0"] - 1)


def test_detections_without_ids_and_ignored_gt_rows(tmp_path):
    (tmp_path / "det.txt").write_text("1,-1,0,0,4,4,0.9,-1,-1,-1\n2,-1,1,1,4,4,0.5,-1,-1,-1\n")
    det = read_mot(tmp_path / "det.txt")
    assert "track_id" not in det and det["sample"].tolist() == [0, 1]
    (tmp_path / "gt.txt").write_text("1,1,0,0,4,4,1,1,1\n1,2,9,9,4,4,0,1,1\n")
    assert len(read_mot(tmp_path / "gt.txt")) == 1
    assert len(read_mot(tmp_path / "gt.txt", drop_ignored=False)) == 2


@pytest.mark.parametrize("line, match", [
    ("0,1,0,0,4,4,1,1,1", "1-based"),
    ("1,1,0,0,-4,4,1,1,1", "negative"),
    ("1,1,0,0", "at least 6"),
    ("1,1,a,0,4,4,1,1,1", "malformed"),
    ("1,1.5,0,0,4,4,1,1,1", "integers"),
])
def test_malformed_lines(tmp_path, line, match):
    (tmp_path / "gt.txt").write_text(line + "\n")
    with pytest.raises(DataError, match=match):
        read_mot(tmp_path / "gt.txt")


def test_mixed_untracked_and_tracked_rows_are_rejected(tmp_path):
    (tmp_path / "x.txt").write_text("1,-1,0,0,4,4,1,-1,-1,-1\n1,3,0,0,4,4,1,-1,-1,-1\n")
    with pytest.raises(DataError, match="mixes"):
        read_mot(tmp_path / "x.txt")


def test_point_tracks_need_a_box_size():
    pts = pd.DataFrame({"sample": [0], "track_id": [0], "x": [10.0], "y": [20.0]})
    with pytest.raises(ParameterError, match="box size"):
        tracks_with_boxes(pts)
    b = tracks_with_boxes(pts, 6)
    assert b[["x0", "y0", "x1", "y1"]].iloc[0].tolist() == [7.0, 17.0, 13.0, 23.0]
    assert tracks_with_boxes(pts.assign(size=4.0))["x1"].iloc[0] == 12.0


def test_export_sequence_folder_and_open_it(tmp_path):
    with DatasetWriter(tmp_path / "v.h5", kind="video") as w:
        for t in range(4):
            w.append(np.full((30, 40), t / 4, np.float32),
                     tracks={"track_id": [0, 1], "x": [5.0 + t, 20.0], "y": [5.0, 15.0], "size": [4.0, 6.0]})
    gt_txt = export_mot(tmp_path / "v.h5", tmp_path / "SIM-01", frame_rate=10)
    assert gt_txt == tmp_path / "SIM-01" / "gt" / "gt.txt"
    info = read_seqinfo(tmp_path / "SIM-01" / "seqinfo.ini")
    assert info == {"name": "SIM-01", "imDir": "img1", "frameRate": 10, "seqLength": 4, "imWidth": 40,
                    "imHeight": 30, "imExt": ".jpg"}
    assert sorted(p.name for p in (tmp_path / "SIM-01" / "img1").iterdir()) == [f"{i:06d}.jpg" for i in range(1, 5)]
    seq = open_mot_sequence(tmp_path / "SIM-01")
    assert seq.n_frames == 4 and seq.shape() == (30, 40) and len(seq.tracks) == 8
    assert abs(float(seq.image(2).mean()) - 0.5) < 0.01
    np.testing.assert_allclose(seq.tracks[seq.tracks["track_id"] == 0]["x"], [5, 6, 7, 8])
    with pytest.raises(ParameterError, match="exists"):
        export_mot(tmp_path / "v.h5", tmp_path / "SIM-01")
    export_mot(tmp_path / "v.h5", tmp_path / "SIM-01", images=False, overwrite=True, name="renamed")
    assert not (tmp_path / "SIM-01" / "img1").exists()
    assert read_seqinfo(tmp_path / "SIM-01" / "seqinfo.ini")["name"] == "renamed"


def test_export_needs_tracks(tmp_path):
    with DatasetWriter(tmp_path / "b.h5", kind="tem") as w:
        w.append(np.zeros((8, 8), np.float32), boxes={"x0": [0.0], "y0": [0.0], "x1": [1.0], "y1": [1.0], "class": [0]})
    with pytest.raises(DataError, match="no 'tracks' table"):
        export_mot(tmp_path / "b.h5", tmp_path / "seq")
    with pytest.raises(DataError, match="no track_id"):
        export_mot(tmp_path / "b.h5", tmp_path / "seq", table="boxes")
    assert not (tmp_path / "seq").exists()


def test_open_sequence_errors(tmp_path):
    with pytest.raises(DataError, match="not a MOTChallenge sequence"):
        open_mot_sequence(tmp_path)
    (tmp_path / "seqinfo.ini").write_text("no section here\n")
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "gt.txt").write_text("")
    with pytest.raises(DataError, match="seqinfo"):
        open_mot_sequence(tmp_path)


def test_huge_sequence_lengths_and_frame_numbers_are_refused(tmp_path):
    from simgen.datasets.formats.mot import read_mot, read_seqinfo
    from simgen.errors import DataError

    ini = tmp_path / "seqinfo.ini"
    ini.write_text("[Sequence]\nname=x\nseqLength=2000000000\nimWidth=64\nimHeight=64\n")
    with pytest.raises(DataError, match="seqLength=2000000000 is outside"):
        read_seqinfo(ini)
    gt = tmp_path / "gt.txt"
    gt.write_text("2000000000,1,1,1,5,5,1,1,1\n")
    with pytest.raises(DataError, match="beyond"):
        read_mot(gt)


def test_gt_is_one_class_by_default_as_trackeval_scores_it(tmp_path):
    """TrackEval's MOTChallenge preprocessing drops class 3 and treats 2 as a distractor: a
    multi-class export scored against itself gave MOTA 0.3.  Default: every object is class 1."""
    t = _tracks()
    assert t["class"].nunique() > 1
    write_mot_file(t, tmp_path / "gt.txt", kind="gt")
    back = read_mot(tmp_path / "gt.txt")
    assert len(back) == len(t) and set(back["class"]) == {0}
