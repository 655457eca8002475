"""Contrast normalisation: the fast tail percentiles equal numpy's, and the output stays float32."""

import numpy as np
import pytest

from simgen.datasets.normalize import normalize_image, tail_percentiles

RNG = np.random.default_rng(7)
IMAGES = {
    "uniform float": RNG.random((512, 512), dtype=np.float32),
    "8-bit levels (ties)": (RNG.integers(0, 256, (512, 512)) / 255).astype(np.float32),
    "flat": np.zeros((300, 300), np.float32),
    "four levels uint8": RNG.integers(0, 4, (700, 500)).astype(np.uint8),
    "normal, not square": RNG.normal(size=(1120, 710)).astype(np.float32),
    "mostly saturated": np.concatenate([np.zeros(100_000), RNG.random(5000)]).astype(np.float32),
    "uint16": RNG.integers(0, 65535, (256, 256)).astype(np.uint16),
    "small": RNG.random((20, 30)),
}


@pytest.mark.parametrize("name", list(IMAGES))
@pytest.mark.parametrize(("lo", "hi"), [(0.5, 99.5), (0.0, 100.0), (1.0, 99.0), (5.0, 95.0), (0.3, 99.9)])
def test_tail_percentiles_equal_numpy(name, lo, hi):
    image = IMAGES[name]
    assert tail_percentiles(image, lo, hi) == tuple(float(v) for v in np.percentile(image, [lo, hi]))


def test_tail_percentiles_nan_and_central_quantiles_follow_numpy():
    image = IMAGES["uniform float"].copy()
    image[3, 3] = np.nan
    assert all(np.isnan(tail_percentiles(image, 0.5, 99.5)))
    other = IMAGES["normal, not square"]
    assert tail_percentiles(other, 25.0, 75.0) == tuple(float(v) for v in np.percentile(other, [25, 75]))


def test_normalize_maps_percentiles_to_the_unit_range_in_float32():
    image = IMAGES["normal, not square"]
    out = normalize_image(image)
    a, b = np.percentile(image, [0.5, 99.5])
    expected = np.clip((image.astype(np.float64) - a) / (b - a), 0, 1)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert np.abs(out - expected).max() < 1e-6
    assert np.mean(out == 0.0) == pytest.approx(0.005, abs=1e-4) and np.mean(out == 1.0) == pytest.approx(0.005, abs=1e-4)
    assert not np.shares_memory(out, image)
    assert np.all(normalize_image(IMAGES["flat"]) == 0.5)
