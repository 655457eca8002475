"""Flip test-time augmentation: views map back to the image, fusion averages over views, the
augmented detector is flip-equivariant, and training picks it on validation data only if it helps."""

import numpy as np
import pandas as pd
import pytest

from simgen.errors import ParameterError
from simgen.train.yolo.tta import FLIPS, flip_views, fuse_views


def _box(x0, y0, x1, y1, score, cls=0):
    return {"x0": x0, "y0": y0, "x1": x1, "y1": y1, "class": np.int16(cls), "score": score}


def _darkest_box(img):
    """A toy detector: a 6 px box around the darkest pixel, and one fixed box in view coordinates."""
    y, x = np.unravel_index(np.argmin(img), img.shape)
    cy, cx = y + 0.5, x + 0.5  # the pixel's centre: boxes are in continuous pixel coordinates
    return pd.DataFrame([_box(cx - 3, cy - 3, cx + 3, cy + 3, 0.9), _box(0.0, 0.0, 4.0, 4.0, 0.4)])


def test_flip_views_map_boxes_back_to_the_image():
    img = np.ones((40, 60), np.float32)
    img[10, 45] = 0.0
    views = flip_views(_darkest_box, img)
    assert len(views) == len(FLIPS) == 4
    for v in views:  # the defect is found at the same place in every view
        np.testing.assert_allclose(v.iloc[0][["x0", "y0", "x1", "y1"]].to_numpy(float), [42.5, 7.5, 48.5, 13.5])
    # the view-fixed box lands in a different corner of the image in each view
    corners = {tuple(v.iloc[1][["x0", "y0"]]) for v in views}
    assert corners == {(0.0, 0.0), (56.0, 0.0), (0.0, 36.0), (56.0, 36.0)}


def test_fuse_views_averages_scores_over_views():
    img = np.ones((40, 60), np.float32)
    img[10, 45] = 0.0
    fused = fuse_views(flip_views(_darkest_box, img), img.shape)
    assert list(fused.columns) == ["x0", "y0", "x1", "y1", "class", "score"]
    top = fused.iloc[0]
    assert top["score"] == pytest.approx(0.9, abs=1e-5)  # seen in all four views
    np.testing.assert_allclose(top[["x0", "y0", "x1", "y1"]].to_numpy(float), [42.5, 7.5, 48.5, 13.5], atol=1e-3)
    # a box seen in one view of four keeps a quarter of its score
    assert len(fused) == 5 and np.allclose(fused["score"].iloc[1:], 0.1, atol=1e-5)
    assert fused["score"].is_monotonic_decreasing
    # classes fuse separately
    a = pd.DataFrame([_box(10, 10, 20, 20, 0.8, 0), _box(10, 10, 20, 20, 0.6, 1)])
    assert sorted(fuse_views([a, a], (40, 40))["class"].tolist()) == [0, 1]
    empty = fuse_views([a.iloc[:0]] * 4, (40, 40))
    assert len(empty) == 0 and list(empty.columns) == list(fused.columns)
    with pytest.raises(ParameterError):
        fuse_views([], (40, 40))
    with pytest.raises(ParameterError, match="iou"):
        fuse_views([a], (40, 40), iou=0.0)
