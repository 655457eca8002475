"""Matching: IoU / distance matrices and the two greedy orders."""

import numpy as np
import pandas as pd
import pytest

from simgen.errors import DataError, ParameterError
from simgen.evaluate.matching import (
    box_iou,
    candidate_pairs,
    check_detections,
    greedy_assign,
    match_detections,
    pairwise_distance,
)


def test_box_iou_known_values_and_zero_area():
    a = [[0, 0, 2, 2], [0, 0, 0, 0]]
    b = [[1, 0, 3, 2], [0, 0, 2, 2], [10, 10, 11, 11], [0, 0, 0, 0]]
    m = box_iou(a, b)
    assert m.shape == (2, 4)
    np.testing.assert_allclose(m[0], [1 / 3, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(m[1], 0.0)  # empty unions give 0, not NaN


def test_box_iou_matches_bruteforce(rng):
    a = np.c_[rng.uniform(0, 50, (20, 2)), np.zeros((20, 2))]
    a[:, 2:] = a[:, :2] + rng.uniform(0, 15, (20, 2))
    b = np.c_[rng.uniform(0, 50, (15, 2)), np.zeros((15, 2))]
    b[:, 2:] = b[:, :2] + rng.uniform(0, 15, (15, 2))
    m = box_iou(a, b)
    for i in range(20):
        for j in range(15):
            iw = max(0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            ih = max(0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            inter = iw * ih
            union = (a[i, 2] - a[i, 0]) * (a[i, 3] - a[i, 1]) + (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1]) - inter
            assert m[i, j] == pytest.approx(inter / union if union > 0 else 0.0)


def test_pairwise_distance():
    np.testing.assert_allclose(pairwise_distance([[0, 0], [3, 4]], [[0, 0]]), [[0.0], [5.0]])


def test_greedy_assign_takes_pairs_in_order_once():
    rows, cols = greedy_assign([0, 1, 0, 1], [0, 0, 1, 1], 2, 2)
    np.testing.assert_array_equal(rows, [0, 1])
    np.testing.assert_array_equal(cols, [0, 1])
    # first pair wins its row and column; a conflicting later pair is skipped
    rows, cols = greedy_assign([1, 0], [0, 0], 3, 2)
    np.testing.assert_array_equal(rows, [-1, 0, -1])
    np.testing.assert_array_equal(cols, [1, -1])


def _two_preds_one_gt(boxes_df):
    gt = boxes_df([0], [0], [0], [10], [10])
    # pred 0: IoU 0.6 with high score; pred 1: IoU 0.9 with low score
    pred = boxes_df([0, 0], [0, 0.5], [0, 0], [6, 9.5], [10, 10], score=[0.9, 0.2])
    return pred, gt


def test_quality_order_prefers_best_iou_score_order_prefers_confidence(ev):
    pred, gt = _two_preds_one_gt(ev.boxes_df)
    q = match_detections(pred, gt, threshold=0.5, order="quality")
    s = match_detections(pred, gt, threshold=0.5, order="score")
    assert q.pred_to_gt.tolist() == [-1, 0]
    assert s.pred_to_gt.tolist() == [0, -1]
    assert q.value[1] == pytest.approx(0.9) and np.isnan(q.value[0])
    assert (q.tp, q.fp, q.fn) == (1, 1, 0)


def test_score_order_takes_best_free_partner(ev):
    boxes_df = ev.boxes_df
    gt = boxes_df([0, 0], [0, 4], [0, 0], [10, 14], [10, 10])
    pred = boxes_df([0, 0], [3.5, 3.5], [0, 0], [13.5, 13.5], [10, 10], score=[0.9, 0.8])
    m = match_detections(pred, gt, threshold=0.3, order="score")
    # the first (higher score) prediction takes the better-overlapping gt 1, the second gets gt 0
    assert m.pred_to_gt.tolist() == [1, 0]


def test_matching_is_per_frame_and_per_class(ev):
    boxes_df = ev.boxes_df
    gt = boxes_df([0, 1], [0, 0], [0, 0], [10, 10], [10, 10], cls=[0, 1])
    pred = boxes_df([1, 1], [0, 0], [0, 0], [10, 10], [10, 10], cls=[0, 1], score=1.0)
    m = match_detections(pred, gt)
    assert m.pred_to_gt.tolist() == [-1, 1]
    m = match_detections(pred, gt, by_class=False)
    assert sorted(m.pred_to_gt.tolist()) == [-1, 1]


def test_distance_matching_uses_centres_and_cutoff(ev):
    boxes_df = ev.boxes_df
    gt = pd.DataFrame({"sample": [0, 0], "x": [10.0, 30.0], "y": [10.0, 10.0]})
    pred = pd.DataFrame({"sample": [0, 0], "x": [12.0, 36.0], "y": [10.0, 10.0], "score": [1.0, 1.0]})
    m = match_detections(pred, gt, metric="distance", threshold=5.0)
    assert m.pred_to_gt.tolist() == [0, -1]
    assert m.value[0] == pytest.approx(2.0)
    # boxes without x, y: their centres are used
    gb = boxes_df([0], [8], [8], [12], [12])
    pb = boxes_df([0], [9], [8], [13], [12], score=1.0)
    assert match_detections(pb, gb, metric="distance", threshold=1.5).tp == 1
    assert match_detections(pb, gb, metric="distance", threshold=0.5).tp == 0


def test_iou_cutoff_is_inclusive(ev):
    boxes_df = ev.boxes_df
    gt = boxes_df([0], [0], [0], [10], [10])
    pred = boxes_df([0], [5], [0], [15], [10], score=1.0)  # IoU exactly 1/3
    assert match_detections(pred, gt, threshold=1 / 3).tp == 1
    assert match_detections(pred, gt, threshold=0.34).tp == 0


def test_candidate_pairs_empty_inputs(ev):
    boxes_df = ev.boxes_df
    gt = boxes_df([0], [0], [0], [1], [1])
    p, g, v = candidate_pairs(gt.iloc[:0], gt)
    assert len(p) == len(g) == len(v) == 0


@pytest.mark.parametrize("bad, message", [
    (dict(x1=[-1.0]), "negative size"),
    (dict(x0=[np.nan]), "NaN"),
    (dict(score=[np.nan]), "NaN"),
    (dict(sample=[0.5]), "integers"),
])
def test_check_detections_rejects_bad_rows(bad, message, ev):
    boxes_df = ev.boxes_df
    df = boxes_df([0], [0], [0], [1], [1], score=0.5).assign(**bad)
    with pytest.raises(DataError, match=message):
        check_detections(df, "predictions", boxes=True)


def test_bad_parameters(ev):
    boxes_df = ev.boxes_df
    gt = boxes_df([0], [0], [0], [1], [1])
    with pytest.raises(ParameterError):
        match_detections(gt, gt, threshold=0.0)
    with pytest.raises(ParameterError):
        match_detections(gt, gt, metric="distance", threshold=-1)
    with pytest.raises(ParameterError):
        match_detections(gt, gt, order="random")
