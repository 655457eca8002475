"""Detection metrics, and AP cross-checked against pycocotools."""

import contextlib
import io

import numpy as np
import pandas as pd
import pytest

from simgen.errors import DataError, ParameterError
from simgen.evaluate.detection import (
    average_precision,
    detection_counts,
    evaluate_detections,
    interpolated_precision,
    peak_f1,
    pr_curve,
)


# -- hand-computed values ----------------------------------------------------------
def test_interpolated_precision_is_running_max_from_the_right():
    np.testing.assert_array_equal(interpolated_precision([1.0, 0.5, 0.67, 0.5]), [1.0, 0.67, 0.67, 0.5])


def test_average_precision_methods_on_a_hand_example():
    # 2 ground truths; detections TP, FP, TP  -> recall .5 .5 1, precision 1 .5 .667
    rc = [0.5, 0.5, 1.0]
    pr = [1.0, 0.5, 2 / 3]
    assert average_precision(rc, pr, "continuous") == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # coco: recall levels 0..0.5 (51 levels) -> 1, 0.51..1 (50 levels) -> 2/3
    assert average_precision(rc, pr, "coco") == pytest.approx((51 * 1 + 50 * 2 / 3) / 101)
    assert average_precision(rc, pr, "voc11") == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    assert average_precision([], [], "coco") == 0.0
    with pytest.raises(ParameterError):
        average_precision(rc, pr, "trapezoid")


def test_counts_and_curve_on_a_small_case(ev):
    gt = ev.boxes_df([0, 0, 1], [0, 20, 0], [0, 0, 0], [10, 30, 10], [10, 10, 10])
    pred = ev.boxes_df([0, 0, 1, 1], [0, 50, 1, 40], [0, 0, 0, 0], [10, 60, 11, 50], [10, 10, 10, 10],
                       score=[0.9, 0.8, 0.7, 0.1])
    c = detection_counts(pred, gt, conf=0.5)
    assert (c["tp"], c["fp"], c["fn"]) == (2, 1, 1)
    assert c["precision"] == pytest.approx(2 / 3) and c["recall"] == pytest.approx(2 / 3)
    assert c["f1"] == pytest.approx(2 / 3)
    curve = pr_curve(pred, gt)
    assert curve["threshold"].tolist() == [0.9, 0.8, 0.7, 0.1]
    assert curve["tp"].tolist() == [1, 1, 2, 2]
    assert curve["fp"].tolist() == [0, 1, 1, 2]
    f1, t = peak_f1(curve)
    assert f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 1)) and t == 0.7


def test_tied_scores_form_one_curve_point(ev):
    gt = ev.boxes_df([0, 0], [0, 20], [0, 0], [10, 30], [10, 10])
    pred = ev.boxes_df([0, 0], [0, 20], [0, 0], [10, 30], [10, 10], score=[0.5, 0.5])
    curve = pr_curve(pred, gt)
    assert len(curve) == 1 and curve["recall"].iloc[0] == 1.0


def test_predictions_without_scores_are_one_operating_point(ev):
    gt = ev.boxes_df([0, 0], [0, 20], [0, 0], [10, 30], [10, 10])
    pred = gt.iloc[:1]
    r = evaluate_detections(pred, gt)
    assert len(r.curve) == 1 and r.summary["recall"] == 0.5
    assert r.summary["mAP"] == pytest.approx(51 / 101)  # precision 1 up to recall 0.5


def test_empty_predictions_give_zero_recall_and_zero_ap(ev):
    """Documented result: no predictions -> precision = recall = F1 = 0 (0/0 -> 0), AP 0."""
    gt = ev.boxes_df([0, 1], [0, 0], [0, 0], [10, 10], [10, 10])
    pred = gt.iloc[:0].assign(score=np.zeros(0))
    r = evaluate_detections(pred, gt)
    s = r.summary
    assert (s["tp"], s["fp"], s["fn"]) == (0, 0, 2)
    assert s["recall"] == 0 and s["precision"] == 0 and s["f1"] == 0
    assert s["mAP"] == 0.0 and s["peak_f1"] == 0.0 and np.isnan(s["peak_f1_threshold"])
    assert r.per_frame["fn"].tolist() == [1, 1]


def test_class_without_ground_truth_has_nan_ap_and_is_left_out_of_the_mean(ev):
    gt = ev.boxes_df([0], [0], [0], [10], [10], cls=0)
    pred = ev.boxes_df([0, 0], [0, 30], [0, 0], [10, 40], [10, 10], cls=[0, 1], score=[0.9, 0.8])
    r = evaluate_detections(pred, gt)
    assert np.isnan(r.per_class.loc[1, "ap"])
    assert r.per_class.loc[0, "ap"] == pytest.approx(1.0)
    assert r.summary["mAP"] == pytest.approx(1.0)


def test_ground_truth_as_predictions_is_perfect(ev, rng):
    _, gt = ev.random_box_sets(rng)
    r = evaluate_detections(gt.assign(score=1.0), gt, threshold=0.5)
    assert r.summary["mAP"] == 1.0 and r.summary["f1"] == 1.0 and r.summary["peak_f1"] == 1.0


def test_conf_threshold_filters_predictions(ev, rng):
    pred, gt = ev.random_box_sets(rng)
    lo = evaluate_detections(pred, gt, conf=0.0).summary
    hi = evaluate_detections(pred, gt, conf=0.7).summary
    assert hi["n_pred_kept"] == int((pred["score"] >= 0.7).sum()) < lo["n_pred_kept"] == len(pred)
    assert hi["recall"] <= lo["recall"]


@pytest.mark.parametrize("bad, match", [
    ({"score": np.nan}, "NaN"),
    ({"x1": -5.0}, "negative size"),
])
def test_bad_prediction_rows_raise_data_error(ev, bad, match):
    gt = ev.boxes_df([0], [0], [0], [10], [10])
    pred = ev.boxes_df([0], [0], [0], [10], [10], score=0.5).assign(**bad)
    with pytest.raises(DataError, match=match):
        evaluate_detections(pred, gt)


# -- pycocotools cross-check -----------------------------------------------------------
def _coco_ap(pred: pd.DataFrame, gt: pd.DataFrame, n_img: int, n_cls: int, iou: float = 0.5):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ds = {"images": [{"id": i + 1, "width": 200, "height": 200} for i in range(n_img)],
          "categories": [{"id": c + 1, "name": str(c)} for c in range(n_cls)], "annotations": []}
    for k, r in enumerate(gt.itertuples(index=False)):
        w, h = r.x1 - r.x0, r.y1 - r.y0
        ds["annotations"].append({"id": k + 1, "image_id": int(r.sample) + 1, "category_id": int(r[5]) + 1,
                                  "bbox": [r.x0, r.y0, w, h], "area": w * h, "iscrowd": 0})
    res = [{"image_id": int(r.sample) + 1, "category_id": int(r[5]) + 1,
            "bbox": [r.x0, r.y0, r.x1 - r.x0, r.y1 - r.y0], "score": float(r.score)}
           for r in pred.itertuples(index=False)]
    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = ds
        cg.createIndex()
        cd = cg.loadRes(res)
        e = COCOeval(cg, cd, "bbox")
        e.params.iouThrs = np.array([iou])
        e.params.maxDets = [10_000]
        e.params.areaRng = [[0, 1e10]]
        e.params.areaRngLbl = ["all"]
        e.evaluate()
        e.accumulate()
    prec = e.eval["precision"][0, :, :, 0, 0]  # recall levels x classes, -1 where no ground truth
    return np.array([prec[:, k].mean() if (prec[:, k] > -1).all() else np.nan for k in range(n_cls)])


def test_ap_matches_pycocotools_at_iou_05_on_random_box_sets(ev):
    rng = np.random.default_rng(7)
    n_cmp = 0
    worst_continuous = 0.0
    for _ in range(15):
        pred, gt = ev.random_box_sets(rng, n_img=6, n_cls=3)
        if len(pred) == 0:
            continue
        ours = evaluate_detections(pred, gt, threshold=0.5, ap_method="coco").per_class["ap"].reindex(range(3))
        ref = _coco_ap(pred, gt, 6, 3)
        np.testing.assert_allclose(ours.to_numpy(), ref, atol=1e-12, equal_nan=True)
        cont = evaluate_detections(pred, gt, threshold=0.5, ap_method="continuous").per_class["ap"].reindex(range(3))
        worst_continuous = max(worst_continuous, float(np.nanmax(np.abs(cont.to_numpy() - ref))))
        n_cmp += int(np.isfinite(ref).sum())
    assert n_cmp > 25
    # Documented difference: the area under p_interp differs from the 101-point
    # sampling by at most ~1/101 per recall jump; small here but not zero.
    assert 0 < worst_continuous < 0.05


def test_ap_agrees_with_pycocotools_also_at_other_iou_cutoffs(ev):
    rng = np.random.default_rng(3)
    pred, gt = ev.random_box_sets(rng, n_img=8, n_cls=2)
    for iou in (0.15, 0.75):
        ours = evaluate_detections(pred, gt, threshold=iou).per_class["ap"].reindex(range(2)).to_numpy()
        np.testing.assert_allclose(ours, _coco_ap(pred, gt, 8, 2, iou), atol=1e-12, equal_nan=True)
