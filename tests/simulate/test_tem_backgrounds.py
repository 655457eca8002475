"""Rendered defects on real backgrounds: blob clearing and the compositing sampler."""

import numpy as np
import pytest

from simgen.errors import ParameterError
from simgen.simulate.tem import TemConfig, TemSampler
from simgen.simulate.tem_backgrounds import BackgroundTemSampler, clear_blobs, fill_discs
from simgen.simulate.tem_labels import label_noise


def _blobby(seed=0, shape=(192, 224), n=12, radius=5.0, depth=0.35, noise=0.03):
    """Grey noisy image with ``n`` dark soft-edged discs at known places (a stand-in micrograph:
    loops imaged as dark discs blurred by the optics)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    dark = np.zeros(shape, np.float32)
    xy = np.stack([rng.uniform(20, w - 20, n), rng.uniform(20, h - 20, n)], 1)
    for x, y in xy:
        dark[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = depth
    img = 0.6 * (1 - ndi.gaussian_filter(dark, 1.5)) + rng.normal(0, noise, shape)
    return np.clip(img, 0, 1).astype(np.float32), xy


def _boxes(xy, half=7.0):
    return np.column_stack([xy[:, 0] - half, xy[:, 1] - half, xy[:, 0] + half, xy[:, 1] + half])


def test_clear_blobs_removes_dark_blobs_and_keeps_the_grain():
    img, xy = _blobby()
    before = label_noise(img, _boxes(xy), size_range=(5, 45))
    assert before["n_invisible"] == 0  # the blobs are plainly visible
    cleared, n = clear_blobs(img, (5, 45))
    assert n >= len(xy)
    after = label_noise(cleared, _boxes(xy), size_range=(5, 45))
    assert after["invisible_fraction"] >= 0.9, after["snr"]  # (almost) every blob is gone
    # the level of a cleared place is that of its surroundings, not brighter or darker
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    inside = np.zeros(img.shape, bool)
    for x, y in xy:
        inside |= (xx - x) ** 2 + (yy - y) ** 2 <= 25
    assert abs(float(cleared[inside].mean()) - float(img[~inside].mean())) < 0.03
    # the grain is kept: pixel-scale noise inside the filled holes as outside
    hp = cleared - np.roll(cleared, 1, axis=1)
    assert 0.6 < hp[inside].std() / hp[~inside].std() < 1.5
    # far from the blobs only 3-sigma noise maxima are painted over: most pixels untouched, same spread
    far = np.ones(img.shape, bool)
    for x, y in xy:
        far &= (xx - x) ** 2 + (yy - y) ** 2 > 30**2
    assert np.mean(cleared[far] == img[far]) > 0.5
    assert cleared[far].std() == pytest.approx(img[far].std(), rel=0.1)


def test_clear_blobs_keeps_the_statistics_of_a_blob_free_image_and_checks_input():
    """On white noise only 3-sigma maxima are painted over (about 1.5 per 1000 px), with noise of
    the same level and spread: the image's statistics do not change."""
    rng = np.random.default_rng(1)
    flat = np.clip(0.5 + rng.normal(0, 0.02, (128, 128)), 0, 1).astype(np.float32)
    cleared, n = clear_blobs(flat)
    assert n < 0.003 * flat.size and np.mean(cleared == flat) > 0.5
    assert cleared.mean() == pytest.approx(flat.mean(), abs=0.002)
    assert cleared.std() == pytest.approx(flat.std(), rel=0.1)
    with pytest.raises(ParameterError, match="2-D"):
        clear_blobs(np.zeros((8, 8, 3)))
    with pytest.raises(ParameterError, match="diameter"):
        clear_blobs(flat, (10, 5))


def test_fill_discs_paints_only_the_discs():
    img = np.full((64, 64), 0.5, np.float32)
    img[28:36, 28:36] = 0.1
    out = fill_discs(img, [32.0], [32.0], [7.0])
    assert abs(float(out[30:34, 30:34].mean()) - 0.5) < 0.02 and out[0, 0] == img[0, 0]
    assert np.array_equal(fill_discs(img, [], [], []), img)


def _sampler(fraction, backgrounds=None):
    cfg = TemConfig(size=96, dose=(200.0, 200.0))
    bgs = backgrounds if backgrounds is not None else [np.full((120, 150), 0.7, np.float32),
                                                       np.full((60, 70), 0.4, np.float32)]
    return BackgroundTemSampler(TemSampler(cfg, seed=5), bgs, fraction, names=["a", "b"])


def test_background_sampler_keeps_the_render_labels_and_puts_defects_on_the_background():
    base = TemSampler(TemConfig(size=96, dose=(200.0, 200.0)), seed=5)
    on_bg = _sampler(1.0)
    plain = _sampler(0.0)
    seen = set()
    for i in range(6):
        ref, a, b = base(i), on_bg(i), plain(i)
        # labels are the render's, whatever the background
        assert np.array_equal(a["boxes"], ref["boxes"]) and np.array_equal(a["mask"], ref["mask"])
        assert np.array_equal(b["image"], ref["image"]) and b["provenance"]["background"] is None
        name = a["provenance"]["background"]
        seen.add(name)
        level = 0.7 if name == "a" else 0.4
        img = a["image"]
        assert img.dtype == np.float32 and img.shape == ref["image"].shape
        free = a["mask"] == 0
        # away from the defects the image is the (flat) background; on them it is darker
        assert np.median(img[free]) == pytest.approx(level, abs=1e-3)
        if (~free).any():
            assert img[~free].mean() < level - 0.02
        assert np.array_equal(on_bg(i)["image"], img)  # deterministic per index
    assert seen == {"a", "b"}  # a background smaller than the sample is reflect-padded, not refused


def test_background_fraction_and_validation():
    s = _sampler(0.5)
    picked = [s(i)["provenance"]["background"] is not None for i in range(40)]
    assert 10 <= sum(picked) <= 30
    assert s.describe()["backgrounds"] == {"fraction": 0.5, "images": ["a", "b"]}
    assert s.with_overrides({}).fraction == 0.5 and s.class_names == s.sampler.class_names
    with pytest.raises(ParameterError, match="fraction"):
        _sampler(1.5)
    with pytest.raises(ParameterError, match="no background"):
        BackgroundTemSampler(TemSampler(TemConfig(size=64)), [], 0.5)
    with pytest.raises(ParameterError, match="2-D"):
        BackgroundTemSampler(TemSampler(TemConfig(size=64)), [np.zeros((4, 4))], 0.5)
