"""MOT metrics cross-checked against TrackEval (equal) and py-motmetrics (documented differences).

simgen follows TrackEval / the MOTChallenge definitions.  Each known difference
from py-motmetrics has a test below that constructs a case showing it; the
same list is in docs/evaluate.md.  py-motmetrics is not a dependency (its IoU
path calls ``np.asfarray``, gone in NumPy 2): those tests run when it is
installed and are skipped otherwise; the TrackEval tests always run.
"""

import ast
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simgen.evaluate.matching import box_iou
from simgen.evaluate.tracking import clear_metrics, identity_metrics, mot_metrics, tracking_data

CLEAR_FIELDS = ["CLR_TP", "CLR_FN", "CLR_FP", "IDSW", "MT", "PT", "ML", "Frag", "MOTA", "MOTP", "MODA", "CLR_Re",
                "CLR_Pr", "MTR", "PTR", "MLR", "sMOTA", "CLR_F1", "FP_per_frame", "MOTAL", "MOTP_sum", "CLR_Frames"]
ID_FIELDS = ["IDF1", "IDR", "IDP", "IDTP", "IDFN", "IDFP"]


def _trackeval():
    from trackeval.metrics import CLEAR, Identity

    return CLEAR({"PRINT_CONFIG": False}), Identity({"PRINT_CONFIG": False})


# -- TrackEval: identical results -----------------------------------------------------
@pytest.mark.parametrize("similarity", ["iou", "distance"])
def test_equal_to_trackeval_on_random_sequences(ev, similarity):
    clear, ident = _trackeval()
    rng = np.random.default_rng(11)
    for _ in range(25):
        pred, gt = ev.random_tracks(rng)
        data = tracking_data(pred, gt, similarity=similarity, max_distance=3.0)
        ours_c, ours_i = clear_metrics(data), identity_metrics(data)
        ref_c, ref_i = clear.eval_sequence(data), ident.eval_sequence(data)
        for k in CLEAR_FIELDS:
            assert ours_c[k] == pytest.approx(ref_c[k], abs=1e-12), k
        for k in ID_FIELDS:
            assert ours_i[k] == pytest.approx(ref_i[k], abs=1e-12), k


def test_equal_to_trackeval_in_edge_cases(ev):
    clear, ident = _trackeval()
    rng = np.random.default_rng(5)
    pred, gt = ev.random_tracks(rng)
    for p, g in ((pred.iloc[:0], gt), (pred, gt.iloc[:0]), (gt, gt)):
        data = tracking_data(p, g, n_frames=30)
        assert clear_metrics(data) == pytest.approx(clear.eval_sequence(data))
        assert identity_metrics(data) == pytest.approx(ident.eval_sequence(data))


def test_equal_to_trackeval_mot_challenge_pipeline_on_exported_files(ev, tmp_path):
    """Full TrackEval run (MotChallenge2DBox reading our gt.txt / results files) == mot_metrics."""
    import contextlib
    import io

    import trackeval

    from simgen.datasets.formats.mot import format_mot, format_seqinfo, read_mot

    rng = np.random.default_rng(21)
    pred, gt = ev.random_tracks(rng, n_frames=40, n_obj=10)
    seq = "SIM-01"
    (tmp_path / "gt" / seq / "gt").mkdir(parents=True)
    (tmp_path / "gt" / seq / "gt" / "gt.txt").write_text(format_mot(gt, kind="gt"))
    (tmp_path / "gt" / seq / "seqinfo.ini").write_text(format_seqinfo(seq, 40, 100, 100))
    (tmp_path / "trk" / "simgen" / "data").mkdir(parents=True)
    (tmp_path / "trk" / "simgen" / "data" / f"{seq}.txt").write_text(format_mot(pred, kind="results"))
    eval_cfg = {"USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
                "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False, "LOG_ON_ERROR": None}
    ds_cfg = {"GT_FOLDER": str(tmp_path / "gt"), "TRACKERS_FOLDER": str(tmp_path / "trk"), "SKIP_SPLIT_FOL": True,
              "SEQ_INFO": {seq: 40}, "DO_PREPROC": False, "PRINT_CONFIG": False, "TRACKERS_TO_EVAL": ["simgen"]}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = trackeval.Evaluator(eval_cfg)
        res, _ = evaluator.evaluate([trackeval.datasets.MotChallenge2DBox(ds_cfg)],
                                    [trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
                                     trackeval.metrics.Identity({"PRINT_CONFIG": False})])
    ref = res["MotChallenge2DBox"]["simgen"][seq]["pedestrian"]
    # the files hold 3 decimals: score what TrackEval read (our reader must read the same thing)
    back_pred = read_mot(tmp_path / "trk" / "simgen" / "data" / f"{seq}.txt")
    back_gt = read_mot(tmp_path / "gt" / seq / "gt" / "gt.txt")
    assert len(back_pred) == len(pred) and len(back_gt) == len(gt)
    ours = mot_metrics(back_pred, back_gt, n_frames=40).summary
    for k in ("MOTA", "MOTP", "IDSW", "Frag", "MT", "PT", "ML", "CLR_TP", "CLR_FP", "CLR_FN"):
        assert ours[k] == pytest.approx(ref["CLEAR"][k], abs=1e-9), k
    for k in ("IDF1", "IDTP", "IDFP", "IDFN"):
        assert ours[k] == pytest.approx(ref["Identity"][k], abs=1e-9), k


# -- py-motmetrics: agreement where the definitions agree ----------------------------------
def _mm():
    """py-motmetrics, or a skip: it is optional (see the module notes)."""
    return pytest.importorskip("motmetrics")


def _motmetrics(pred: pd.DataFrame, gt: pd.DataFrame, n_frames: int):
    mm = _mm()
    acc = mm.MOTAccumulator(auto_id=True)
    for t in range(n_frames):
        g, p = gt[gt["sample"] == t], pred[pred["sample"] == t]
        d = 1.0 - box_iou(g[["x0", "y0", "x1", "y1"]], p[["x0", "y0", "x1", "y1"]])
        d[d > 0.5] = np.nan  # what mm.distances.iou_matrix(max_iou=0.5) returns
        acc.update(g["track_id"].to_numpy(), p["track_id"].to_numpy(), d)
    return _mm_summary(acc)


def _mm_summary(acc):
    mm = _mm()
    names = ["mota", "motp", "idf1", "num_switches", "num_fragmentations", "mostly_tracked", "mostly_lost",
             "num_false_positives", "num_misses", "num_detections", "idtp"]
    return mm.metrics.create().compute(acc, metrics=names, name="x").iloc[0].to_dict()


def _sequence_without_edge_cases(rng, n_frames=20, n_obj=6):
    """Well separated objects present in every frame, misses and id changes, no empty frames."""
    rows = []
    for k in range(n_obj):
        for t in range(n_frames):
            rows.append((t, k, 20.0 * k + 10, 10.0))
    gt = pd.DataFrame(rows, columns=["sample", "track_id", "x", "y"])
    pr = gt[(rng.random(len(gt)) < 0.85) | (gt["sample"] == 0)].copy()
    pr["track_id"] = pr["track_id"] * 10 + (pr["sample"] > rng.integers(0, n_frames, len(pr))).astype(int)
    pr["x"] += rng.normal(0, 0.3, len(pr))
    for df in (gt, pr):
        df["x0"], df["y0"], df["x1"], df["y1"] = df.x - 3, df.y - 3, df.x + 3, df.y + 3
    return pr.reset_index(drop=True), gt


def test_agrees_with_motmetrics_where_definitions_agree():
    rng = np.random.default_rng(2)
    for _ in range(3):
        pred, gt = _sequence_without_edge_cases(rng)
        ours = mot_metrics(pred, gt).summary
        ref = _motmetrics(pred, gt, 20)
        assert ours["MOTA"] == pytest.approx(ref["mota"])
        assert ours["IDF1"] == pytest.approx(ref["idf1"])
        assert ours["IDTP"] == ref["idtp"]
        assert ours["IDSW"] == ref["num_switches"]
        assert ours["CLR_FP"] == ref["num_false_positives"] and ours["CLR_FN"] == ref["num_misses"]
        # difference 1: motmetrics' MOTP is a distance (mean 1 - IoU), simgen/TrackEval a similarity
        assert ours["MOTP"] == pytest.approx(1.0 - ref["motp"])


# -- py-motmetrics: documented differences, one test each ------------------------------------
def _frames_to_acc(frames):
    mm = _mm()
    acc = mm.MOTAccumulator(auto_id=True)
    for g, h, d in frames:
        acc.update(g, h, d)
    return acc


def _frames_to_data(frames, n_gt, n_trk):
    """TrackEval data from (gt ids, tracker ids, motmetrics distance matrix with NaN = no pair)."""
    sims = []
    for g, h, d in frames:
        d = np.asarray(d, float).reshape(len(g), len(h))
        sims.append(np.where(np.isnan(d), 0.0, 1.0 - d))
    return {"gt_ids": [np.asarray(g, np.int64) for g, _, _ in frames],
            "tracker_ids": [np.asarray(h, np.int64) for _, h, _ in frames], "similarity_scores": sims,
            "num_gt_ids": n_gt, "num_tracker_ids": n_trk, "num_timesteps": len(frames),
            "num_gt_dets": sum(len(g) for g, _, _ in frames), "num_tracker_dets": sum(len(h) for _, h, _ in frames)}


def _both(frames, n_gt, n_trk):
    clear, _ = _trackeval()
    data = _frames_to_data(frames, n_gt, n_trk)
    ours = clear_metrics(data)
    assert ours == pytest.approx(clear.eval_sequence(data))  # simgen == TrackEval in every case below
    return ours, _mm_summary(_frames_to_acc(frames))


def test_difference_mostly_tracked_threshold():
    """Tracked in exactly 80 % of frames: motmetrics MT (>= 0.8), TrackEval/simgen PT (MT needs > 0.8)."""
    frames = [([0], [0], [[0.1]])] * 4 + [([0], [0], [[np.nan]])]
    ours, ref = _both(frames, 1, 1)
    assert (ours["MT"], ours["PT"]) == (0, 1)
    assert ref["mostly_tracked"] == 1


def test_difference_fragmentation_when_the_object_is_not_annotated_in_a_frame():
    """Ground-truth object absent for a frame (others present): TrackEval counts a fragmentation, motmetrics not."""
    both = [[0.1, np.nan], [np.nan, 0.1]]
    frames = [([0, 1], [0, 1], both), ([1], [0, 1], [[np.nan, 0.1]]), ([0, 1], [0, 1], both)]
    ours, ref = _both(frames, 2, 2)
    assert ours["Frag"] == 1 and ref["num_fragmentations"] == 0


def test_difference_fragmentation_over_a_frame_without_predictions():
    """A frame with no predictions at all: motmetrics counts the miss as a fragmentation, TrackEval does not
    (it skips such frames without resetting its "tracked in the previous frame" state)."""
    frames = [([0], [0], [[0.1]]), ([0], [], np.empty((1, 0))), ([0], [0], [[0.1]])]
    ours, ref = _both(frames, 1, 1)
    assert ours["Frag"] == 0 and ref["num_fragmentations"] == 1
    assert ours["CLR_FN"] == ref["num_misses"] == 1  # the miss itself is counted by both


def test_difference_identity_kept_across_a_gap():
    """motmetrics keeps the last correspondence of an object from any earlier frame; TrackEval only
    prefers continuing the previous frame's one.  After a frame where object 0 is missed, a better
    overlapping new hypothesis 1 is taken by TrackEval (1 ID switch) while motmetrics stays with 0."""
    frames = [([0], [0, 1], [[0.1, np.nan]]), ([0], [0, 1], [[np.nan, np.nan]]), ([0], [0, 1], [[0.4, 0.05]])]
    ours, ref = _both(frames, 1, 2)
    assert ours["IDSW"] == 1 and ref["num_switches"] == 0


def test_difference_assignment_objective():
    """Per frame, TrackEval maximises the summed similarity; motmetrics maximises the number of matches
    (then minimises distance).  Three objects where 2 perfect matches (sum 2.0) beat 3 matches at IoU 0.5."""
    d = [[0.0, 0.5, np.nan], [np.nan, 0.0, 0.5], [0.5, np.nan, np.nan]]
    ours, ref = _both([([0, 1, 2], [0, 1, 2], d)], 3, 3)
    assert ours["CLR_TP"] == 2 and ref["num_detections"] == 3
    assert ours["MOTP"] == pytest.approx(1.0) and ref["motp"] == pytest.approx(0.5)


def test_difference_iou_matrix_is_a_distance_and_broken_on_numpy2():
    """mm.distances.iou_matrix returns 1 - IoU and its ``max_iou`` is a maximum *distance*
    (max_iou=0.5 keeps pairs with IoU >= 0.5).  motmetrics 1.4.0 calls np.asfarray, which
    NumPy 2 removed, so the tests compute the same matrix with simgen's box_iou."""
    mm = _mm()
    a = np.array([[0.0, 0.0, 4.0, 4.0]])  # x, y, w, h
    b = np.array([[1.0, 0.0, 4.0, 4.0], [3.0, 0.0, 4.0, 4.0]])
    ours = 1.0 - box_iou(np.c_[a[:, :2], a[:, :2] + a[:, 2:]], np.c_[b[:, :2], b[:, :2] + b[:, 2:]])
    if int(np.__version__.split(".")[0]) >= 2:
        with pytest.raises(AttributeError, match="asfarray"):
            mm.distances.iou_matrix(a, b, max_iou=0.5)
    else:  # pragma: no cover - old NumPy
        ref = mm.distances.iou_matrix(a, b, max_iou=0.5)
        assert ref[0, 0] == pytest.approx(ours[0, 0]) and np.isnan(ref[0, 1])
    assert ours[0, 0] == pytest.approx(1 - 12 / 20) and ours[0, 1] > 0.5


def test_motmetrics_is_no_dependency_and_simgen_never_imports_it():
    """simgen's MOT metrics equal TrackEval (tests above); py-motmetrics, broken on NumPy 2, is not required."""
    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    required = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    assert not [d for d in required if d.lower().replace("_", "-").startswith(("motmetrics", "py-motmetrics"))]
    imports = set()
    for path in (root / "simgen").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imports.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imports.add(node.module.split(".")[0])
    assert "motmetrics" not in imports
