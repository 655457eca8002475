"""Evaluation on a real annotated folder (../shared/realdata/dev): ground truth as predictions is perfect."""

import json

import pytest
from click.testing import CliRunner

from simgen.cli import main
from simgen.evaluate.report import evaluate

pytestmark = pytest.mark.realdata


def test_real_folder_ground_truth_as_predictions(realdata_dir, tmp_path):
    folder = realdata_dir / "creme_316L"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    out = tmp_path / "report"
    r = CliRunner().invoke(main, ["evaluate", "--pred", str(folder), "--gt", str(folder), "-o", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    d = m["detection"]
    assert d["n_gt"] == d["n_pred"] == d["tp"] > 500
    assert d["mAP"] == 1.0 and d["f1"] == 1.0 and d["peak_f1"] == 1.0 and d["fp"] == d["fn"] == 0
    assert m["inputs"]["gt_format"] == "yolo"
    # the folder has instance masks: pixel-perfect segmentation
    assert m["segmentation"]["dice"] == 1.0 and m["segmentation"]["n_images"] >= 1
    assert (out / "pr_curve.png").is_file()


def test_real_folder_shifted_predictions_lose_recall_at_high_iou(realdata_dir, tmp_path):
    """Label-only prediction folder (6th column) paired by stem with the real images."""
    import numpy as np

    folder = realdata_dir / "dsva_fecral"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    pred = tmp_path / "pred" / "labels"
    pred.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for txt in sorted((folder / "labels").glob("*.txt"))[:3]:  # other frames: no detections
        rows = [line.split() for line in txt.read_text().splitlines() if line.strip()]
        lines = [f"{r[0]} {float(r[1]) + 0.004:.6f} {r[2]} {r[3]} {r[4]} {rng.uniform(0.3, 1):.4f}" for r in rows]
        (pred / txt.name).write_text("\n".join(lines) + "\n")
    loose = evaluate(tmp_path / "pred", folder, iou=0.15)["detection"]
    tight = evaluate(tmp_path / "pred", folder, iou=0.9)["detection"]
    assert loose["precision"] > 0.95 and 0.2 < loose["recall"] < 1.0  # 3 of 6 frames predicted
    assert tight["recall"] < loose["recall"]
