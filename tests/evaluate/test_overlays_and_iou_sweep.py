"""``simgen evaluate --overlays`` (TP/FP/FN colours at the counted matching) and ``--iou LO:HI:STEP``."""

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from simgen.cli import main
from simgen.datasets.h5io import DatasetWriter
from simgen.errors import ParameterError
from simgen.evaluate.iou_sweep import parse_iou
from simgen.evaluate.overlays import COLOURS, overlay_names
from simgen.evaluate.report import evaluate


def _boxes(rows, score=False):
    cols = ["x0", "y0", "x1", "y1"] + (["score"] if score else [])
    df = pd.DataFrame(rows, columns=cols, dtype=float)
    return df.assign(**{"class": np.zeros(len(df), int)})


def _write(path, frames, score=False, names=("a", "b")):
    with DatasetWriter(path, kind="tem", class_names=["loop"]) as w:
        for rows, name in zip(frames, names):
            w.append(np.full((64, 64), 0.5, np.float32), boxes=_boxes(rows, score), name=name)
    return path


def _run(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _assert_one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    err = result.stderr.strip()
    assert err.startswith("Error:") and "\n" not in err and fragment in err, err


@pytest.fixture
def scene(tmp_path):
    """Image a: one TP, one plain miss, one FP, one miss whose prediction is below conf; image b: one FP."""
    gt = _write(tmp_path / "gt.h5", [
        [(5, 5, 15, 15), (40, 5, 50, 15), (40, 40, 50, 50)],
        [],
    ])
    pred = _write(tmp_path / "pred.h5", [
        [(6, 5, 16, 15, 0.9), (5, 40, 15, 50, 0.8), (40, 40, 50, 50, 0.1)],
        [(20, 20, 30, 30, 0.7)],
    ], score=True)
    return gt, pred


def test_overlays_colour_tp_fp_fn_at_the_counted_matching(scene, tmp_path):
    gt, pred = scene
    out, ov = tmp_path / "report", tmp_path / "overlays"
    r = _run(["evaluate", "--pred", pred, "--gt", gt, "--iou", 0.5, "--conf", 0.25, "-o", out, "--overlays", ov,
              "--no-plots"])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert (m["detection"]["tp"], m["detection"]["fp"], m["detection"]["fn"]) == (1, 2, 2)
    assert m["overlays"]["images"] == 2 and "overlays: 2 images" in r.output
    assert sorted(p.name for p in ov.iterdir()) == ["a.png", "b.png"]
    a = np.asarray(Image.open(ov / "a.png"))
    assert a.shape == (64, 64, 3)
    green, red, yellow = (tuple(COLOURS[k]) for k in ("tp", "fp", "fn"))
    # outlines run one pixel outside each box (box x0..x1 covers columns x0..x1-1)
    assert tuple(a[4, 10]) == green and tuple(a[10, 5]) == green     # TP prediction (6, 5, 16, 15)
    assert tuple(a[4, 45]) == yellow and tuple(a[10, 50]) == yellow  # missed ground truth (40, 5, 50, 15)
    assert tuple(a[39, 10]) == red and tuple(a[45, 15]) == red       # FP prediction (5, 40, 15, 50)
    assert tuple(a[39, 45]) == yellow  # the score-0.1 prediction is below conf: its object is a miss, no red box
    assert tuple(a[10, 10]) == (128, 128, 128) and tuple(a[30, 30]) == (128, 128, 128)  # image untouched elsewhere
    b = np.asarray(Image.open(ov / "b.png"))
    assert tuple(b[19, 25]) == red and not (b == np.array(green)).all(-1).any()
    # a lower conf turns the low-score prediction into a TP: same matching as the counts
    ov2 = tmp_path / "ov2"
    r = _run(["evaluate", "--pred", pred, "--gt", gt, "--iou", 0.5, "--conf", 0.05, "-o", tmp_path / "r2",
              "--overlays", ov2, "--no-plots"])
    assert r.exit_code == 0, r.output
    assert tuple(np.asarray(Image.open(ov2 / "a.png"))[39, 45]) == green


def test_overlays_need_images_and_never_replace_an_input(scene, tmp_path):
    gt, pred = scene
    r = _run(["evaluate", "--pred", pred, "--gt", gt, "-o", tmp_path / "r", "--overlays", tmp_path / "r"])
    _assert_one_line_error(r, "report folder")
    r = _run(["evaluate", "--pred", pred, "--gt", gt, "-o", tmp_path / "r", "--overlays", tmp_path, "--overwrite"])
    _assert_one_line_error(r, "would replace the input")
    assert gt.exists() and pred.exists()
    csv = tmp_path / "gt.csv"
    pd.DataFrame({"sample": [0], "x0": [1.0], "y0": [1.0], "x1": [5.0], "y1": [5.0], "class": [0]}).to_csv(csv, index=False)
    r = _run(["evaluate", "--pred", csv, "--gt", csv, "-o", tmp_path / "r3", "--overlays", tmp_path / "ov3"])
    _assert_one_line_error(r, "needs ground-truth images")
    assert not (tmp_path / "ov3").exists() and not (tmp_path / "r3").exists()


def test_overlay_names_are_safe_and_unique():
    assert overlay_names(["a", "b"]) == ["a.png", "b.png"]
    assert overlay_names(["x/../y", "x_.._y"]) == ["000000_x_.._y.png", "000001_x_.._y.png"]


# -- F1 against the IoU cut-off -------------------------------------------------------------------
def test_f1_against_iou_range(tmp_path):
    # four 10x10 objects, predictions shifted right by 1, 3, 5, 8 px: IoU 0.818, 0.538, 0.333, 0.111
    gt_rows = [(0, 0, 10, 10), (20, 0, 30, 10), (40, 0, 50, 10), (0, 30, 10, 40)]
    shifts = [1, 3, 5, 8]
    pred_rows = [(x0 + d, y0, x1 + d, y1, 0.9) for (x0, y0, x1, y1), d in zip(gt_rows, shifts)]
    gt = _write(tmp_path / "gt.h5", [gt_rows], names=("a",))
    pred = _write(tmp_path / "pred.h5", [pred_rows], score=True, names=("a",))
    out = tmp_path / "report"
    r = _run(["evaluate", "--pred", pred, "--gt", gt, "--iou", "0.05:0.5:0.05", "-o", out])
    assert r.exit_code == 0, r.output
    assert "F1 against the IoU cut-off" in r.output
    sweep = pd.read_csv(out / "f1_vs_iou.csv")
    np.testing.assert_allclose(sweep["iou"], np.round(np.arange(1, 11) * 0.05, 10))
    tp = np.array([4, 4, 3, 3, 3, 3, 2, 2, 2, 2])
    np.testing.assert_array_equal(sweep["tp"], tp)
    np.testing.assert_array_equal(sweep["fp"], 4 - tp)
    np.testing.assert_allclose(sweep["f1"], tp / 4)
    np.testing.assert_allclose(sweep["precision"], tp / 4)
    assert sweep["mAP"].iloc[0] == pytest.approx(1.0) and np.all(np.diff(sweep["mAP"]) <= 1e-12)
    assert (out / "f1_vs_iou.png").stat().st_size > 1000
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["f1_vs_iou"]) == 10 and m["parameters"]["iou"] == 0.05 and m["detection"]["tp"] == 4
    # a single value keeps today's report: no sweep
    one = evaluate(pred, gt, iou=0.15, plots=False)
    assert "f1_vs_iou" not in one and one["detection"]["tp"] == 3


@pytest.mark.parametrize(("text", "expected"), [("0.15", [0.15]), ("0.1:0.3:0.1", [0.1, 0.2, 0.3]),
                                                 ("0.5,0.15,0.5", [0.5, 0.15]), (0.3, [0.3])])
def test_parse_iou(text, expected):
    assert parse_iou(text) == expected


@pytest.mark.parametrize("text", ["0:0.5:0.1", "0.5:0.1:0.1", "0.1:0.5:0", "0.1:0.5", "nan", "1.5", "a:b:c",
                                  "0.0001:1:0.0001", ","])
def test_bad_iou_is_one_line(scene, tmp_path, text):
    with pytest.raises(ParameterError):
        parse_iou(text)
    gt, pred = scene
    r = _run(["evaluate", "--pred", pred, "--gt", gt, "--iou", text, "-o", tmp_path / "r"])
    _assert_one_line_error(r, "--iou")
    assert not (tmp_path / "r").exists()
