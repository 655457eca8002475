"""Geometry: ellipse fit, watershed size from a box crop, density, MSD and diffusivity."""

import math

import numpy as np
import pandas as pd
import pytest
from skimage.draw import ellipse

from simgen.errors import ParameterError
from simgen.evaluate.geometry import (
    VISIBILITY,
    areal_density,
    crop_box,
    diffusivity,
    ellipse_from_mask,
    measure_box,
    measure_sizes,
    msd,
    size_stats_per_frame,
)


def _dark_ellipse_image(shape, centre, axes, angle=0.0, noise=0.0, rng=None):
    img = np.full(shape, 0.8, np.float32)
    rr, cc = ellipse(centre[0], centre[1], axes[0], axes[1], shape=shape, rotation=angle)
    img[rr, cc] = 0.2
    if noise:
        img = img + rng.normal(0, noise, shape).astype(np.float32)
    return img


def test_ellipse_from_mask_recovers_axes_and_angle():
    m = np.zeros((80, 80), bool)
    # semi-axes 6 (rows) and 15 (cols), rotated: skimage's rotation turns the row axis
    m[ellipse(40, 40, 6, 15, rotation=math.radians(30))] = True
    e = ellipse_from_mask(m)
    assert e["major"] == pytest.approx(30, rel=0.05)
    assert e["minor"] == pytest.approx(12, rel=0.08)
    assert e["cx"] == pytest.approx(40.5, abs=0.2) and e["cy"] == pytest.approx(40.5, abs=0.2)
    # the major (column) axis is tilted by 30 degrees; in x-right / y-down image axes
    # skimage's counter-clockwise rotation shows up as a negative angle
    assert e["angle"] == pytest.approx(-math.radians(30), abs=0.05)
    diag = np.zeros((10, 10), bool)
    diag[np.arange(2, 8), np.arange(2, 8)] = True  # x and y grow together: +45 degrees
    assert ellipse_from_mask(diag)["angle"] == pytest.approx(math.pi / 4)


def test_crop_box_clips_to_the_image():
    img = np.arange(100).reshape(10, 10)
    crop, origin = crop_box(img, (-3, 7.5, 4.2, 12), pad=1)
    assert origin == (0, 6) and crop.shape == (4, 6)


def test_measure_box_on_a_noisy_dark_ellipse(rng):
    img = _dark_ellipse_image((64, 64), (30, 34), (5, 9), noise=0.05, rng=rng)
    box = (34 - 11, 30 - 7, 34 + 11, 30 + 7)
    e = measure_box(img, box)
    assert e["size"] == pytest.approx(18, rel=0.1)
    assert e["minor"] == pytest.approx(10, rel=0.15)
    assert e["cx"] == pytest.approx(34.5, abs=0.5) and e["cy"] == pytest.approx(30.5, abs=0.5)


def test_watershed_separates_touching_blobs_and_keeps_the_central_one():
    img = np.full((60, 60), 0.9, np.float32)
    rr, cc = ellipse(30, 24, 7, 7, shape=img.shape)
    img[rr, cc] = 0.1
    rr, cc = ellipse(30, 37, 7, 7, shape=img.shape)  # overlapping neighbour on the right
    img[rr, cc] = 0.1
    e = measure_box(img, (24 - 9, 30 - 9, 24 + 9, 30 + 9), pad=6)
    # without the watershed split the region would be ~27 px long
    assert e["size"] < 18
    assert e["cx"] < 28


def test_measure_box_bright_polarity_and_blank_crop():
    img = 1.0 - _dark_ellipse_image((40, 40), (20, 20), (4, 4))
    assert measure_box(img, (14, 14, 26, 26), polarity="bright")["size"] == pytest.approx(8, rel=0.15)
    assert np.isnan(measure_box(np.ones((40, 40)), (5, 5, 15, 15))["size"])
    with pytest.raises(ParameterError):
        measure_box(img, (14, 14, 26, 26), polarity="grey")


def test_measure_sizes_and_per_frame_stats():
    imgs = {0: _dark_ellipse_image((50, 50), (25, 25), (4, 4)), 1: _dark_ellipse_image((50, 50), (25, 25), (8, 8))}
    boxes = pd.DataFrame({"sample": [0, 1, 1], "x0": [19, 15, 0], "y0": [19, 15, 0], "x1": [31, 35, 6],
                          "y1": [31, 35, 6], "class": 0})
    sizes = measure_sizes(imgs.__getitem__, boxes)
    assert sizes["size"].iloc[0] == pytest.approx(8, rel=0.15)
    assert sizes["size"].iloc[1] == pytest.approx(16, rel=0.1)
    stats = size_stats_per_frame(sizes, n_frames=3)
    assert stats["n"].tolist()[2] == 0 and np.isnan(stats["median"].iloc[2])
    assert stats["median"].iloc[0] == pytest.approx(sizes["size"].iloc[0])


def test_areal_density_with_visibility_factor():
    assert VISIBILITY == 7 / 4
    assert areal_density(100, 1000.0 * 1000.0) == pytest.approx(100 * 7 / 4 / 1e6)
    assert areal_density(100, 512 * 512, visibility=1.0, pixel_size=0.5) == pytest.approx(100 / (512 * 512 * 0.25))
    np.testing.assert_allclose(areal_density(np.array([1, 2]), 4.0, visibility=2.0), [0.5, 1.0])
    with pytest.raises(ParameterError):
        areal_density(1, 10, visibility=0)


def test_msd_and_diffusivity_of_a_random_walk(rng):
    n_tracks, n_steps, sigma = 200, 60, 0.8
    steps = rng.normal(0, sigma, (n_tracks, n_steps, 2))
    pos = np.cumsum(steps, axis=1)
    t = np.tile(np.arange(n_steps), n_tracks)
    tid = np.repeat(np.arange(n_tracks), n_steps)
    tracks = pd.DataFrame({"sample": t, "track_id": tid, "x": pos[..., 0].ravel(), "y": pos[..., 1].ravel()})
    m = msd(tracks, 5)
    assert m["n_pairs"].tolist() == [n_tracks * (n_steps - k) for k in range(1, 6)]
    np.testing.assert_allclose(m["msd"], 2 * sigma**2 * m["lag"], rtol=0.05)
    # 2-D walk with per-axis step variance s^2: Deff = 2 s^2 / 4
    assert diffusivity(tracks) == pytest.approx(sigma**2 / 2, rel=0.05)
    assert diffusivity(tracks, 3, pixel_size=2.0, frame_interval=0.5) == pytest.approx(sigma**2 / 2 * 4 / 0.5, rel=0.06)
    # a gap is not bridged: drop frame 1 of every track
    gapped = tracks[tracks["sample"] != 1]
    assert msd(gapped, 1)["n_pairs"].iloc[0] == n_tracks * (n_steps - 3)
