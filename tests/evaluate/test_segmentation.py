"""Dice / IoU and change-map confusion."""

import numpy as np
import pytest

from simgen.errors import DataError
from simgen.evaluate.segmentation import (
    CHANGE_CLASSES,
    change_map_confusion,
    confusion_matrix,
    dice,
    foreground,
    iou,
    segmentation_scores,
)


def test_dice_and_iou_of_two_squares():
    a = np.zeros((10, 10), int)
    b = np.zeros((10, 10), int)
    a[0:4, 0:4] = 1  # 16 px
    b[2:6, 0:4] = 1  # 16 px, overlap 8
    assert dice(a, b) == pytest.approx(2 * 8 / 32)
    assert iou(a, b) == pytest.approx(8 / 24)
    assert np.isnan(dice(np.zeros((3, 3)), np.zeros((3, 3))))


def test_dice_iou_relation_on_random_masks(rng):
    for _ in range(5):
        a = rng.random((20, 30)) < 0.3
        b = rng.random((20, 30)) < 0.4
        d, j = dice(a, b), iou(a, b)
        assert d == pytest.approx(2 * j / (1 + j))


def test_confusion_matrix_counts_every_pixel(rng):
    gt = rng.integers(0, 4, (16, 16))
    pred = rng.integers(0, 4, (16, 16))
    cm = confusion_matrix(pred, gt, 4)
    assert cm.sum() == 256
    for t in range(4):
        for p in range(4):
            assert cm[t, p] == np.sum((gt == t) & (pred == p))


def test_per_image_and_dataset_wide_scores_differ_as_documented():
    # image 0: big object perfectly found; image 1: small object missed
    g0 = np.zeros((10, 10), int)
    g0[:5] = 1
    g1 = np.zeros((10, 10), int)
    g1[0, 0] = 1
    res = segmentation_scores([g0, np.zeros_like(g1)], [g0, g1], 2, ["bg", "fg"])
    per_image = res["per_image"]
    fg = per_image[per_image["class"] == 1]["dice"].tolist()
    assert fg == [1.0, 0.0]
    assert res["mean_per_image"].loc[1, "dice"] == pytest.approx(0.5)
    assert res["dataset"].loc[1, "dice"] == pytest.approx(2 * 50 / (2 * 50 + 1))  # pooled pixels
    assert res["confusion"].sum() == 200


def test_foreground_of_instance_labels():
    np.testing.assert_array_equal(foreground([[0, 3], [7, 0]]), [[0, 1], [1, 0]])


def test_change_map_confusion_four_classes():
    gt = np.array([[0, 1], [2, 3]])
    pred = np.array([[0, 1], [3, 3]])
    cm = change_map_confusion(pred, gt)
    assert list(cm.index) == list(CHANGE_CLASSES) == list(cm.columns)
    assert cm.loc["disappearing", "overlapping"] == 1 and cm.loc["overlapping", "overlapping"] == 1
    assert int(cm.to_numpy().sum()) == 4
    norm = change_map_confusion([pred, pred], [gt, gt], normalize=True)
    np.testing.assert_allclose(norm.sum(axis=1), 1.0)


def test_bad_label_images():
    with pytest.raises(DataError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(DataError, match="outside"):
        confusion_matrix(np.full((2, 2), 5), np.zeros((2, 2)), 4)
    with pytest.raises(DataError):
        segmentation_scores([np.zeros((2, 2))], [], 2)
