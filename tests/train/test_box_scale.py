"""Box tightness calibration (`simgen train box-scale`, `--box-scale auto|off`)."""

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from simgen.cli import main
from simgen.datasets.h5io import DatasetWriter
from simgen.errors import DataError, ParameterError
from simgen.evaluate.matching import box_iou
from simgen.train.yolo.box_scale import apply_box_scale, fit_box_scale
from simgen.train.yolo.box_scale_calibrate import calibrate_box_scale

COLS = ["x0", "y0", "x1", "y1"]


def _truth(rng, n_frames=6, n=12, size=128):
    parts = []
    for t in range(n_frames):
        c = rng.uniform(25, size - 25, (n, 2))
        wh = rng.uniform(5, 30, (n, 2))
        b = np.concatenate([c - wh / 2, c + wh / 2], axis=1)
        parts.append(pd.DataFrame(b, columns=COLS).assign(sample=t, **{"class": 0}))
    return pd.concat(parts, ignore_index=True)


def _inflate(gt, rng, sx=1.5, sy=1.5, jitter=0.03, n_fp=5):
    """Predictions: every true box sx x sy too large (± a few %), shifted a little, plus false positives."""
    b = gt[COLS].to_numpy(np.float64)
    c = (b[:, :2] + b[:, 2:]) / 2 + rng.normal(0, 0.5, (len(b), 2))
    wh = (b[:, 2:] - b[:, :2]) * [sx, sy] * rng.normal(1, jitter, (len(b), 2))
    pred = pd.DataFrame(np.concatenate([c - wh / 2, c + wh / 2], axis=1), columns=COLS)
    pred = pred.assign(sample=gt["sample"].to_numpy(), score=rng.uniform(0.5, 1, len(b)), **{"class": 0})
    fp = pd.DataFrame({"x0": rng.uniform(0, 100, n_fp), "y0": rng.uniform(0, 100, n_fp)})
    fp = fp.assign(x1=fp["x0"] + 8, y1=fp["y0"] + 8, sample=0, score=0.9, **{"class": 0})
    return pd.concat([pred, fp], ignore_index=True)


def _mean_iou(pred, gt):
    return float(np.mean([box_iou(p, g)[0, 0] for p, g in zip(pred[COLS].to_numpy(), gt[COLS].to_numpy())]))


def _best_iou(pred, gt):
    """Mean over predictions of the IoU with their best true box (row order free)."""
    return float(box_iou(pred[COLS].to_numpy(), gt[COLS].to_numpy()).max(axis=1).mean())


@pytest.mark.parametrize("sx,sy", [(1.5, 1.5), (1.5, 1.2)])
def test_fit_recovers_the_inflation_and_raises_iou(sx, sy):
    rng = np.random.default_rng(0)
    gt = _truth(rng)
    pred = _inflate(gt, rng, sx, sy)
    s = fit_box_scale(pred, gt, shapes={t: (128, 128) for t in range(6)})
    assert s.x == pytest.approx(1 / sx, rel=0.03) and s.y == pytest.approx(1 / sy, rel=0.03)
    assert s.n_pairs == len(gt)  # false positives are not matched; no box touches the border
    assert s.mean_iou_before < 0.6 and s.mean_iou_after > 0.8
    fixed = apply_box_scale(pred.iloc[: len(gt)], s.x, s.y, (128, 128))
    assert _mean_iou(fixed, gt) > _mean_iou(pred.iloc[: len(gt)], gt) + 0.25
    # low scores are ignored, too few pairs are refused
    with pytest.raises(DataError, match="pairs"):
        fit_box_scale(pred, gt, conf=0.999)


def test_apply_scales_about_the_centre_and_clips():
    df = pd.DataFrame({"x0": [10.0, 0.0], "y0": [10.0, 0.0], "x1": [30.0, 20.0], "y1": [20.0, 10.0], "score": [1, 1]})
    out = apply_box_scale(df, 0.5, 2.0, shape=(24, 64))
    np.testing.assert_allclose(out[COLS].to_numpy(), [[15, 5, 25, 24], [5, 0, 15, 15]])
    assert out["score"].tolist() == [1, 1]
    with pytest.raises(ParameterError):
        apply_box_scale(df, 0.0, 1.0)


# -- with a checkpoint -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An untrained one-class YOLO checkpoint (its network is never run: tests patch the forward pass)."""
    from simgen.train.yolo.offline import setup_ultralytics

    setup_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    from simgen.train.yolo.checkpoint import save_yolo_checkpoint

    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    model.names = {0: "defect"}
    tmp = tmp_path_factory.mktemp("box_scale")
    return save_yolo_checkpoint(tmp / "best.pt", {"model": model, "simgen": {"tile": 0, "imgsz": 128,
                                                                                   "conf_f1": 0.3}})


def _val(path, gt, kind="tem"):
    with DatasetWriter(path, kind=kind, class_names=["defect"]) as w:
        for t in range(int(gt["sample"].max()) + 1):
            w.append(np.full((128, 128), 0.5, np.float32), boxes=gt[gt["sample"] == t].drop(columns="sample"))
    return path


class _Inflating:
    """A detector whose boxes are the true ones 1.5x too large."""

    conf_f1 = 0.3

    def __init__(self, gt):
        self.pred = _inflate(gt, np.random.default_rng(1))

    def predict(self, source, progress=False):
        return self.pred


def test_calibrate_writes_a_checkpoint_the_detector_applies(ckpt, tmp_path):
    from simgen.runtime import checkpoint_globals
    from simgen.train.yolo.checkpoint import load_yolo_checkpoint
    from simgen.train.yolo.predict import YoloDetector

    gt = _truth(np.random.default_rng(0))
    val = _val(tmp_path / "val.h5", gt)
    before = ckpt.read_bytes()
    fake = _Inflating(gt)
    s = calibrate_box_scale(ckpt, val, tmp_path / "cal.pt", detector=fake, progress=False)
    assert s.x == pytest.approx(1 / 1.5, rel=0.03) and s.y == pytest.approx(1 / 1.5, rel=0.03)
    assert ckpt.read_bytes() == before  # the input is never touched
    assert all("simgen" not in g for g in checkpoint_globals(tmp_path / "cal.pt"))  # plain metadata only
    meta = load_yolo_checkpoint(tmp_path / "cal.pt")["simgen"]  # weights_only loading
    assert meta["box_scale"]["x"] == pytest.approx(s.x) and meta["box_scale"]["val"].endswith("val.h5")
    assert meta["conf_f1"] == 0.3

    raw = fake.pred[fake.pred["sample"] == 0].iloc[:12]
    truth = gt[gt["sample"] == 0]
    det = YoloDetector(tmp_path / "cal.pt", device="cpu", threads=1)
    assert det.box_scale == pytest.approx((s.x, s.y)) and det.describe()["box_scale"] == list(det.box_scale)
    det._run = lambda crops: [raw[[*COLS, "class", "score"]].astype(np.float32)]  # the network's raw boxes
    out = det.detect(np.zeros((128, 128), np.float32))
    assert _best_iou(out, truth) > 0.8 > 0.6 > _best_iou(raw, truth)
    det.box_scale = None  # what box_scale="off" gives
    again = det.detect(np.zeros((128, 128), np.float32))
    np.testing.assert_allclose(again.sort_values("x0")[COLS], raw.sort_values("x0")[COLS], atol=1e-4)
    assert YoloDetector(ckpt, device="cpu", threads=1).box_scale is None  # an uncalibrated checkpoint

    with pytest.raises(ParameterError, match="exists"):  # never replaces a file unasked (the input too)
        calibrate_box_scale(ckpt, val, ckpt, detector=fake, progress=False)
    with pytest.raises(ParameterError, match="synthetic"):  # fitted on simulated data only
        calibrate_box_scale(ckpt, _val(tmp_path / "real.h5", gt, kind="real"), tmp_path / "x.pt", detector=fake,
                            progress=False)
    with pytest.raises(ParameterError, match="box scale"):
        YoloDetector(ckpt, device="cpu", box_scale="on")


def test_cli_box_scale_and_errors(ckpt, tmp_path, monkeypatch):
    from simgen.train.yolo.predict import YoloDetector

    gt = _truth(np.random.default_rng(0))
    val = _val(tmp_path / "val.h5", gt)
    fake = _Inflating(gt)
    seen = {}

    def predict(self, source, names=None, progress=False):
        seen["box_scale"] = self.box_scale
        return fake.pred

    monkeypatch.setattr(YoloDetector, "predict", predict)
    runner = CliRunner()
    out = tmp_path / "cal.pt"
    res = runner.invoke(main, ["train", "box-scale", str(ckpt), "--val", str(val), "-o", str(out), "--device", "cpu",
                               "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "width x0.6" in res.output and out.exists() and seen["box_scale"] is None  # fitted on raw boxes
    stamp = out.stat().st_mtime_ns
    for args in (["--val", str(val), "-o", str(out)],  # exists
                 ["--val", str(tmp_path / "nope.h5"), "-o", str(tmp_path / "n.pt")],
                 ["--val", str(val), "-o", str(tmp_path / "m.pt"), "--match-iou", "0"]):
        res = runner.invoke(main, ["train", "box-scale", str(ckpt), *args])
        assert res.exit_code == 2 and "Error" in res.output, res.output
    assert out.stat().st_mtime_ns == stamp
    res = runner.invoke(main, ["train", "box-scale", str(ckpt), "--val", str(val)])  # -o is required
    assert res.exit_code == 2 and not (tmp_path / "m.pt").exists()
    res = runner.invoke(main, ["predict", str(ckpt), str(val), "--box-scale", "maybe", "-o", str(tmp_path / "p.h5")])
    assert res.exit_code == 2 and not (tmp_path / "p.h5").exists()


def test_truth_from_masks_ignores_the_label_margin(ckpt, tmp_path):
    """Boxes stored with a 2 px margin, masks exact: auto fits to the masks (the true extent)."""
    rng = np.random.default_rng(3)
    masks, rows = [], []
    for t in range(3):
        lab = np.zeros((128, 128), np.uint16)
        for i, (cy, cx) in enumerate([(y, x) for y in (24, 64, 104) for x in (24, 64, 104)]):
            h, w = rng.integers(6, 16, 2)
            y0, x0 = cy - h // 2, cx - w // 2
            lab[y0:y0 + h, x0:x0 + w] = i + 1
            rows.append({"sample": t, "x0": x0, "y0": y0, "x1": x0 + w, "y1": y0 + h})
        masks.append(lab)
    tight = pd.DataFrame(rows).astype(float)
    margin = tight.assign(x0=tight.x0 - 2, y0=tight.y0 - 2, x1=tight.x1 + 2, y1=tight.y1 + 2)
    with DatasetWriter(tmp_path / "val.h5", kind="tem", class_names=["defect"]) as w:
        for t in range(3):
            w.append(np.full((128, 128), 0.5, np.float32), mask=masks[t],
                     boxes=margin[margin["sample"] == t].drop(columns="sample").assign(**{"class": 0}))
    fake = _Inflating(tight)
    s = calibrate_box_scale(ckpt, tmp_path / "val.h5", tmp_path / "m.pt", detector=fake, progress=False)
    assert s.truth == "masks" and s.x == pytest.approx(1 / 1.5, rel=0.03)
    b = calibrate_box_scale(ckpt, tmp_path / "val.h5", tmp_path / "b.pt", truth="boxes", detector=fake,
                            progress=False)
    assert b.truth == "boxes" and b.x > s.x * 1.2  # the margin inflates the "true" size


def test_track_video_links_raw_boxes_and_scores_rescaled_ones(ckpt, tmp_path, monkeypatch):
    """A calibrated checkpoint whose raw boxes are 2x too large: tracks carry the rescaled boxes,
    so MOT at IoU 0.5 succeeds; with --box-scale off it fails (IoU 0.25)."""
    import json

    from simgen.experiments.track_video import track_video
    from simgen.train.yolo.checkpoint import load_yolo_checkpoint, save_yolo_checkpoint
    from simgen.train.yolo.predict import YoloDetector, read_predictions

    state = load_yolo_checkpoint(ckpt)
    state["simgen"] = {**state["simgen"], "box_scale": {"x": 0.5, "y": 0.5}}
    cal = save_yolo_checkpoint(tmp_path / "cal.pt", state)
    starts = np.array([[16.0, 20.0], [44.0, 24.0], [30.0, 46.0]])
    truth = []
    with DatasetWriter(tmp_path / "video.h5", kind="video", class_names=["defect"]) as w:
        for t in range(6):
            p = starts + [0.7 * t, 0.3 * t]
            box = {"x0": p[:, 0] - 3, "y0": p[:, 1] - 3, "x1": p[:, 0] + 3, "y1": p[:, 1] + 3}
            truth.append(pd.DataFrame(box))
            w.append(np.full((64, 64), 0.5, np.float32), boxes={**box, "class": np.zeros(3, np.int16)},
                     tracks={"track_id": np.arange(3), "x": p[:, 0], "y": p[:, 1], **box})

    def predict_each(self, source, names=None, progress=False):
        for k, b in enumerate(truth):
            big = apply_box_scale(b, 2.0, 2.0)
            yield k, big.assign(**{"class": np.zeros(3, np.int16), "score": np.full(3, 0.9, np.float32)})

    monkeypatch.setattr(YoloDetector, "predict_each", predict_each)
    on = track_video(cal, tmp_path / "video.h5", tmp_path / "on", tracker="bytetrack", mot_iou=0.5, device="cpu",
                     progress=False)
    off = track_video(cal, tmp_path / "video.h5", tmp_path / "off", tracker="bytetrack", mot_iou=0.5, device="cpu",
                      box_scale="off", progress=False)
    assert on.tracking["MOTA"] > 0.9 and on.tracking["IDSW"] == 0 and off.tracking["MOTA"] <= 0
    raw = read_predictions(tmp_path / "on" / "detections.h5")
    assert np.allclose(raw["x1"] - raw["x0"], 12)  # the file keeps the raw boxes
    tracks = pd.read_csv(tmp_path / "on" / "tracks.csv")
    assert np.allclose(tracks["x1"] - tracks["x0"], 6, atol=1e-4) and tracks["track_id"].nunique() == 3
    assert json.loads((tmp_path / "on" / "summary.json").read_text())["n_tracks"] == 3
