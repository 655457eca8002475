"""Sizes inside detection boxes (Otsu + 3x3 opening + watershed + regionprops ellipse) against known ellipses,
per-frame size statistics, and ``simgen evaluate --sizes`` measuring with them."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from skimage.draw import ellipse

from simgen.datasets.h5io import DatasetWriter
from simgen.errors import DataError, ParameterError
from simgen.evaluate.report import evaluate
from simgen.evaluate.sizes import (
    SIZE_COLUMNS,
    crop_box,
    ellipse_from_mask,
    measure_box,
    measure_sizes,
    segment_defects,
    size_stats_per_frame,
)

# (semi-axis along rows, semi-axis along columns, rotation in degrees)
ELLIPSES = [(4, 9, 0), (6, 6, 0), (5, 12, 30), (3, 7, -50), (8, 14, 75), (2.5, 5, 10)]


def _image(shape, defects, rng, noise=0.04, dark=True):
    img = np.full(shape, 0.75, np.float32)
    for (r, c), (a, b, deg) in defects:
        rr, cc = ellipse(r, c, a, b, shape=shape, rotation=math.radians(deg))
        img[rr, cc] = 0.25
    img += rng.normal(0, noise, shape).astype(np.float32)
    return img if dark else 1.0 - img


def _box(r, c, a, b, margin=2):
    half = max(a, b) + margin
    return (c - half, r - half, c + half, r + half)


@pytest.mark.parametrize("a,b,deg", ELLIPSES)
def test_major_and_minor_axes_within_ten_percent(a, b, deg):
    rng = np.random.default_rng(int(10 * a + b))
    img = _image((64, 64), [((32, 31), (a, b, deg))], rng)
    e = measure_box(img, _box(32, 31, a, b))
    assert e["size"] == e["major"]
    assert abs(e["major"] - 2 * max(a, b)) / (2 * max(a, b)) < 0.10
    assert abs(e["minor"] - 2 * min(a, b)) / (2 * min(a, b)) < 0.15
    assert e["cx"] == pytest.approx(31.5, abs=0.5) and e["cy"] == pytest.approx(32.5, abs=0.5)


def test_random_noisy_ellipses_are_sized_without_splitting():
    """Elongated, rotated defects (digitised distance ridges with several equal maxima) stay one region."""
    rng = np.random.default_rng(7)
    errors = []
    for _ in range(40):
        b = rng.uniform(5, 15)
        a = max(2.5, b * rng.uniform(0.4, 1.0))
        img = _image((80, 80), [((40, 40), (a, b, rng.uniform(-90, 90)))], rng, noise=0.05)
        errors.append(measure_box(img, _box(40, 40, a, b))["major"] / (2 * b) - 1)
    errors = np.abs(errors)
    assert np.mean(errors) < 0.04 and np.mean(errors < 0.10) >= 0.9 and errors.max() < 0.25


def test_ellipse_from_mask_recovers_axes_and_angle():
    m = np.zeros((80, 80), bool)
    # semi-axes 6 (rows) and 15 (cols), rotated: skimage's rotation turns the row axis
    m[ellipse(40, 40, 6, 15, rotation=math.radians(30))] = True
    e = ellipse_from_mask(m)
    assert e["major"] == pytest.approx(30, rel=0.05) and e["size"] == e["major"]
    assert e["minor"] == pytest.approx(12, rel=0.08)
    assert e["cx"] == pytest.approx(40.5, abs=0.2) and e["cy"] == pytest.approx(40.5, abs=0.2)
    assert e["area"] == m.sum()
    # the major (column) axis is tilted by 30 degrees; in x-right / y-down image axes
    # skimage's counter-clockwise rotation shows up as a negative angle
    assert e["angle"] == pytest.approx(-math.radians(30), abs=0.05)
    diag = np.zeros((10, 10), bool)
    diag[np.arange(2, 8), np.arange(2, 8)] = True  # x and y grow together: +45 degrees
    assert ellipse_from_mask(diag)["angle"] == pytest.approx(math.pi / 4)
    empty = ellipse_from_mask(np.zeros((5, 5), bool))
    assert empty["area"] == 0 and np.isnan(empty["major"])


def test_crop_box_clips_to_the_image():
    img = np.arange(100).reshape(10, 10)
    crop, origin = crop_box(img, (-3, 7.5, 4.2, 12), pad=1)
    assert origin == (0, 6) and crop.shape == (4, 6)
    assert crop_box(img, (20, 20, 25, 25))[0].size == 0  # outside the image


def test_angle_follows_the_simgen_convention():
    """Radians from +x towards +y (y down): skimage's counter-clockwise rotation by deg is an angle of -deg."""
    rng = np.random.default_rng(1)
    for deg in (0, 30, -50, 75):
        img = _image((64, 64), [((32, 32), (4, 12, deg))], rng, noise=0.0)
        expected = -math.radians(deg)
        got = measure_box(img, (16, 16, 48, 48))["angle"]
        assert -math.pi / 2 < got <= math.pi / 2
        diff = (got - expected + math.pi / 2) % math.pi - math.pi / 2
        assert abs(diff) < 0.05, (deg, got, expected)


def test_opening_removes_speckle_and_watershed_splits_touching_defects():
    crop = np.full((30, 40), 0.8)
    rr, cc = ellipse(15, 13, 6, 6)
    crop[rr, cc] = 0.2
    rr, cc = ellipse(15, 24, 6, 6)  # touching the first
    crop[rr, cc] = 0.2
    crop[2, 35] = crop[27, 3] = 0.1  # single dark pixels
    crop += np.random.default_rng(0).normal(0, 0.02, crop.shape)
    labels = segment_defects(crop)
    assert labels.max() == 2  # two defects, no speckle
    assert labels[2, 35] == 0 and labels[27, 3] == 0
    assert segment_defects(crop, opening=0).max() >= 3  # without the opening the speckle stays
    e = measure_box(crop, (13 - 8, 15 - 8, 13 + 8, 15 + 8), pad=6)
    assert e["size"] < 15  # one defect (12 px), not the pair (23 px)


def test_watershed_keeps_the_defect_under_the_box_centre():
    img = np.full((60, 60), 0.9, np.float32)
    img[ellipse(30, 24, 7, 7, shape=img.shape)] = 0.1
    img[ellipse(30, 37, 7, 7, shape=img.shape)] = 0.1  # overlapping neighbour on the right
    e = measure_box(img, (24 - 9, 30 - 9, 24 + 9, 30 + 9), pad=6)
    assert e["size"] == pytest.approx(14, rel=0.1)  # the pair would be ~27 px long
    assert e["cx"] == pytest.approx(24.5, abs=1.0) and e["cy"] == pytest.approx(30.5, abs=0.5)


def test_thin_defect_survives_the_opening_and_bright_polarity():
    crop = np.full((20, 20), 0.8)
    crop[10, 4:16] = 0.2  # one pixel wide: the 3x3 opening would erase it
    e = measure_box(crop, (3, 8, 17, 12))
    assert e["major"] == pytest.approx(4 * np.std(np.arange(12)))  # a segment's moment "ellipse"
    rng = np.random.default_rng(3)
    img = _image((48, 48), [((24, 24), (5, 9, 0))], rng, dark=False)
    assert measure_box(img, _box(24, 24, 5, 9), polarity="bright")["size"] == pytest.approx(18, rel=0.1)
    assert np.isnan(measure_box(np.ones((20, 20)), (2, 2, 12, 12))["size"])
    with pytest.raises(ParameterError):
        segment_defects(crop, polarity="grey")
    with pytest.raises(ParameterError):
        segment_defects(crop, opening=-1)


def test_measure_sizes_reads_each_frame_once_and_keeps_rows():
    rng = np.random.default_rng(5)
    frames = {0: _image((64, 64), [((20, 20), (4, 9, 0)), ((44, 44), (6, 6, 0))], rng),
              1: _image((64, 64), [((30, 30), (3, 7, 20))], rng)}
    calls = []

    def image_of(k):
        calls.append(k)
        return frames[k]

    boxes = pd.DataFrame({"sample": [1, 0, 0], "x0": [21.0, 9.0, 36.0], "y0": [21.0, 14.0, 36.0],
                          "x1": [39.0, 31.0, 52.0], "y1": [39.0, 26.0, 52.0], "score": [0.9, 0.8, 0.7]})
    out = measure_sizes(image_of, boxes)
    assert sorted(calls) == [0, 1] and list(out.columns) == [*boxes.columns, *SIZE_COLUMNS]
    np.testing.assert_allclose(out["size"], [14, 18, 12], rtol=0.1)
    with pytest.raises(DataError):
        measure_sizes(image_of, boxes.drop(columns="x0"))


def test_size_stats_per_frame():
    sizes = pd.DataFrame({"sample": [0, 0, 0, 0, 1, 2], "size": [2.0, 4.0, 6.0, 8.0, np.nan, 5.0]})
    stats = size_stats_per_frame(sizes, n_frames=4)
    assert stats["sample"].tolist() == [0, 1, 2, 3] and stats["n"].tolist() == [4, 0, 1, 0]
    assert stats.loc[0, ["median", "q1", "q3"]].tolist() == [5.0, 3.5, 6.5]  # numpy's linear quartiles
    assert np.isnan(stats["median"].iloc[1]) and np.isnan(stats["median"].iloc[3]) and stats["q3"].iloc[2] == 5.0
    assert len(size_stats_per_frame(sizes)) == 3  # up to the last frame with a row
    with pytest.raises(DataError, match="size"):
        size_stats_per_frame(sizes.drop(columns="size"))


def test_evaluate_sizes_measures_elongated_defects_whole(tmp_path):
    """``evaluate(sizes=True)`` measures with :mod:`simgen.evaluate.sizes`: thin, rotated loops are one region
    (a peak_local_max watershed split them into pieces a third to a half of their length)."""
    rng = np.random.default_rng(2)
    defects = [((20, 20), (3, 10, 0)), ((55, 50), (4, 14, 60)), ((22, 58), (3, 12, 30))]
    with DatasetWriter(tmp_path / "tem.h5", kind="tem", class_names=["loop"]) as w:
        for _ in range(2):
            b = np.array([_box(r, c, a, bb) for (r, c), (a, bb, _) in defects])
            w.append(_image((80, 80), defects, rng, noise=0.03),
                     boxes={"x0": b[:, 0], "y0": b[:, 1], "x1": b[:, 2], "y1": b[:, 3], "class": [0, 0, 0]})
    m = evaluate(tmp_path / "tem.h5", tmp_path / "tem.h5", tmp_path / "r", sizes=True, pixel_size=0.5, plots=False)
    per_frame = pd.read_csv(tmp_path / "r" / "per_frame.csv")
    true = 0.5 * np.array([20, 28, 24])  # major axes in units
    np.testing.assert_allclose(per_frame["size_median_gt"], np.median(true), rtol=0.1)
    np.testing.assert_allclose(per_frame["size_q1_pred"], np.quantile(true, 0.25), rtol=0.1)
    np.testing.assert_allclose(per_frame["size_q3_pred"], np.quantile(true, 0.75), rtol=0.1)
    assert m["sizes"]["measured_gt"] == m["sizes"]["measured_pred"] == 6 and m["sizes"]["unit"] == "unit"
    assert m["sizes"]["median_gt"] == pytest.approx(np.median(true), rel=0.1)
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["sizes"] == m["sizes"]
