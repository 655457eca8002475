import numpy as np
import pytest
from scipy import ndimage

from simgen.augment.spec import CODES
from simgen.augment.transforms import (
    TRANSFORMS,
    BrightnessContrast,
    Decross,
    GaussianBlur,
    GaussianNoise,
    Islands,
    LightingQuadrants,
    PoissonNoise,
    SaltPepper,
    standardize,
)
from simgen.errors import ParameterError
from simgen.simulate.film import FilmConfig, simulate_film
from simgen.simulate.schlieren import schlieren

IMAGE_CODES = [c for c in TRANSFORMS if c != "DC"]


@pytest.fixture(scope="module")
def film():
    s = simulate_film(np.random.default_rng(3), FilmConfig(size=64, n_defects=(3, 3), min_separation=8, margin=4))
    ann = {"points": s.points, "boxes": s.boxes, "mask": np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)}
    return s.image, s.phi, ann


def _make(code, level):
    if code == "ST":
        return TRANSFORMS[code]()
    ranges = {p.name: p.range(level) for p in CODES[code].params}
    return TRANSFORMS[code](**ranges)


@pytest.mark.parametrize("level", ["L", "H", None])
@pytest.mark.parametrize("code", IMAGE_CODES)
def test_properties(film, code, level):
    image, _, ann = film
    t = _make(code, level)
    before = {k: np.array(v, copy=True) for k, v in ann.items()}
    a, ann_a = t(image, np.random.default_rng(1), ann)
    b, _ = t(image, np.random.default_rng(1), ann)
    c, _ = t(image, np.random.default_rng(2), ann)
    assert a.shape == image.shape and a.dtype == np.float32
    assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)  # same seed → identical
    if code != "ST":
        assert not np.array_equal(a, c)  # different seeds differ
        assert not np.array_equal(a, image)
    # photometric: annotations come back bit-identical (same objects, same bytes)
    assert ann_a is ann
    for k, v in ann.items():
        assert v.dtype == before[k].dtype and v.tobytes() == before[k].tobytes()
    # the input is never modified
    assert image.dtype == np.float32


def test_other_dtypes_and_shapes():
    x = (np.arange(30 * 17) % 256).astype(np.uint8).reshape(30, 17)
    out, _ = GaussianBlur(sigma=1.0)(x, np.random.default_rng(0))
    assert out.shape == (30, 17) and out.dtype == np.float32
    with pytest.raises(ParameterError, match="2-D"):
        GaussianBlur()(np.zeros((2, 8, 8), np.float32), np.random.default_rng(0))


def test_standardize_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(0.3, 0.05, (64, 64)).astype(np.float32)
    z = standardize(x)
    expected = np.clip((x - x.mean()) / (6 * x.std()) + 0.5, 0, 1)
    np.testing.assert_allclose(z, expected, atol=1e-6)
    assert abs(z.mean() - 0.5) < 1e-3 and abs(z.std() - 1 / 6) < 2e-3
    np.testing.assert_array_equal(standardize(np.full((8, 8), 0.7, np.float32)), 0.5)
    # affine changes of the input do not change the standardized image
    np.testing.assert_allclose(standardize(2.0 * x + 0.1), z, atol=1e-5)


def test_blur_is_scipy_gaussian(film):
    image = film[0]
    out, _ = GaussianBlur(sigma=1.3)(image, np.random.default_rng(0))
    ref = np.clip(ndimage.gaussian_filter(image, 1.3, mode="reflect", truncate=3.5), 0, 1)
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_noise_statistics_match_skimage_definitions():
    x = np.full((256, 256), 0.5, np.float32)
    out, _ = GaussianNoise(sigma=0.05)(x, np.random.default_rng(0))
    assert abs(out.std() - 0.05) < 0.002 and abs(out.mean() - 0.5) < 0.002
    out, _ = SaltPepper(amount=0.02)(x, np.random.default_rng(0))
    changed = out != 0.5
    assert changed.mean() == pytest.approx(0.02, abs=1e-4)
    assert set(np.unique(out[changed])) <= {0.0, 1.0} and abs((out[changed] == 1).mean() - 0.5) < 0.05
    out, _ = PoissonNoise(dose=100)(x, np.random.default_rng(0))
    assert abs(out.mean() - 0.5) < 0.005
    assert abs(out.var() - 0.5 / 100) < 0.0005  # Poisson: var = x / dose


def test_brightness_contrast_and_quadrants():
    x = np.full((40, 60), 0.4, np.float32)
    t = BrightnessContrast(contrast=0.2, brightness=0.05)
    p = t.get_params(np.random.default_rng(0), x.shape)
    assert abs(abs(p["gain"] - 1) - 0.2) < 1e-6 and abs(abs(p["offset"]) - 0.05) < 1e-6
    out, _ = t.apply(x, p)
    np.testing.assert_allclose(out, np.clip(0.4 * p["gain"] + p["offset"], 0, 1), atol=1e-6)
    q = LightingQuadrants(amplitude=0.1)
    p = q.get_params(np.random.default_rng(0), x.shape)
    out, _ = q.apply(x, p)
    assert len(np.unique(out)) <= 4
    r, c = round(p["split"][0] * 40), round(p["split"][1] * 60)
    assert out[0, 0] == pytest.approx(0.4 * p["gains"][0]) and out[-1, -1] == pytest.approx(0.4 * p["gains"][3])
    assert out[r - 1, c - 1] != out[r, c] or p["gains"][0] == p["gains"][3]
    assert all(abs(g - 1) <= 0.1 for g in p["gains"])


def test_islands_blend_and_keep_texture():
    x = np.zeros((64, 64), np.float32)
    t = Islands(count=1, radius=0.2, opacity=0.6)
    p = {"discs": [[32.0, 32.0, 10.0, 1.0, 0.6]]}
    out, _ = t.apply(x, p)
    assert out[32, 32] == pytest.approx(0.6) and out[0, 0] == 0
    assert 0 < out[32, 42] < 0.6 or out[32, 42] in (0.0, 0.6)  # soft edge
    with pytest.raises(ParameterError, match="opacity"):
        Islands(opacity=(0.5, 1.0))
    p = t.get_params(np.random.default_rng(0), (64, 64))
    assert len(p["discs"]) == 1 and p["discs"][0][2] == pytest.approx(0.2 * 64, abs=1e-3)


def test_decross_rerenders_from_phase(film):
    image, phi, _ = film
    t = Decross(angle=20.0)
    params = t.get_params(np.random.default_rng(0), image.shape)
    assert abs(abs(params["angle"]) - np.radians(20)) < 1e-5
    out, _ = t.apply(image, params, context={"phase": phi})
    np.testing.assert_allclose(out, schlieren(phi, params["angle"]), atol=1e-6)
    with pytest.raises(ParameterError, match="phase"):
        t(image, np.random.default_rng(0))


def test_bad_ranges():
    with pytest.raises(ParameterError):
        GaussianBlur(sigma=(2, 1))
    with pytest.raises(ParameterError):
        GaussianBlur(sigma=-1)
    with pytest.raises(ParameterError):
        SaltPepper(amount=2)
    with pytest.raises(ParameterError):
        Decross(regime="sideways")


def test_jpeg_quantizes_in_8x8_blocks_and_lower_quality_costs_more():
    from simgen.augment.transforms import Jpeg

    rng = np.random.default_rng(3)
    img = np.clip(0.5 + 0.1 * rng.standard_normal((64, 64)), 0, 1).astype(np.float32)
    t = Jpeg()
    hi, _ = t.apply(img, {"quality": 95})
    lo, _ = t.apply(img, {"quality": 20})
    err_hi, err_lo = np.abs(hi - img).mean(), np.abs(lo - img).mean()
    assert 0 < err_hi < err_lo
    # block artifacts: jumps across 8-px block borders exceed jumps inside blocks
    d = np.abs(np.diff(lo, axis=1))
    border = d[:, 7::8].mean()
    inside = np.delete(d, np.s_[7::8], axis=1).mean()
    assert border > inside
    again, _ = t.apply(img, {"quality": 20})
    np.testing.assert_array_equal(lo, again)  # deterministic for a quality
