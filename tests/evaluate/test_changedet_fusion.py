"""Per-frame masks recovered from change maps (forward, backward, consecutive, ensemble) and the study's scores."""

import numpy as np
import pytest

from simgen.errors import DataError, ParameterError
from simgen.evaluate.changedet import (
    RECOVERY,
    binary_scores,
    mask_confusion,
    mask_from_change,
    multiclass_scores,
    recover_masks,
    recovery_pairs,
)
from simgen.simulate.filament import change_map


@pytest.fixture
def sequence():
    rng = np.random.default_rng(0)
    return rng.random((5, 12, 10)) < 0.4  # 5 frames of random masks


def oracle(masks):
    t = len(masks)
    return {(i, j): change_map(masks[i], masks[j]) for i in range(t) for j in range(i, t)}


def test_mask_of_either_frame_from_one_change_map(sequence):
    a, b = sequence[0], sequence[3]
    c = change_map(a, b)
    np.testing.assert_array_equal(mask_from_change(c, "first"), a)
    np.testing.assert_array_equal(mask_from_change(c, "second"), b)
    with pytest.raises(ParameterError):
        mask_from_change(c, "third")


@pytest.mark.parametrize("method", RECOVERY)
def test_true_change_maps_recover_every_frame(sequence, method):
    maps = oracle(sequence)
    np.testing.assert_array_equal(recover_masks(maps, 5, method), sequence)
    # a callable works the same
    np.testing.assert_array_equal(recover_masks(lambda i, j: maps[i, j], 5, method), sequence)


def test_pairs_read_by_each_method():
    assert recovery_pairs(4, ("forward",)) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert recovery_pairs(4, ("backward",)) == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert recovery_pairs(4, ("consecutive",)) == [(0, 1), (1, 2), (2, 3)]
    assert recovery_pairs(3, ("ensemble",)) == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    with pytest.raises(ParameterError):
        recovery_pairs(4, ("sideways",))
    with pytest.raises(ParameterError):
        recovery_pairs(0)


def test_ensemble_outvotes_one_wrong_pair(sequence):
    maps = oracle(sequence)
    maps[0, 4] = np.zeros_like(maps[0, 4])  # this pair says: frames 0 and 4 are empty
    fwd = recover_masks(maps, 5, "forward")
    assert not fwd[4].any() and sequence[4].any()  # forward reads frame 4 only from (0, 4)
    np.testing.assert_array_equal(recover_masks(maps, 5, "ensemble"), sequence)  # 1 of 5 votes
    with pytest.raises(DataError, match=r"\(1, 2\)"):
        recover_masks({k: v for k, v in maps.items() if k != (1, 2)}, 5, "consecutive")


def test_binary_and_multiclass_scores_by_hand():
    pred = np.array([[1, 1, 0, 0], [0, 0, 0, 0]])
    truth = np.array([[1, 0, 1, 0], [0, 0, 0, 0]])
    cm = mask_confusion(pred, truth)
    np.testing.assert_array_equal(cm, [[5, 1], [1, 1]])
    s = binary_scores(cm)
    # foreground: tp 1, fp 1, fn 1 -> F1 1/2, IoU 1/3; background: tp 5, fp 1, fn 1 -> F1 10/12, IoU 5/7
    assert s["f1_fg"] == pytest.approx(0.5) and s["iou"] == pytest.approx(1 / 3)
    assert s["f1_macro"] == pytest.approx((0.5 + 10 / 12) / 2)
    assert s["miou"] == pytest.approx((1 / 3 + 5 / 7) / 2)
    # an empty frame predicted empty: foreground undefined, macro-F1 is the background's
    empty = binary_scores(mask_confusion(np.zeros(4), np.zeros(4)))
    assert empty["f1_macro"] == 1.0 and np.isnan(empty["iou"])
    # 4 classes, class 2 absent from prediction and truth: left out of the means
    m = multiclass_scores([[2, 0, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0], [0, 0, 0, 2]])
    f1 = [1.0, 2 / 3, 0.8]
    assert np.isnan(m["f1_2"]) and m["f1_macro"] == pytest.approx(np.mean(f1))
    with pytest.raises(DataError):
        mask_confusion(np.zeros(3), np.zeros(4))
    with pytest.raises(ParameterError):
        binary_scores(np.eye(3))
