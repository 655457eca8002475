"""``simgen evaluate`` / ``simgen track`` / ``simgen export coco|mot`` through click's CliRunner."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from simgen.cli import main
from simgen.datasets.h5io import DatasetWriter, open_dataset


def _video(path, *, n=12, noise=0.0, drop=0.0, score=False, tracks=True, seed=0, bad=None, names=None):
    """Small video dataset: 6 random-walking defects, boxes (+ tracks)."""
    walk = np.random.default_rng(1)
    rng = np.random.default_rng(seed)
    pos = walk.uniform(15, 85, (6, 2))
    with DatasetWriter(path, kind="video", class_names=["loop"]) as w:
        for t in range(n):
            pos = pos + walk.normal(0, 0.6, pos.shape)
            p = pos + rng.normal(0, noise, pos.shape)
            keep = rng.random(len(p)) >= drop
            ids, p = np.arange(6)[keep], p[keep]
            boxes = {"x0": p[:, 0] - 4, "y0": p[:, 1] - 4, "x1": p[:, 0] + 4, "y1": p[:, 1] + 4,
                     "class": np.zeros(len(p), int)}
            if score:
                boxes["score"] = rng.uniform(0.3, 1.0, len(p))
            if bad == "negative" and t == 3 and len(p):
                boxes["x1"] = boxes["x0"] - 1
            if bad == "nan" and t == 2 and len(p):
                boxes["score"][0] = np.nan
            kwargs = {"boxes": boxes}
            if tracks:
                kwargs["tracks"] = {"track_id": ids, "x": p[:, 0], "y": p[:, 1]}
            w.append(np.full((100, 100), 0.8, np.float32), name=None if names is None else names[t], **kwargs)
    return path


def _run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("Error:") and "\n" not in err, err
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in err, err


@pytest.fixture
def videos(tmp_path):
    gt = _video(tmp_path / "gt.h5")
    pred = _video(tmp_path / "pred.h5", noise=0.4, drop=0.15, score=True, tracks=False, seed=3)
    return gt, pred


def test_evaluate_writes_report_with_tracking(videos, tmp_path):
    gt, pred = videos
    out = tmp_path / "report"
    r = _run(["evaluate", "--pred", pred, "--gt", gt, "--iou", 0.15, "-o", out])
    assert r.exit_code == 0, r.output
    assert "mAP" in r.output and "MOTA" in r.output
    m = json.loads((out / "metrics.json").read_text())
    d = m["detection"]
    assert 0.7 < d["recall"] < 1.0 and d["precision"] == 1.0 and 0 < d["mAP"] <= 1
    t = m["tracking"]
    assert t["linked_with_trackpy"] and t["similarity"] == "distance" and t["num_gt_ids"] == 6
    assert -1 <= t["MOTA"] <= 1 and 0 <= t["IDF1"] <= 1 and t["RMSE_px"] < 2
    assert set(t["lifetimes"]) >= {"chi2_p", "ks_p", "bins"}
    for name in ("per_class.csv", "pr_curve.csv", "per_frame.csv", "pr_curve.png", "count_vs_time.png",
                 "nn_distance_vs_time.png", "lifetimes.png", "tracks_pred.csv"):
        assert (out / name).is_file(), name
    per_frame = pd.read_csv(out / "per_frame.csv")
    assert len(per_frame) == 12 and (per_frame["n_gt"] == 6).all()
    assert {"density_gt", "density_pred", "nn_gt", "nn_pred"} <= set(per_frame.columns)
    assert per_frame["density_gt"].iloc[0] == pytest.approx(6 * 7 / 4 / 100**2)


def test_existing_report_is_not_replaced_without_overwrite(videos, tmp_path):
    gt, pred = videos
    out = tmp_path / "report"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = _run(["evaluate", "--pred", pred, "--gt", gt, "-o", out])
    _assert_one_line_error(r, "--overwrite")
    assert (out / "keep.txt").read_text() == "mine"
    r = _run(["evaluate", "--pred", pred, "--gt", gt, "-o", out, "--overwrite", "--no-plots", "--no-tracking"])
    assert r.exit_code == 0, r.output
    assert not (out / "keep.txt").exists() and (out / "metrics.json").exists()
    assert not (out / "pr_curve.png").exists()


def test_ground_truth_as_predictions_scores_perfectly(videos, tmp_path):
    gt, _ = videos
    r = _run(["evaluate", "--pred", gt, "--gt", gt, "-o", tmp_path / "r", "--no-plots"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["detection"]["mAP"] == 1.0 and m["detection"]["f1"] == 1.0
    t = m["tracking"]
    assert not t["linked_with_trackpy"]
    assert t["MOTA"] == 1.0 and t["IDF1"] == 1.0 and t["IDSW"] == 0 and t["RMSE_px"] == 0.0
    assert t["lifetimes"]["ks_p"] == pytest.approx(1.0)


def test_empty_predictions_give_recall_zero(videos, tmp_path):
    gt, _ = videos
    with DatasetWriter(tmp_path / "empty.h5", kind="predictions") as w:
        for _ in range(12):
            w.append(None, boxes={"x0": [], "y0": [], "x1": [], "y1": [], "class": [], "score": []}, shape=(100, 100))
    r = _run(["evaluate", "--pred", tmp_path / "empty.h5", "--gt", gt, "-o", tmp_path / "r", "--no-plots"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    d = m["detection"]
    assert d["recall"] == 0 and d["precision"] == 0 and d["f1"] == 0 and d["mAP"] == 0
    assert d["peak_f1_threshold"] is None  # NaN -> null in JSON
    assert m["tracking"]["CLR_FN"] == 72 and m["tracking"]["MOTA"] == 0


@pytest.mark.parametrize("bad, fragment", [("negative", "negative size"), ("nan", "NaN")])
def test_bad_prediction_values_exit_2(videos, tmp_path, bad, fragment):
    gt, _ = videos
    pred = _video(tmp_path / "bad.h5", score=True, tracks=False, bad=bad)
    r = _run(["evaluate", "--pred", pred, "--gt", gt, "-o", tmp_path / "r"])
    _assert_one_line_error(r, fragment)
    assert not (tmp_path / "r").exists()


def test_mismatched_frames_exit_2(tmp_path):
    gt = _video(tmp_path / "gt.h5", n=4, names=[f"f{i}.png" for i in range(4)])
    pred = _video(tmp_path / "p.h5", n=4, names=["f0.png", "f1.png", "other.png", "f3.png"], score=True,
                  tracks=False)
    _assert_one_line_error(_run(["evaluate", "--pred", pred, "--gt", gt, "-o", tmp_path / "r"]), "other")
    longer = _video(tmp_path / "long.h5", n=6, score=True, tracks=False)
    short = _video(tmp_path / "short.h5", n=4)
    _assert_one_line_error(_run(["evaluate", "--pred", longer, "--gt", short, "-o", tmp_path / "r"]), "frame id 5")


@pytest.mark.parametrize("args, fragment", [
    (["--iou", "0"], "--iou"),
    (["--iou", "1.5"], "--iou"),
    (["--max-dist", "-2"], "--max-dist"),
    (["--conf", "nan"], "--conf"),
    (["--memory", "-1"], "--memory"),
    (["--visibility", "0"], "--visibility"),
])
def test_bad_options_exit_2(videos, tmp_path, args, fragment):
    gt, pred = videos
    _assert_one_line_error(_run(["evaluate", "--pred", pred, "--gt", gt, "-o", tmp_path / "r", *args]), fragment)
    assert not (tmp_path / "r").exists()


def test_bad_paths_exit_2(videos, tmp_path):
    gt, _ = videos
    _assert_one_line_error(_run(["evaluate", "--pred", tmp_path / "nope.h5", "--gt", gt, "-o", tmp_path / "r"]),
                           "does not exist")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    _assert_one_line_error(_run(["evaluate", "--pred", tmp_path / "junk.h5", "--gt", gt, "-o", tmp_path / "r"]))
    (tmp_path / "junk.json").write_text("{not json")
    _assert_one_line_error(_run(["evaluate", "--pred", tmp_path / "junk.json", "--gt", gt, "-o", tmp_path / "r"]),
                           "JSON")


def test_points_ground_truth_with_iou_matching_exit_2(tmp_path):
    with DatasetWriter(tmp_path / "pts.h5", kind="film") as w:
        w.append(np.zeros((20, 20), np.float32), points={"x": [5.0], "y": [5.0], "charge": [1]})
    boxes = _video(tmp_path / "b.h5", n=1, score=True, tracks=False)
    _assert_one_line_error(_run(["evaluate", "--pred", boxes, "--gt", tmp_path / "pts.h5", "-o", tmp_path / "r",
                                 "--match", "iou"]), "--match distance")
    r = _run(["evaluate", "--pred", boxes, "--gt", tmp_path / "pts.h5", "-o", tmp_path / "r2", "--no-plots"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "r2" / "metrics.json").read_text())["detection"]["metric"] == "distance"


def test_track_command_outputs_and_evaluate_on_them(videos, tmp_path):
    gt, pred = videos
    for name in ("tracks.csv", "tracks.h5", "tracks.txt"):
        r = _run(["track", pred, "--search-range", 5, "--memory", 2, "-o", tmp_path / name])
        assert r.exit_code == 0, r.output
        assert "tracks" in r.output
    csv = pd.read_csv(tmp_path / "tracks.csv")
    assert list(csv.columns[:4]) == ["sample", "track_id", "x", "y"] and csv["track_id"].nunique() >= 6
    with open_dataset(tmp_path / "tracks.h5") as ds:
        assert ds.n == 12 and len(ds.table("tracks")) == len(csv)
    for name in ("tracks.csv", "tracks.txt", "tracks.h5"):
        r = _run(["evaluate", "--pred", tmp_path / name, "--gt", gt, "-o", tmp_path / f"r_{name}", "--no-plots"])
        assert r.exit_code == 0, (name, r.output)
        t = json.loads((tmp_path / f"r_{name}" / "metrics.json").read_text())["tracking"]
        assert not t["linked_with_trackpy"] and t["IDF1"] > 0.5
    # existing output untouched without --overwrite
    before = (tmp_path / "tracks.csv").read_bytes()
    _assert_one_line_error(_run(["track", pred, "-o", tmp_path / "tracks.csv"]), "exists")
    assert (tmp_path / "tracks.csv").read_bytes() == before
    _assert_one_line_error(_run(["track", pred, "-o", tmp_path / "t.csv", "--search-range", "0"]), "search-range")
    _assert_one_line_error(_run(["track", pred, "-o", tmp_path / "t.parquet"]), ".csv")


def test_export_commands(videos, tmp_path):
    gt, _ = videos
    r = _run(["export", "coco", gt, "-o", tmp_path / "coco"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "coco" / "annotations.json").is_file() and len(list((tmp_path / "coco" / "images").iterdir())) == 12
    r = _run(["export", "mot", gt, "-o", tmp_path / "mot", "--box-size", 8])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "mot" / "gt" / "gt.txt").is_file() and (tmp_path / "mot" / "img1" / "000012.jpg").is_file()
    # round trip through evaluate: the exports are scored perfectly against the source
    for out in ("coco", "mot"):
        r = _run(["evaluate", "--pred", tmp_path / out, "--gt", gt, "-o", tmp_path / f"r{out}", "--no-plots",
                  "--no-tracking"])
        assert r.exit_code == 0, r.output
        assert json.loads((tmp_path / f"r{out}" / "metrics.json").read_text())["detection"]["f1"] == 1.0
    _assert_one_line_error(_run(["export", "mot", gt, "-o", tmp_path / "mot2"]), "--box-size")
    _assert_one_line_error(_run(["export", "coco", gt, "-o", tmp_path / "coco"]), "exists")


def test_sizes_and_density_in_physical_units(tmp_path):
    from skimage.draw import disk

    with DatasetWriter(tmp_path / "tem.h5", kind="tem", class_names=["loop"]) as w:
        for t in range(3):
            img = np.full((80, 80), 0.85, np.float32)
            centres = [(20.0, 20.0), (55.0, 30.0), (40.0, 62.0)]
            for cy, cx in centres:
                img[disk((cy, cx), 5 + t, shape=img.shape)] = 0.15
            b = np.array([(cx - 9, cy - 9, cx + 9, cy + 9) for cy, cx in centres])
            w.append(img, boxes={"x0": b[:, 0], "y0": b[:, 1], "x1": b[:, 2], "y1": b[:, 3], "class": [0, 0, 0]})
    out = tmp_path / "r"
    r = _run(["evaluate", "--pred", tmp_path / "tem.h5", "--gt", tmp_path / "tem.h5", "-o", out, "--sizes",
              "--pixel-size", 0.5, "--visibility", 1.0])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["sizes"]["measured_gt"] == 9 and m["sizes"]["unit"] == "unit"
    assert m["sizes"]["median_gt"] == pytest.approx(0.5 * 2 * 6, rel=0.1)  # frame 1 disks: radius 6
    per_frame = pd.read_csv(out / "per_frame.csv")
    np.testing.assert_allclose(per_frame["size_median_gt"], [0.5 * 2 * r for r in (5, 6, 7)], rtol=0.1)
    assert m["density"]["total_gt"] == pytest.approx(9 / (3 * 80 * 80 * 0.25))
    assert (out / "sizes.png").is_file()
