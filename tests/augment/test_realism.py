import numpy as np
import pytest
from scipy import ndimage

from simgen.augment import Pipeline
from simgen.augment.realism import ImageSetStats, radial_psd, realism_distance
from simgen.errors import DataError


def _textures(seed, n=4, size=64, blur=0.0, skew=False):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.standard_normal((size, size))
        if blur:
            x = ndimage.gaussian_filter(x, blur, mode="wrap")
        if skew:
            x = np.exp(x)
        out.append(((x - x.min()) / (x.max() - x.min())).astype(np.float32))
    return out


def test_identical_sets_have_zero_distance():
    a = _textures(0)
    d = realism_distance(a, a)
    assert d.psd == pytest.approx(0.0, abs=1e-12) and d.histogram == pytest.approx(0.0, abs=1e-12)
    assert d.n_a == d.n_b == 4


def test_distances_are_symmetric_and_see_the_right_things():
    white, blurred = _textures(0), _textures(1, blur=2.0)
    white2 = _textures(2)
    d_ab, d_ba = realism_distance(white, blurred), realism_distance(blurred, white)
    assert d_ab.psd == pytest.approx(d_ba.psd) and d_ab.histogram == pytest.approx(d_ba.histogram)
    assert realism_distance(white, white2).psd < 0.1 < d_ab.psd  # same process vs blurred
    skewed = _textures(3, skew=True)
    assert realism_distance(white, skewed).histogram > 5 * realism_distance(white, white2).histogram


def test_augmentation_moves_a_set_towards_its_target():
    """Blurring sharp images brings their spectrum closer to blurred 'real' images."""
    sharp, target = _textures(4, n=3), _textures(5, n=3, blur=1.5)
    p = Pipeline("GB@1.5")
    rng = np.random.default_rng(0)
    augmented = [p(x, rng)[0] for x in sharp]
    assert realism_distance(augmented, target).psd < 0.5 * realism_distance(sharp, target).psd


def test_mixed_sizes_and_stats_accumulate():
    a = _textures(0, n=2, size=64) + _textures(1, n=1, size=48)
    stats = ImageSetStats().extend(a)
    assert stats.n == 3 and np.isfinite(stats.psd[1:]).all()  # bin 0 < 1/48 px^-1 is empty and stats.density.sum() == pytest.approx(1.0)
    assert realism_distance(stats, a).psd == pytest.approx(0.0, abs=1e-12)
    psd = radial_psd(a[0])
    assert psd.shape == (48,) and (psd[np.isfinite(psd)] >= 0).all()
    with pytest.raises(DataError):
        realism_distance([], a)
    with pytest.raises(DataError):
        radial_psd(np.zeros((4, 4)))


def test_psd_level_does_not_depend_on_image_size():
    """The same texture cropped to 64 px and 256 px has the same spectrum (once differed by 1/pixels)."""
    from simgen.augment.realism import radial_psd

    rng = np.random.default_rng(0)
    big = rng.normal(size=(256, 256))
    small = big[:64, :64]
    a, b = radial_psd(big, n_bins=8), radial_psd(small, n_bins=8)
    np.testing.assert_allclose(np.log10(a[2:]), np.log10(b[2:]), atol=0.15)
