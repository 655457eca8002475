"""The fast kernels behind GB and PN: OpenCV's blur equals SciPy's, the Poisson sampler keeps the law."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage, stats

from simgen.augment import Pipeline, fast
from simgen.augment.fast import POISSON_EXACT_BELOW, gaussian_blur, poisson_counts
from simgen.augment.transforms import GaussianBlur, GaussianNoise, PoissonNoise

BACKENDS = ["opencv", "scipy"]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    if request.param == "opencv":
        pytest.importorskip("cv2")
        assert fast.have_opencv()
    else:
        monkeypatch.setattr(fast, "_cv2", lambda: None)
    return request.param


@pytest.mark.parametrize("shape", [(64, 64), (5, 40), (1, 9), (3, 3)])
@pytest.mark.parametrize("sigma", [0.4, 1.0, 2.5, 4.0])
def test_blur_equals_scipy_gaussian_filter(backend, shape, sigma):
    """Same kernel and border on both paths, also for kernels wider than the image."""
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    before = x.copy()
    out = gaussian_blur(x, sigma)
    ref = ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=3.5)
    assert out.dtype == np.float32 and out.shape == shape and out is not x
    np.testing.assert_allclose(out, ref, atol=3e-7, rtol=0)
    np.testing.assert_array_equal(x, before)


def test_blur_odd_inputs(backend):
    x = np.random.default_rng(2).random((32, 48), dtype=np.float32)
    view = x[:, ::2]  # not contiguous
    np.testing.assert_allclose(gaussian_blur(view, 1.3), ndimage.gaussian_filter(view, 1.3, truncate=3.5), atol=3e-7)
    u8 = (x * 255).astype(np.uint8)
    np.testing.assert_allclose(gaussian_blur(u8, 1.0), ndimage.gaussian_filter(u8.astype(np.float32), 1.0, truncate=3.5),
                               rtol=1e-6)
    same = gaussian_blur(x, 0.0)
    assert same is not x and np.array_equal(same, x)


def test_gb_transform_runs_on_opencv():
    cv2 = pytest.importorskip("cv2")
    x = np.random.default_rng(3).random((96, 80), dtype=np.float32) * 0.8
    t = GaussianBlur(sigma=1.7)
    out, _ = t.apply(x, {"sigma": 1.7}, clip=False)
    # bit-identical to OpenCV's separable blur (kernel radius int(3.5 sigma + 0.5) = 6)
    np.testing.assert_array_equal(out, cv2.GaussianBlur(x, (13, 13), 1.7, sigmaY=1.7, borderType=cv2.BORDER_REFLECT))


def _chi_square_p(counts: np.ndarray, lam: float) -> float:
    """Goodness of fit to Poisson(lam): one bin per count in the central range, tails pooled."""
    lo, hi = int(stats.poisson.ppf(1e-3, lam)), int(stats.poisson.isf(1e-3, lam))
    c = counts.astype(np.int64).ravel()
    k = np.arange(lo, hi + 1)
    observed = np.r_[(c < lo).sum(), np.bincount(c[(c >= lo) & (c <= hi)] - lo, minlength=k.size), (c > hi).sum()]
    expected = c.size * np.r_[stats.poisson.cdf(lo - 1, lam), stats.poisson.pmf(k, lam), stats.poisson.sf(hi, lam)]
    keep = expected > 0
    return float(stats.chisquare(observed[keep], expected[keep] * c.size / expected[keep].sum()).pvalue)


@pytest.mark.parametrize("lam", [0.7, 6.0, 15.0, 40.0, 700.0])
def test_poisson_counts_follow_the_poisson_law(lam):
    """Exact below the threshold, Cornish-Fisher above: a chi-square test on a 512² image does not see it."""
    counts = poisson_counts(np.full((512, 512), lam, np.float32), np.random.default_rng(11))
    assert counts.dtype == np.float32 and np.array_equal(counts, np.rint(counts)) and counts.min() >= 0
    se = np.sqrt(lam / counts.size)
    assert abs(counts.mean() - lam) < 4 * se
    assert abs(counts.var() / lam - 1) < 4 * np.sqrt(2 / counts.size) + 4e-3 / lam
    assert _chi_square_p(counts, lam) > 1e-3


def test_poisson_counts_exact_below_threshold_and_deterministic():
    lam = np.linspace(0, POISSON_EXACT_BELOW, 1000, endpoint=False, dtype=np.float32).reshape(10, 100)
    g = np.random.default_rng(5)
    g.standard_normal(lam.shape, dtype=np.float32)  # the normal draw always comes first
    np.testing.assert_array_equal(poisson_counts(lam, np.random.default_rng(5)), g.poisson(lam.astype(np.float64)))
    mixed = np.linspace(0, 60, 4000, dtype=np.float32).reshape(40, 100)
    a = poisson_counts(mixed, np.random.default_rng(9))
    np.testing.assert_array_equal(a, poisson_counts(mixed, np.random.default_rng(9)))
    assert not np.array_equal(a, poisson_counts(mixed, np.random.default_rng(10)))


def test_pn_transform_keeps_mean_and_variance_per_intensity():
    """x' = Poisson(dose x) / dose on a ramp crossing the exact/approximate threshold (dose 30)."""
    levels = np.linspace(0.05, 1.0, 20, dtype=np.float32)
    img = np.repeat(levels[None, :], 8192, axis=0)
    t = PoissonNoise(dose=30.0)
    out, _ = t.apply(img, t.get_params(np.random.default_rng(4), img.shape), clip=False)
    assert out.dtype == np.float32
    n = img.shape[0]
    mean, var = out.mean(axis=0), out.var(axis=0)
    assert np.all(np.abs(mean - levels) < 4.5 * np.sqrt(levels / 30 / n))
    np.testing.assert_allclose(var, levels / 30, rtol=4.5 * np.sqrt(2 / n) + 0.01)


def test_gn_is_one_float32_draw_per_image():
    x = np.full((40, 50), 0.5, np.float32)
    t = GaussianNoise(sigma=0.05)
    p = t.get_params(np.random.default_rng(0), x.shape)
    out, _ = t.apply(x, p, clip=False)
    noise = np.random.default_rng(p["seed"]).standard_normal(x.shape, dtype=np.float32)
    np.testing.assert_array_equal(out, noise * np.float32(p["sigma"]) + x)


def test_equivalent_chain_is_float32_and_seeded():
    x = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    p = Pipeline("GB+RV+GN+PN")
    a, _ = p(x, np.random.default_rng(3))
    b, _ = p(x, np.random.default_rng(3))
    assert a.dtype == np.float32 and np.array_equal(a, b)


def test_benchmark_reports_ratio_machine_load_and_threads(capsys):
    """``benchmarks/augment.py`` (tiny settings): one JSON line with the figures the project rule asks for."""
    pytest.importorskip("albumentations")
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "augment.py"
    spec = importlib.util.spec_from_file_location("_bench_augment", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--quick", "--rounds", "2", "--batch", "1", "--size", "128"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["ratio_equivalent_vs_albumentations"] > 0 and figures["ratio_full_vs_albumentations"] > 0
    assert figures["machine"]["cores"] >= 1 and figures["machine"]["cpu"]
    assert len(figures["loadavg_before"]) == 3 and len(figures["loadavg_after"]) == 3
    assert figures["threads"]["process"] == 1 and figures["threads"]["cv2_num_threads"] == 1
    assert figures["threads"]["simgen_blur"] == "opencv"
    assert set(figures["ms_reference_paths"]) >= {"GB_sigma1.5_fast", "GB_sigma1.5_scipy", "PN_dose100_fast",
                                                  "PN_dose100_exact"}
