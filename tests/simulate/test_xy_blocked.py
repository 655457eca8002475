"""Temporally blocked XY kernel (several steps per memory pass) == the reference kernel, bit for bit."""

import numpy as np
import pytest

from simgen.errors import ParameterError
from simgen.simulate import kernels_blocked as kb
from simgen.simulate import kernels_numba as kn
from simgen.simulate.xy import STEPS_PER_PASS, evolve, quench, random_start


@pytest.mark.parametrize("temperature", [0.0, 0.3])
@pytest.mark.parametrize("L", [37, 48])
def test_blocked_kernel_equals_reference_for_any_block_and_band_count(L, temperature):
    """Every K (including K > steps and K > L) and band count gives the reference result exactly.

    23 steps from a fully random start: the T = 0 flow amplifies any rounding difference near
    annihilating pairs, so a wrong halo or update order would show up as large differences.
    """
    phi = random_start(L, np.random.default_rng(L))
    ref = kn.evolve_numba(phi, 23, 0.1, 1.0, temperature, 5, 3)
    for K in (1, 2, 3, 8, 23, 60):
        for nbands in (1, 3, 7):
            got = kb.evolve_blocked(phi, 23, 0.1, 1.0, temperature, 5, 3, K, nbands)
            np.testing.assert_array_equal(got, ref, err_msg=f"K={K} nbands={nbands}")


def test_evolve_steps_per_pass_selects_kernel_and_never_changes_the_result():
    phi = random_start(40, np.random.default_rng(2))
    kw = dict(dt=0.05, temperature=0.2, seed=2**64 + 3, backend="numba")
    ref = evolve(phi, 30, steps_per_pass=1, **kw)
    np.testing.assert_array_equal(ref, kn.evolve_numba(phi, 30, 0.05, 1.0, 0.2, 3, 0))
    for k in (None, 2, 7, STEPS_PER_PASS):
        np.testing.assert_array_equal(evolve(phi, 30, steps_per_pass=k, **kw), ref)
    # continuation across a pass boundary that is not a multiple of K
    a = evolve(phi, 13, steps_per_pass=4, **kw)
    np.testing.assert_array_equal(evolve(a, 17, step0=13, steps_per_pass=4, **kw), ref)
    assert np.all(ref > -np.float32(np.pi)) and np.all(ref <= np.float32(np.pi))
    np.testing.assert_array_equal(evolve(phi, 0, steps_per_pass=4, **kw), phi)
    snaps = quench(32, [0, 9, 20], temperature=0.1, seed=4, backend="numba", steps_per_pass=6)
    np.testing.assert_array_equal(snaps, quench(32, [0, 9, 20], temperature=0.1, seed=4, backend="numba",
                                                steps_per_pass=1))


def test_blocked_kernel_matches_numpy_reference_at_zero_temperature():
    """Defect-free start: the blocked kernel follows the numpy reference to float32 rounding."""
    smooth = (np.random.default_rng(5).uniform(-1, 1, (48, 48)) * 1.2).astype(np.float32)
    got = evolve(smooth, 60, backend="numba", steps_per_pass=8)
    d = np.abs(np.angle(np.exp(1j * (got.astype(np.float64) - evolve(smooth, 60)))))
    assert d.max() < 1e-5


@pytest.mark.parametrize("k, backend", [(0, "numba"), (-2, "numba"), (1.5, "numba"), (True, "numba"),
                                        ("4", "numba"), (4, "numpy"), (2, "jax")])
def test_bad_steps_per_pass_raises(k, backend):
    with pytest.raises(ParameterError, match="steps_per_pass"):
        evolve(np.zeros((8, 8), np.float32), 3, backend=backend, steps_per_pass=k)
    with pytest.raises(ParameterError, match="steps_per_pass"):
        quench(8, [1], backend=backend, steps_per_pass=k)
