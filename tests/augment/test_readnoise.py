import numpy as np
import pytest
import scipy.fft as sfft
from scipy import ndimage

from simgen.augment.readnoise import (
    NoiseProfile,
    extract_profile,
    periodic_component,
    spectrum_grid,
    synthesize,
    synthetic_profile,
)
from simgen.augment.transforms import ReadNoise
from simgen.errors import DataError, ParameterError


def _stripy(rng, n=256):
    """Smooth 'specimen' content + known read noise: a slanted stripe and row noise."""
    content = ndimage.gaussian_filter(rng.standard_normal((n, n)), 4)
    content /= content.std()
    y, x = np.mgrid[:n, :n]
    stripes = 0.3 * np.cos(2 * np.pi * (0.203125 * y + 0.1015625 * x) + 1.0)
    rows = 0.2 * rng.standard_normal((n, 1)) * np.ones((1, n))
    return content + stripes + rows + 0.05 * rng.standard_normal((n, n)), stripes + rows


def test_extract_recovers_stripes_and_rows():
    rng = np.random.default_rng(1)
    img, noise = _stripy(rng)
    prof = extract_profile([img], tile=64)
    true_ratio = noise.std() / img.std()
    assert prof.rms_ratio == pytest.approx(true_ratio, rel=0.25)
    # stripe: variance 0.045, rows: 0.04 → about half the noise power each
    near = np.all(np.abs(np.abs(prof.freqs) - [0.203125, 0.1015625]) <= 1 / 64, axis=1)
    assert prof.power[near].sum() > 0.35
    assert prof.meta["line_cols"] >= 1  # the fx = 0 column carries the row noise
    on_axis = prof.power[np.abs(prof.freqs[:, 1]) < 1e-9].sum()
    assert on_axis > 0.3
    assert prof.power[near].sum() + on_axis > 0.9  # nothing else (content) was taken


def test_content_only_has_no_read_noise():
    rng = np.random.default_rng(2)
    content = ndimage.gaussian_filter(rng.standard_normal((256, 256)), 4) + 0.01 * rng.standard_normal((256, 256))
    with pytest.raises(DataError, match="no periodic read noise"):
        extract_profile([content], tile=64)
    with pytest.raises(DataError):
        extract_profile([])
    with pytest.raises(DataError, match="at least 32"):
        extract_profile([np.zeros((16, 16))])
    with pytest.raises(ParameterError):
        extract_profile([content], line_ratio=0.5)


def test_periodic_component_removes_border_cross():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:64, :64]
    u = 0.05 * x + 0.02 * y + 0.1 * rng.standard_normal((64, 64))
    p = periodic_component(u)
    P = np.abs(sfft.fft2(p - p.mean())) ** 2
    U = np.abs(sfft.fft2(u - u.mean())) ** 2
    off = np.median(P[8:-8, 8:-8])
    assert np.median(P[0, 8:-8]) / off < 2 < np.median(U[0, 8:-8]) / np.median(U[8:-8, 8:-8])


@pytest.mark.parametrize("shape", [(64, 64), (100, 77), (31, 128), (512, 96)])
def test_synthesized_noise_has_exact_unit_variance(shape):
    prof = synthetic_profile()
    cache = {}
    a = synthesize(prof, shape, np.random.default_rng(0), cache)
    b = synthesize(prof, shape, np.random.default_rng(0), cache)
    c = synthesize(prof, shape, np.random.default_rng(1), cache)
    assert a.shape == shape and a.dtype == np.float32
    assert abs(a.mean()) < 1e-5 and a.std() == pytest.approx(1.0, abs=1e-4)
    assert c.std() == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert shape in cache


def test_synthesized_spectrum_follows_profile():
    rng = np.random.default_rng(3)
    img, _ = _stripy(rng)
    prof = extract_profile([img], tile=64)
    field = synthesize(prof, (128, 128), np.random.default_rng(0))
    power = np.abs(sfft.fft2(field, norm="forward")) ** 2
    grid = spectrum_grid(prof, (128, 128))
    assert power.sum() == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_allclose(power, grid, atol=1e-6)  # random phases, exact amplitudes


@pytest.mark.parametrize("shape", [(256, 256), (64, 64), (33, 70)])
def test_spectrum_grid_normalised_and_symmetric(shape):
    g = spectrum_grid(synthetic_profile(), shape)
    h, w = shape
    assert g.sum() == pytest.approx(1.0) and g[0, 0] == 0 and (g >= 0).all()
    np.testing.assert_allclose(g, g[(-np.arange(h)) % h][:, (-np.arange(w)) % w])


def test_profile_arrays_roundtrip_and_validation():
    prof = synthetic_profile(64)
    back = NoiseProfile.from_arrays(prof.to_arrays())
    np.testing.assert_allclose(back.freqs, prof.freqs, atol=1e-7)
    np.testing.assert_allclose(back.power, prof.power, rtol=1e-6)
    assert back.cell == prof.cell and back.meta == prof.meta
    with pytest.raises(DataError, match="not a simgen"):
        NoiseProfile.from_arrays({"x": np.zeros(3)})
    arrays = prof.to_arrays()
    arrays["version"] = np.array(99)
    with pytest.raises(DataError, match="version"):
        NoiseProfile.from_arrays(arrays)
    with pytest.raises(ParameterError):
        NoiseProfile(freqs=[[0.7, 0.0]], power=[1.0], cell=0.01)
    with pytest.raises(DataError):
        NoiseProfile(freqs=np.zeros((0, 2)), power=[], cell=0.01)


def test_read_noise_transform_uses_profile_and_rms():
    x = np.full((96, 96), 0.5, np.float32)
    t = ReadNoise(rms=0.03)
    out, _ = t(x, np.random.default_rng(0))
    assert (out - 0.5).std() == pytest.approx(0.03, rel=1e-3)
    # the default profile has strong row noise: rows differ much more than columns within a row
    d = out - 0.5
    assert d.mean(axis=1).std() > 1.5 * d.mean(axis=0).std()
    with pytest.raises(ParameterError):
        ReadNoise(profile="default")
