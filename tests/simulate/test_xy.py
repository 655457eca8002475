"""Thermal XY dynamics: backends, noise, physics invariants, kernels (fast: one thread)."""

import numpy as np
import pytest

from simgen.errors import ParameterError
from simgen.simulate import kernels_numba as kn
from simgen.simulate.winding import find_defects, wrap_angle
from simgen.simulate.xy import (
    BACKENDS,
    coarsening_fit,
    defect_counts,
    evolve,
    quench,
    random_start,
    xy_energy,
)

PI32 = np.float32(np.pi)


def angdiff(a, b):
    return np.abs(wrap_angle(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


@pytest.fixture(scope="module")
def start64():
    return random_start(64, np.random.default_rng(1234))


# ---------------------------------------------------------------- agreement at T = 0


@pytest.mark.parametrize("backend", ["numba", "jax"])
def test_backends_agree_each_step_along_a_100_step_trajectory(backend, start64):
    """One step of every backend agrees with the reference to 1e-5 (float32 rounding ~5e-7)."""
    traj = [start64]
    for _ in range(100):
        traj.append(evolve(traj[-1], 1))
    err = max(angdiff(evolve(traj[t], 1, backend=backend), traj[t + 1]).max() for t in range(100))
    assert err < 1e-5


@pytest.mark.parametrize("backend", ["numba", "jax"])
def test_backends_agree_after_100_free_steps(backend, start64):
    """Free-running 100 steps: 1e-5 everywhere without saddles; same defects from a random start.

    From a fully random start rounding differences are amplified near annihilating pairs
    (the same happens between numpy float32 and float64), so there the bulk is compared
    and the defect lists must be identical.
    """
    smooth = (np.random.default_rng(5).uniform(-1, 1, (64, 64)) * 1.2).astype(np.float32)
    assert len(find_defects(smooth, periodic=True)) == 0
    assert angdiff(evolve(smooth, 100, backend=backend), evolve(smooth, 100)).max() < 1e-5

    ref = evolve(start64, 100)
    got = evolve(start64, 100, backend=backend)
    d = angdiff(got, ref)
    assert np.median(d) < 1e-6 and np.mean(d < 1e-5) > 0.9
    np.testing.assert_array_equal(find_defects(got, periodic=True), find_defects(ref, periodic=True))


# ---------------------------------------------------------------- determinism, continuation


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_determinism_and_step0_continuation(backend):
    phi = random_start(32, np.random.default_rng(7))
    kw = dict(temperature=0.2, dt=0.05, backend=backend)
    seed = 2**63 + 11  # seeds are taken mod 2^64
    a = evolve(phi, 9, seed=seed, **kw)
    assert a.dtype == np.float32 and a.shape == phi.shape
    np.testing.assert_array_equal(a, evolve(phi, 9, seed=seed, **kw))
    b = evolve(evolve(phi, 4, seed=seed, **kw), 5, seed=seed, step0=4, **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, evolve(phi, 9, seed=seed + 1, **kw))
    assert np.all(a > -PI32) and np.all(a <= PI32)
    np.testing.assert_array_equal(evolve(phi, 0, backend=backend), phi)


def test_numba_result_does_not_depend_on_thread_count():
    import numba

    phi = random_start(40, np.random.default_rng(3))
    a = kn.evolve_numba(phi, 5, 0.1, 1.0, 0.3, 9, 2)
    b = kn._evolve(phi.copy(), 5, np.float32(0.1), np.float32(0.1 * np.sqrt(2.0 * 0.3 / 0.1) * kn.IH_SCALE),
                   np.uint64(9), np.int64(2), True, 7)  # 7 row blocks as if 7 threads
    np.testing.assert_array_equal(a, b)
    assert numba.get_num_threads() >= 1


def test_input_outside_range_is_wrapped():
    phi = random_start(16, np.random.default_rng(0))
    shifted = phi + np.float32(4 * np.pi)
    for backend in ("numpy", "numba"):
        assert angdiff(evolve(shifted, 3, backend=backend), evolve(phi, 3, backend=backend)).max() < 1e-5
    np.testing.assert_array_equal(evolve(phi, 0), phi)


# ---------------------------------------------------------------- noise moments


def _one_step_noise(backend, L, T, dt, seed=1, step0=0, steps=1, steps_per_pass=None):
    """From φ = 0 the force vanishes, so one step gives φ = −Δt η exactly.

    ``steps > 1`` (one pass of the blocked kernel): κ = 1e-9 makes the force negligible, so
    φ = −Δt Σ η (T small enough that φ never wraps) and the sum has variance ``steps · 2T/Δt``.
    """
    kappa = 1.0 if steps == 1 else 1e-9
    return evolve(np.zeros((L, L), np.float32), steps, dt=dt, kappa=kappa, temperature=T, seed=seed, step0=step0,
                  backend=backend, steps_per_pass=steps_per_pass).astype(np.float64) / -dt


@pytest.mark.parametrize(
    "backend, steps_per_pass, steps",
    [("numpy", None, 1), ("numba", 1, 1), ("numba", None, 1), ("numba", 4, 4), ("jax", None, 1)],
)
def test_noise_mean_variance_and_independence(backend, steps_per_pass, steps):
    L, dt = (512 if backend == "numba" else 256), 0.1
    T = 0.3 if steps == 1 else 0.1
    var = steps * 2 * T / dt

    def noise(**kw):
        return _one_step_noise(backend, L, T, dt, steps=steps, steps_per_pass=steps_per_pass, **kw)

    eta = noise()
    n = eta.size
    assert abs(eta.mean()) < 5 * np.sqrt(var / n)
    assert abs(eta.var() / var - 1) < 6 * np.sqrt(2 / n) + 0.002
    tol = 5 / np.sqrt(n)
    z = eta / np.sqrt(var)
    for shift, axis in ((1, 0), (1, 1), (2, 1), (L // 2, 1)):  # neighbouring sites / rows
        assert abs(np.mean(z * np.roll(z, shift, axis))) < tol
    z_next = noise(step0=steps) / np.sqrt(var)  # next step(s)
    z_seed = noise(seed=2) / np.sqrt(var)  # next seed
    z_far = noise(step0=10**6) / np.sqrt(var)
    for other in (z_next, z_seed, z_far):
        assert abs(np.mean(z * other)) < tol
        assert abs(np.mean(z * np.roll(other, 1, 1))) < tol


def test_numba_noise_is_irwin_hall_4():
    """Documented distribution: centred, scaled sum of four uniforms (bounded, kurtosis −0.3)."""
    z = np.concatenate([kn.noise_field(s, t, 256).ravel() for s, t in ((0, 0), (1, 5), (2**64 - 1, 2**40))])
    z = z.astype(np.float64)
    n = z.size
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(1.7 / n)
    kurt = np.mean(z**4) / np.mean(z**2) ** 2 - 3
    assert abs(kurt + 0.3) < 0.03
    assert np.abs(z).max() <= 2 * np.sqrt(3) + 1e-5
    # the field the kernel adds is exactly this z (scaled by Δt σ)
    eta = _one_step_noise("numba", 256, 0.3, 0.1, seed=1, step0=5)
    np.testing.assert_allclose(eta / np.sqrt(6.0), kn.noise_field(1, 5, 256), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- physics


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_temperature_lowers_energy_every_step(backend):
    phi = random_start(32, np.random.default_rng(11))
    energies = [xy_energy(phi)]
    for _ in range(60):
        phi = evolve(phi, 1, dt=0.2, backend=backend)
        energies.append(xy_energy(phi))
    assert np.all(np.diff(energies) < 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_total_winding_charge_is_zero_on_the_torus(backend):
    snaps = quench(48, [0, 5, 50], temperature=0.1, seed=3, backend=backend)
    for phi in snaps:
        d = find_defects(phi, periodic=True)
        assert len(d) > 0
        assert int(d["charge"].astype(int).sum()) == 0


@pytest.mark.parametrize("steps_per_pass", [1, None, 8])
def test_defect_count_decays_after_a_quench(steps_per_pass):
    counts = defect_counts(128, [100, 400, 1600], seeds=(0, 1), temperature=0.05, steps_per_pass=steps_per_pass)
    assert np.all(counts[:, 0] > counts[:, 1]) and np.all(counts[:, 1] > counts[:, 2])
    assert np.all(counts[:, 2] > 0)
    if steps_per_pass != 1:  # the blocked kernel runs the same dynamics as the reference kernel
        ref = defect_counts(128, [100, 400, 1600], seeds=(0, 1), temperature=0.05, steps_per_pass=1)
        np.testing.assert_array_equal(counts, ref)
    # numpy reference shows the same decay
    ref = [len(find_defects(p, periodic=True)) for p in quench(64, [50, 400], seed=0)]
    assert ref[0] > ref[1]


def test_coarsening_fit_recovers_known_exponents():
    t = np.geomspace(10, 1000, 12)
    fit = coarsening_fit(t, 50 * (t / np.log(t)) ** -1.0)
    assert abs(fit["exponent_t_over_log_t"] - 1) < 1e-9
    assert 0.7 < fit["exponent_power_law"] < 1.0
    fit = coarsening_fit(t, 3 * t**-0.8)
    assert abs(fit["exponent_power_law"] - 0.8) < 1e-9
    with pytest.raises(ParameterError):
        coarsening_fit([1, 2, 3], [3, 2, 1])


# ---------------------------------------------------------------- kernels


def test_polynomial_sincos_error():
    x = np.linspace(-np.pi, np.pi, 400_001).astype(np.float32)
    x = np.concatenate([x, np.array([np.nextafter(PI32, 0), -PI32, PI32], np.float32)])
    s, c = kn.sincos_poly(x)
    x64 = x.astype(np.float64)
    assert np.abs(s - np.sin(x64)).max() < 1e-6
    assert np.abs(c - np.cos(x64)).max() < 1e-6


def test_polynomial_atan2_and_random_defect_phase():
    from simgen.simulate.film import random_defect_phase, sample_defects

    rng = np.random.default_rng(0)
    y, x = rng.normal(size=(2, 200_000)).astype(np.float32)
    y[:4], x[:4] = [0, 0, 1, -1], [0, -1, 0, 0]
    assert np.abs(angdiff(kn.atan2_poly(y, x), np.arctan2(y, x))).max() < 1e-6
    for n, shape in ((0, (40, 56)), (1, (64, 64)), (9, (96, 80))):
        d = sample_defects(rng, n, shape, min_separation=6, margin=4)
        ref = random_defect_phase(d, shape, 0.7)
        got = kn.random_defect_phase_numba(d["x"], d["y"], d["charge"], shape, 0.7)
        assert got.dtype == np.float32 and got.shape == shape
        assert angdiff(got, ref).max() < 1e-5


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(backend="cuda"),
        dict(steps=-1),
        dict(steps=2.5),
        dict(dt=0.0),
        dict(dt=0.3),  # dt*kappa > 0.25: unstable
        dict(kappa=-1.0),
        dict(temperature=-0.1),
        dict(temperature=float("nan")),
        dict(step0=-3),
        dict(seed=1.5),
    ],
)
def test_bad_parameters_raise(kwargs):
    args = dict(steps=3)
    args.update(kwargs)
    phi = np.zeros((8, 8), np.float32)
    with pytest.raises(ParameterError):
        evolve(phi, args.pop("steps"), **args)


@pytest.mark.parametrize("phi", [np.zeros((8, 9)), np.zeros((3, 3)), np.zeros(16), np.full((8, 8), np.inf)])
def test_bad_fields_raise(phi):
    with pytest.raises(ParameterError):
        evolve(phi, 1)


@pytest.mark.parametrize(
    "args",
    [dict(L=2, times=[1]), dict(L=16.5, times=[1]), dict(L=16, times=[5, 2]), dict(L=16, times=[-1]),
     dict(L=16, times=[1.5]), dict(L=16, times=["x"]), dict(L=16, times=[1], seed=-1),
     dict(L=16, times=[1], backend="gpu"), dict(L=16, times=[1], dt=1.0)],
)
def test_bad_quench_parameters_raise(args):
    L = args.pop("L")
    times = args.pop("times")
    with pytest.raises(ParameterError):
        quench(L, times, **args)
