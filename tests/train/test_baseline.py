"""The LoG blob-detector baseline: detection, equivalence with scikit-image, tuning with CV, CLI."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from simgen.cli import main
from simgen.errors import DataError, ParameterError
from simgen.train.baselines.log import (
    QUICK_GRID,
    LogParams,
    detect_log,
    load_params,
    log_blobs,
    predict_log,
    save_params,
    tune_log,
)


def _discs(h=96, w=128, n=6, seed=0, dark=True):
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 0.7) + rng.normal(0, 0.02, (h, w))
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    truth = []
    while len(truth) < n:
        cx, cy, r = rng.uniform(10, w - 10), rng.uniform(10, h - 10), rng.uniform(3, 5)
        if all(np.hypot(cx - a, cy - b) > 16 for a, b, _ in truth):
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = 0.2
            truth.append((cx, cy, r))
    img = np.clip(img, 0, 1).astype(np.float32)
    return (img if dark else 1 - img), truth


def test_detect_log_finds_dark_discs_with_sensible_boxes():
    img, truth = _discs()
    boxes = detect_log(img, LogParams(min_sigma=1.5, max_sigma=6, threshold=0.1))
    assert len(boxes) == len(truth)
    for cx, cy, r in truth:
        d = np.hypot((boxes["x0"] + boxes["x1"]) / 2 - cx, (boxes["y0"] + boxes["y1"]) / 2 - cy)
        i = int(np.argmin(d))
        assert d[i] < 1.5
        assert 0.5 * 2 * r < boxes["x1"][i] - boxes["x0"][i] < 2 * 2 * r
    assert boxes["score"].is_monotonic_decreasing and (boxes["class"] == 0).all()
    bright, _ = _discs(dark=False)
    assert len(detect_log(bright, LogParams(min_sigma=1.5, max_sigma=6, threshold=0.1, polarity="bright"))) == 6


def test_same_scale_space_as_skimage_blob_log():
    from skimage.feature import blob_log

    img, _ = _discs(seed=3)
    params = LogParams(min_sigma=1.5, max_sigma=6, num_sigma=5, threshold=0.05, overlap=1.0, normalize="none",
                       downscale=1)
    ours = log_blobs(img, params)
    ref = blob_log(1 - img, min_sigma=1.5, max_sigma=6, num_sigma=5, threshold=0.05, overlap=1.0, log_scale=True,
                   exclude_border=False)
    a = sorted(map(tuple, np.round(ours[["y", "x", "sigma"]].to_numpy(np.float64), 3).tolist()))
    b = sorted(map(tuple, np.round(ref.astype(np.float64), 3).tolist()))
    assert len(a) >= 6 and a == b


def test_overlap_pruning_keeps_the_stronger_blob():
    img = np.full((64, 64), 0.8, np.float32)
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    img[(xx - 30) ** 2 + (yy - 32) ** 2 < 16] = 0.1  # strong
    img[(xx - 35) ** 2 + (yy - 32) ** 2 < 16] = np.minimum(img[(xx - 35) ** 2 + (yy - 32) ** 2 < 16], 0.5)
    p = LogParams(min_sigma=2, max_sigma=4, num_sigma=3, threshold=0.01, normalize="none", downscale=1)
    assert len(log_blobs(img, p.replace(overlap=0.1))) < len(log_blobs(img, p.replace(overlap=1.0)))


def test_downscale_keeps_full_resolution_coordinates():
    img, truth = _discs(h=128, w=128, n=4, seed=5)
    b = detect_log(img, LogParams(min_sigma=3, max_sigma=6, threshold=0.1, downscale=2))
    assert LogParams(min_sigma=3).factor == 2 and LogParams(min_sigma=1).factor == 1
    for cx, cy, _ in truth:
        d = np.hypot((b["x0"] + b["x1"]) / 2 - cx, (b["y0"] + b["y1"]) / 2 - cy)
        assert d.min() < 2.5


def test_params_validation_and_json_roundtrip(tmp_path):
    with pytest.raises(ParameterError):
        LogParams(min_sigma=5, max_sigma=2).validate()
    with pytest.raises(ParameterError):
        LogParams(polarity="grey").validate()
    p = LogParams(min_sigma=2.5, threshold=0.11)
    path = save_params(tmp_path / "p.json", p, extra={"note": 1})
    assert load_params(path) == p
    with pytest.raises(ParameterError, match="exists"):
        save_params(path, p)
    (tmp_path / "bad.json").write_text(json.dumps({"params": {"sigma": 1}}))
    with pytest.raises(ParameterError, match="unknown"):
        load_params(tmp_path / "bad.json")
    with pytest.raises(DataError):
        load_params(tmp_path / "missing.json")


def _folder(root, n=3):
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("loop\n")
    for i in range(n):
        img, truth = _discs(seed=10 + i)
        h, w = img.shape
        Image.fromarray((img * 255).astype(np.uint8)).save(root / "images" / f"im{i}.png")
        (root / "labels" / f"im{i}.txt").write_text(
            "".join(f"0 {cx / w:.6f} {cy / h:.6f} {2 * r / w:.6f} {2 * r / h:.6f}\n" for cx, cy, r in truth))
    return root


def test_tune_log_with_leave_one_image_out(tmp_path):
    root = _folder(tmp_path / "real")
    res = tune_log(root, grid=QUICK_GRID, cv="loo")
    assert res.insample["f1"] > 0.9 and res.cv["f1"] > 0.8 and res.cv["scheme"] == "loo"
    assert len(res.folds) == 3 and all(len(f["held_out"]) == 1 for f in res.folds)
    assert res.params.threshold > 0.03 and len(res.grid) == 8
    assert json.dumps(res.to_dict())  # serialisable
    with pytest.raises(ParameterError, match="threshold"):
        tune_log(root, grid={"threshold": [0.1]})
    with pytest.raises(ParameterError, match="unknown"):
        tune_log(root, grid={"radius": [1]})
    none = tune_log(root, grid={"min_sigma": [1.5], "max_sigma": [6.0]}, cv=None)
    assert none.cv == {} and none.folds == []


def test_predict_log_writes_predictions(tmp_path):
    from simgen.datasets.h5io import open_dataset

    root = _folder(tmp_path / "real", n=2)
    out = predict_log(root, tmp_path / "pred.h5", LogParams(min_sigma=1.5, max_sigma=6, threshold=0.1),
                      progress=False)
    with open_dataset(out) as ds:
        assert ds.kind == "predictions" and ds.n == 2 and ds.class_names == ["loop"]
        rows = ds.rows("boxes", 0)
        # every candidate is kept with its score; the tuned threshold travels with them
        assert ds.attrs["conf_f1"] == pytest.approx(0.1) and len(rows) >= 6
        assert (rows["score"] >= ds.attrs["conf_f1"]).sum() == 6


def test_cli_tune_and_predict(tmp_path):
    root = _folder(tmp_path / "real", n=2)
    runner = CliRunner()
    res = runner.invoke(main, ["baseline", "log", "tune", str(root), "-o", str(tmp_path / "p.json"), "--grid",
                               "quick", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "cross-validated (loo)" in res.output
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["detector"] == "log" and "tuning" in data
    res = runner.invoke(main, ["predict", str(tmp_path / "p.json"), str(root), "-o", str(tmp_path / "pred.h5"),
                               "--no-progress"])
    assert res.exit_code == 0, res.output
    # tune and predict + evaluate agree (once 0.805 vs 0.733: evaluate applied its own 0.25)
    res = runner.invoke(main, ["evaluate", "--pred", str(tmp_path / "pred.h5"), "--gt", str(root), "-o",
                               str(tmp_path / "ev"), "--no-plots"])
    assert res.exit_code == 0, res.output
    assert "stored with the predictions" in res.output
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())["detection"]
    assert ev["f1"] == pytest.approx(data["tuning"]["insample"]["f1"], abs=1e-6)
    res = runner.invoke(main, ["baseline", "log", "tune", str(root), "-o", str(tmp_path / "q.json"), "--cv", "1"])
    assert res.exit_code == 2 and res.output.startswith("Error:") and not (tmp_path / "q.json").exists()
    res = runner.invoke(main, ["baseline", "log", "predict", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and not (tmp_path / "x.h5").exists()
