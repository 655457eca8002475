"""Detector fusion: score calibration on synthetic validation, weighted boxes fusion, fusion.json, predict."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from fakedata import disc_folder

from simgen.cli import main
from simgen.datasets.generate import write_dataset
from simgen.datasets.h5io import open_dataset
from simgen.errors import DataError, ParameterError
from simgen.evaluate.detection import evaluate_detections, pr_curve, true_positive_flags
from simgen.simulate.tem import TemConfig, TemSampler
from simgen.train.baselines.log import LogParams
from simgen.train.fusion import (
    FUSION_IOUS,
    FusedDetector,
    FusionMember,
    ScoreCalibration,
    fit_fusion,
    is_fusion_file,
    load_fusion,
    predict_fused,
)
from simgen.train.yolo.tta import fuse_views

COLS = ["x0", "y0", "x1", "y1", "class", "score"]


@pytest.fixture(scope="module")
def synthetic_val(tmp_path_factory):
    """Twelve simulated 96² TEM images with their defect boxes (the kind fit_fusion accepts)."""
    path = tmp_path_factory.mktemp("fusion") / "val.h5"
    return write_dataset(path, TemSampler(TemConfig(size=96, density=(3000.0, 6000.0)), seed=3), 12)


def _members():
    # Two LoG detectors at different scales stand in for YOLO + LoG (no training in a unit test).
    return [FusionMember("log", 1.0, params=LogParams(min_sigma=1.0, max_sigma=3.0, threshold=0.02)),
            FusionMember("log", 1.0, params=LogParams(min_sigma=2.0, max_sigma=6.0, threshold=0.02))]


def test_calibration_is_the_isotonic_fit_and_round_trips():
    cal = ScoreCalibration.fit(np.array([0.1, 0.2, 0.3, 0.4, 0.4]), np.array([0, 1, 0, 1, 1]))
    # Pool-adjacent-violators: 0.2 (right) and 0.3 (wrong) pool to 0.5; 0.4 is right twice.
    np.testing.assert_allclose(cal([0.1, 0.2, 0.3, 0.4]), [0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(cal([-5.0, 9.0]), [0.0, 1.0])  # constant outside the knots
    assert np.all(np.diff(cal(np.linspace(0, 0.5, 50))) >= 0)
    assert ScoreCalibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal
    with pytest.raises(DataError, match="non-decreasing"):
        ScoreCalibration((0.1, 0.2), (0.8, 0.3))
    with pytest.raises(DataError, match="finite"):
        ScoreCalibration.from_dict({"scores": [0.1, float("nan")], "probability": [0.1, 0.2]})
    with pytest.raises(DataError, match="numbers"):
        ScoreCalibration.from_dict({"scores": ["a"], "probability": [0.1]})
    with pytest.raises(DataError, match="found nothing"):
        ScoreCalibration.fit(np.zeros(0), np.zeros(0))


def test_true_positive_flags_are_the_pr_curve_matching():
    gt = pd.DataFrame({"sample": [0, 0], "x0": [0.0, 20.0], "y0": [0.0, 0.0], "x1": [10.0, 30.0], "y1": [10.0, 10.0],
                       "class": [0, 0]})
    pred = pd.DataFrame({"sample": [0, 0, 0], "x0": [1.0, 0.0, 50.0], "y0": [0.0, 0.0, 0.0], "x1": [10.0, 10.0, 60.0],
                         "y1": [10.0, 10.0, 10.0], "class": [0, 0, 0], "score": [0.5, 0.9, 0.7]})
    flags = true_positive_flags(pred, gt)
    # The 0.9 box takes the first loop, so the 0.5 box on the same loop is a false positive.
    assert flags.tolist() == [False, True, False]
    assert pr_curve(pred, gt)["tp"].tolist() == [1, 1, 1]


def test_weighted_fusion_scores_follow_the_weights():
    both = pd.DataFrame([[10, 10, 20, 20, 0, 0.8]], columns=COLS)
    a = pd.concat([both, pd.DataFrame([[50, 50, 60, 60, 0, 0.6]], columns=COLS)], ignore_index=True)
    equal = fuse_views([a, both], (100, 100), iou=0.5)
    assert np.allclose(sorted(equal["score"]), [0.3, 0.8])  # found by one of two views: half its score
    heavy = fuse_views([a, both], (100, 100), iou=0.5, weights=[3.0, 1.0])
    assert np.allclose(sorted(heavy["score"]), [0.45, 0.8])  # 3/4 of it when that view weighs 3 of 4
    with pytest.raises(ParameterError, match="positive weight"):
        fuse_views([a, both], (100, 100), weights=[1.0, 0.0])


def test_fit_fusion_calibrates_on_synthetic_validation_and_round_trips(synthetic_val, tmp_path):
    fused = fit_fusion(_members(), synthetic_val)
    assert fused.iou in FUSION_IOUS and 0 < fused.conf_f1 <= 1
    with open_dataset(synthetic_val) as ds:
        img = ds.image(0)
    boxes = fused.detect(img)
    assert list(boxes.columns) == COLS and len(boxes) and boxes["score"].between(0, 1).all()
    # The stored threshold is the peak-F1 threshold of the fused detector on the validation images.
    from simgen.datasets.sources import open_source

    with open_source(synthetic_val) as src:
        pred = pd.concat([fused.detect(src.image(k)).assign(sample=k) for k in range(len(src))])
        gt = pd.concat([src.boxes(k)[["x0", "y0", "x1", "y1"]].assign(sample=k, **{"class": 0})
                        for k in range(len(src))])
    s = evaluate_detections(pred.assign(**{"class": 0}), gt, threshold=0.15, n_frames=12).summary
    assert s["peak_f1_threshold"] == pytest.approx(fused.conf_f1) and s["peak_f1"] > 0.3
    path = fused.save(tmp_path / "fusion.json")
    assert is_fusion_file(path) and not is_fusion_file(tmp_path / "missing.json")
    again = load_fusion(path)
    pd.testing.assert_frame_equal(again.detect(img), boxes)
    out = predict_fused(path, synthetic_val, tmp_path / "pred.h5", progress=False)
    with open_dataset(out) as ds:
        assert ds.attrs["conf_f1"] == pytest.approx(fused.conf_f1)
        stored = ds.table("boxes")
    assert len(stored[stored["sample"] == 0]) == len(boxes)
    # every command that takes a detector file (track-video, analyze, film-coarsening) takes it too
    from simgen.experiments.track_video import detect_video

    dets = detect_video(path, synthetic_val, tmp_path / "dets.h5", progress=False)
    assert dets.conf == pytest.approx(fused.conf_f1) and dets.class_names is None
    with open_dataset(dets.path) as ds:
        pd.testing.assert_frame_equal(ds.table("boxes"), stored)


def test_fusion_is_refused_on_real_labels_and_bad_files(tmp_path, synthetic_val):
    real = disc_folder(tmp_path / "real", ((64, 64), (64, 64)))
    with pytest.raises(ParameterError, match="not simulated"):
        fit_fusion(_members(), real)
    with pytest.raises(ParameterError, match="two detectors"):
        FusedDetector(_members()[:1])
    with pytest.raises(ParameterError, match="not calibrated"):
        FusedDetector(_members()).detect(np.zeros((32, 32), np.float32))
    good = json.loads(fit_fusion(_members(), synthetic_val).save(tmp_path / "f.json").read_text())
    for change, message in (({"version": 99}, "version"), ({"detector": "log"}, "not a fusion file"),
                            ({"members": "x"}, "must be a list"), ({"iou": "a"}, "numbers")):
        (tmp_path / "bad.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(DataError, match=message):
            load_fusion(tmp_path / "bad.json")
    no_cal = {**good, "members": [{k: v for k, v in m.items() if k != "calibration"} for m in good["members"]]}
    (tmp_path / "bad.json").write_text(json.dumps(no_cal))
    with pytest.raises(DataError, match="calibration"):
        load_fusion(tmp_path / "bad.json")
    missing = {**good, "members": [{"kind": "yolo", "weight": 1.0, "weights": "nowhere.pt",
                                    "calibration": good["members"][0]["calibration"]}, good["members"][1]]}
    (tmp_path / "bad.json").write_text(json.dumps(missing))
    with pytest.raises(DataError, match="do not exist"):
        load_fusion(tmp_path / "bad.json")
    # The CLI: a fused detector predicts like any other; a broken file is one clear line.
    runner = CliRunner()
    res = runner.invoke(main, ["predict", str(tmp_path / "f.json"), str(synthetic_val), "-o", str(tmp_path / "p.h5"),
                               "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["info", str(tmp_path / "f.json"), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["detector"] == "fusion" and [m["kind"] for m in info["members"]] == ["log", "log"]
    assert info["conf_f1"] == good["conf_f1"] and info["members"][0]["calibration"]["knots"] >= 2
    res = runner.invoke(main, ["predict", str(tmp_path / "bad.json"), str(synthetic_val), "-o",
                               str(tmp_path / "q.h5")])
    assert res.exit_code == 2 and res.output.startswith("Error:") and "Traceback" not in res.output


def test_fusion_is_class_agnostic():
    """A multi-class network's box and the LoG's class-0 blob on the same defect become one box."""
    from simgen.train.fusion import fuse_calibrated

    cal = ScoreCalibration((0.0, 1.0), (0.0, 1.0))
    members = [FusionMember("log", 1.0, params=LogParams(), calibration=cal) for _ in range(2)]
    yolo = pd.DataFrame([[10, 10, 20, 20, 2, 0.8]], columns=COLS)
    log = pd.DataFrame([[11, 10, 21, 20, 0, 0.6]], columns=COLS)
    fused = fuse_calibrated([yolo, log], members, (64, 64), 0.3)
    assert len(fused) == 1 and fused["class"].tolist() == [0] and fused["score"].iloc[0] == pytest.approx(0.7)
