"""Dark-blob census: counts what is there, by depth and size, per Mpx; tells a cluttered background apart."""

import numpy as np
import pytest

from simgen.errors import ParameterError
from simgen.evaluate.blob_census import DEPTH_EDGES, blob_census, census_distance


def _discs(n_deep, n_faint, *, size=256, seed=0, radius=5.0, noise=0.01):
    """A flat grey image with ``n_deep`` dark discs (depth 0.5) and ``n_faint`` faint ones (depth 0.12)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    img = np.full((size, size), 0.6) + noise * rng.standard_normal((size, size))
    g = 24
    centres = [(y, x) for y in range(g, size - g + 1, 2 * g) for x in range(g, size - g + 1, 2 * g)]
    assert n_deep + n_faint <= len(centres)
    for k, (cy, cx) in enumerate(centres[: n_deep + n_faint]):
        depth = 0.5 if k < n_deep else 0.12
        img -= depth * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * radius**2))
    return img.astype(np.float32)


def test_census_counts_deep_and_faint_blobs_per_mpx():
    images = [_discs(6, 6, seed=s) for s in range(3)]
    c = blob_census(images)
    mpx = 3 * 256 * 256 / 1e6
    assert c.n_images == 3 and c.megapixels == pytest.approx(mpx)
    assert len(c.per_mpx) == len(DEPTH_EDGES) - 1
    # every disc is found once (nested detections are suppressed by find_dark_blobs' ring/disc depth)
    total = sum(c.per_mpx) * mpx
    assert 30 <= total <= 45, c.per_mpx
    # the deep discs land at depth >= 0.3, the faint ones below
    assert c.deep_per_mpx * mpx == pytest.approx(18, abs=2)
    # the LoG diameter of a Gaussian blob of sigma 5 px: 2*sqrt(2)*5 = 14 px
    assert 10 <= c.deep_diameter_px[1] <= 18
    none_deep = blob_census(images, deep=5.0)  # no blob is that deep
    assert none_deep.deep_per_mpx == 0 and none_deep.deep_diameter_px is None


def test_census_distance_tells_a_cluttered_set_from_a_clean_one():
    clean = blob_census([_discs(8, 0, seed=s) for s in range(2)])
    clean2 = blob_census([_discs(8, 0, seed=s) for s in range(2, 4)])
    cluttered = blob_census([_discs(2, 14, seed=s) for s in range(2)])
    assert census_distance(clean, clean2) < 0.1
    assert census_distance(clean, cluttered) > 0.3
    assert census_distance(clean, cluttered) == pytest.approx(census_distance(cluttered, clean))
    d = clean.to_dict()
    assert d["depth_edges"][-1] is None and len(d["per_mpx"]) == len(DEPTH_EDGES) - 1


def test_census_bad_settings():
    img = [_discs(1, 0)]
    with pytest.raises(ParameterError, match="depth_edges"):
        blob_census(img, depth_edges=(0.3, 0.1))
    with pytest.raises(ParameterError, match="diameter_px"):
        blob_census(img, diameter_px=(10, 5))
    with pytest.raises(ParameterError, match="at least one image"):
        blob_census([])
    with pytest.raises(ParameterError, match="different depth bins"):
        census_distance(blob_census(img), blob_census(img, depth_edges=(0.1, 0.2, 1.0)))
