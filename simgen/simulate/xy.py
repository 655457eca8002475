"""Ginzburg–Landau XY dynamics of the film phase field (thermal-defect model).

Discretised overdamped dynamics on an ``L x L`` periodic square lattice::

    φ_i ← φ_i − Δt (η_i + κ Σ_<ij> sin(φ_i − φ_j)),   <η_i η_j> = 2T δ_ij δ(t − t')

so each step adds noise of mean 0 and variance ``2T / Δt`` (times Δt², i.e. the
increment has variance ``2 T Δt``); φ is wrapped into (−π, π] after every step.  The
explicit update is stable for ``Δt κ <= 0.25`` (gradient descent with λmax = 8κ).  A
*quench* starts from a uniformly random field (one defect per few sites) and coarsens;
defects annihilate in ± pairs and their number decays as ``n ∝ (t / ln t)^−1``
(:func:`coarsening_fit`).

Backends share one API, float32 state and seeded, counter-based noise (the noise of step
``t`` depends only on ``(seed, t)``, so ``evolve(a + b) == evolve(b, evolve(a), step0=a)``
bit for bit):

* ``"numpy"`` — the reference: ``np.roll`` stencil, Gaussian noise from a Philox stream
  keyed by ``seed`` with counter ``t``.
* ``"numba"`` — fused parallel CPU kernel (:mod:`.kernels_numba`): polynomial sin/cos,
  SplitMix64-hashed Irwin–Hall(4) noise (mean 0, variance 2T/Δt, bounded, kurtosis −0.3).
  ``steps_per_pass=K`` (default :data:`STEPS_PER_PASS`) runs the temporally blocked kernel
  (:mod:`.kernels_blocked`, K steps per pass over memory), bit-identical to the one-step
  reference kernel (``steps_per_pass=1``) with or without noise.
* ``"jax"`` — ``jit`` + ``lax.fori_loop`` (:mod:`.kernels_jax`), Gaussian noise from
  ``jax.random`` (threefry, ``fold_in(key(seed), t)``); runs unchanged on a GPU.

The three noise streams differ, so backends agree only on the deterministic (T = 0)
dynamics: a single step agrees to float32 rounding (~5e-7) and runs without defects stay
within ~1e-6 after 100 steps.  From a fully random start the T = 0 dynamics amplifies
rounding differences near saddle points (annihilating pairs) at a rate ~κ, so after 100
steps a few percent of the sites differ by more than 1e-5 between *any* two float32
implementations (numpy float32 vs float64 included) while the defect lists are identical.
"""

from __future__ import annotations

import numpy as np

from simgen.errors import ParameterError
from simgen.simulate.kernels_jax import evolve_jax
from simgen.simulate.winding import find_defects

__all__ = ["BACKENDS", "MAX_DT_KAPPA", "STEPS_PER_PASS", "random_start", "xy_energy", "evolve", "quench", "defect_counts", "coarsening_fit"]

BACKENDS = ("numpy", "numba", "jax")
#: Default steps fused per memory pass of the numba backend (benchmarks/xy_step.py; 1 = reference kernel).
STEPS_PER_PASS = 4
#: Stability limit of the explicit update (dt < 2 / λmax, λmax = 8κ).
MAX_DT_KAPPA = 0.25


def random_start(L: int, rng: np.random.Generator, correlation: float = 0.0) -> np.ndarray:
    """Random phase field on an ``L x L`` periodic lattice (float32, radians).

    Parameters
    ----------
    L : int
        Lattice side (sites).
    rng : numpy.random.Generator
    correlation : float
        Correlation length ξ of the start in lattice sites.  ``0``: uniformly random angles in
        [−π, π) (the fully disordered quench, ≈ 0.33 defects per site).  ``ξ > 0``: the unit
        vectors ``(cos φ, sin φ)`` of that field smoothed with a periodic Gaussian of standard
        deviation ξ, so the quench starts with ≈ 0.07 / ξ² defects per site (measured for
        1 ≤ ξ ≤ 16): a random *initial defect density* (the RD code of the thermal model).
        The same angles are drawn from ``rng`` either way.

    Returns
    -------
    (L, L) float32 array
    """
    phi = rng.uniform(-np.pi, np.pi, size=(L, L))
    if correlation > 0:
        from scipy.ndimage import gaussian_filter

        c = gaussian_filter(np.cos(phi), float(correlation), mode="wrap")
        s = gaussian_filter(np.sin(phi), float(correlation), mode="wrap")
        phi = np.arctan2(s, c)
    return phi.astype(np.float32)


def xy_energy(phi: np.ndarray, kappa: float = 1.0) -> float:
    """XY energy ``E = −κ Σ_<ij> cos(φ_i − φ_j)`` over bonds of the periodic lattice (each bond once)."""
    phi = np.asarray(phi, np.float64)
    return float(-kappa * (np.cos(phi - np.roll(phi, 1, 0)).sum() + np.cos(phi - np.roll(phi, 1, 1)).sum()))


def _check(phi, steps, dt, kappa, temperature, backend, seed=0, step0=0):
    if backend not in BACKENDS:
        raise ParameterError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if phi.ndim != 2 or phi.shape[0] != phi.shape[1] or phi.shape[0] < 4:
        raise ParameterError(f"phase field must be a square lattice of at least 4x4 sites, got {phi.shape}")
    if not np.issubdtype(phi.dtype, np.number) or np.iscomplexobj(phi) or not np.all(np.isfinite(phi)):
        raise ParameterError("phase field must be real and finite (radians)")
    for name, v in (("steps", steps), ("seed", seed), ("step0", step0)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ParameterError(f"{name} must be an integer, got {v!r}")
    if not all(np.isfinite(float(v)) for v in (dt, kappa, temperature)):
        raise ParameterError("dt, kappa and temperature must be finite numbers")
    if steps < 0 or step0 < 0 or dt <= 0 or kappa <= 0 or temperature < 0:
        raise ParameterError("need steps >= 0, step0 >= 0, dt > 0, kappa > 0, temperature >= 0")
    if dt * kappa > MAX_DT_KAPPA:
        # explicit Euler (gradient descent) on the XY energy is stable for dt < 2 / λmax with
        # λmax = 8κ, the largest eigenvalue of the coupling Hessian on a square lattice
        raise ParameterError(f"dt*kappa = {dt * kappa:g} > {MAX_DT_KAPPA}: the explicit update is unstable")


def _check_steps_per_pass(steps_per_pass, backend):
    """The number of steps per pass to use (``STEPS_PER_PASS`` for ``None``), validated."""
    if steps_per_pass is None:
        return STEPS_PER_PASS if backend == "numba" else 1
    v = steps_per_pass
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ParameterError(f"steps_per_pass must be an integer >= 1, got {v!r}")
    if v != 1 and backend != "numba":
        raise ParameterError(f"steps_per_pass={v} needs backend='numba' (the {backend} backend does one step per pass)")
    return int(v)


def _wrap_input(phi):
    """float32 copy of ``phi`` with out-of-range values wrapped into (−π, π] (in-range values untouched)."""
    phi = np.array(phi, dtype=np.float32)
    pi = np.float32(np.pi)
    bad = (phi > pi) | (phi <= -pi)
    if bad.any():
        phi[bad] = (np.pi - np.mod(np.pi - phi[bad].astype(np.float64), 2 * np.pi)).astype(np.float32)
        phi[phi <= -pi] = pi
    return phi


def _evolve_numpy(phi, steps, dt, kappa, temperature, seed, step0):
    phi = np.array(phi, dtype=np.float32)
    sigma = np.float32(np.sqrt(2.0 * temperature / dt)) if temperature > 0 else None
    for t in range(step0, step0 + steps):
        s, c = np.sin(phi), np.cos(phi)
        sum_s = np.roll(s, 1, 0) + np.roll(s, -1, 0) + np.roll(s, 1, 1) + np.roll(s, -1, 1)
        sum_c = np.roll(c, 1, 0) + np.roll(c, -1, 0) + np.roll(c, 1, 1) + np.roll(c, -1, 1)
        force = s * sum_c - c * sum_s  # Σ_j sin(φ_i − φ_j)
        update = np.float32(kappa) * force
        if sigma is not None:
            # one counter-based stream per step: evolve(a+b) == evolve(b, evolve(a)) with step0
            rng = np.random.Generator(np.random.Philox(key=seed & (2**64 - 1), counter=[0, 0, 0, t]))
            update += sigma * rng.standard_normal(phi.shape, dtype=np.float32)
        phi -= np.float32(dt) * update
        phi = np.float32(np.pi) - np.mod(np.float32(np.pi) - phi, np.float32(2 * np.pi))
        phi[phi <= -np.float32(np.pi)] += np.float32(2 * np.pi)  # mod may round up to 2π
    return phi


def evolve(
    phi: np.ndarray,
    steps: int,
    *,
    dt: float = 0.1,
    kappa: float = 1.0,
    temperature: float = 0.0,
    seed: int = 0,
    backend: str = "numpy",
    step0: int = 0,
    steps_per_pass: int | None = None,
) -> np.ndarray:
    """Advance a periodic phase field by ``steps`` steps of XY dynamics.

    Parameters
    ----------
    phi : (L, L) array
        Start field in radians (not modified).
    steps : int
    dt, kappa, temperature : float
        Time step Δt, coupling κ, temperature T.
    seed : int
        Noise key; the noise of step ``t`` depends only on ``(seed, t)``.
    backend : {"numpy", "numba", "jax"}
    step0 : int
        Index of the first step (to continue a run with identical noise).
    steps_per_pass : int or None
        ``backend="numba"`` only: steps fused per pass over memory.  ``1``: the reference
        kernel (:func:`.kernels_numba.evolve_numba`, one step per pass); ``K >= 2``: the
        temporally blocked kernel (:mod:`.kernels_blocked`), bit-identical to the reference
        with or without noise; ``None``: :data:`STEPS_PER_PASS` (chosen by measurement).
        The result never depends on it.

    Returns
    -------
    (L, L) float32 array wrapped into (−π, π]
    """
    phi = np.asarray(phi)
    _check(phi, steps, dt, kappa, temperature, backend, seed, step0)
    k = _check_steps_per_pass(steps_per_pass, backend)
    phi = _wrap_input(phi)
    if backend == "numpy":
        return _evolve_numpy(phi, steps, dt, kappa, temperature, int(seed), int(step0))
    if backend == "numba" and k == 1:
        from simgen.simulate.kernels_numba import evolve_numba

        return evolve_numba(phi, steps, dt, kappa, temperature, int(seed), int(step0))
    if backend == "numba":
        from simgen.simulate.kernels_blocked import evolve_blocked

        return evolve_blocked(phi, steps, dt, kappa, temperature, int(seed), int(step0), k)

    return evolve_jax(phi, steps, dt, kappa, temperature, int(seed), int(step0))


def quench(
    L: int,
    times,
    *,
    dt: float = 0.1,
    kappa: float = 1.0,
    temperature: float = 0.0,
    seed: int = 0,
    backend: str = "numpy",
    correlation: float = 0.0,
    steps_per_pass: int | None = None,
) -> np.ndarray:
    """Quench a random field and return snapshots at the given step counts.

    Parameters
    ----------
    L : int
        Lattice side.
    times : sequence of int
        Non-decreasing step counts at which to take snapshots.
    correlation : float
        Correlation length ξ (sites) of the start, see :func:`random_start` (0: fully random).
    steps_per_pass : int or None
        Steps fused per memory pass (numba backend), see :func:`evolve`.

    Returns
    -------
    (len(times), L, L) float32 array
    """
    if isinstance(L, (bool, np.bool_)) or not isinstance(L, (int, np.integer)) or L < 4:
        raise ParameterError(f"lattice side L must be an integer >= 4, got {L!r}")
    try:
        times = np.atleast_1d(np.asarray(times, dtype=np.float64))
    except (TypeError, ValueError):
        raise ParameterError(f"snapshot times must be integer step counts, got {times!r}") from None
    if times.ndim != 1 or not all(float(t).is_integer() for t in times):
        raise ParameterError(f"snapshot times must be a sequence of integer step counts, got {times.tolist()}")
    times = [int(t) for t in times]
    if any(b < a for a, b in zip(times, times[1:])) or (times and times[0] < 0):
        raise ParameterError(f"snapshot times must be non-negative and non-decreasing, got {times}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed must be a non-negative integer, got {seed!r}")
    _check(np.zeros((int(L), int(L)), np.float32), 0, dt, kappa, temperature, backend, seed, 0)
    _check_steps_per_pass(steps_per_pass, backend)
    if not (np.isfinite(float(correlation)) and correlation >= 0):
        raise ParameterError(f"correlation length must be a finite number >= 0 sites, got {correlation!r}")
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0x5157,)))
    phi = random_start(int(L), rng, correlation)
    out = np.empty((len(times), L, L), np.float32)
    done = 0
    for k, t in enumerate(times):
        phi = evolve(phi, t - done, dt=dt, kappa=kappa, temperature=temperature, seed=seed, backend=backend,
                     step0=done, steps_per_pass=steps_per_pass)
        done = t
        out[k] = phi
    return out


def defect_counts(
    L: int,
    times,
    *,
    seeds=(0,),
    dt: float = 0.1,
    kappa: float = 1.0,
    temperature: float = 0.0,
    backend: str = "numba",
    steps_per_pass: int | None = None,
) -> np.ndarray:
    """Number of defects (both signs) after a quench, per seed and snapshot time.

    Arguments as in :func:`quench`.

    Returns
    -------
    (len(seeds), len(times)) int array
        Defect counts from the periodic plaquette winding numbers.
    """

    out = []
    for seed in seeds:
        snaps = quench(L, times, dt=dt, kappa=kappa, temperature=temperature, seed=int(seed), backend=backend,
                       steps_per_pass=steps_per_pass)
        out.append([len(find_defects(p, periodic=True)) for p in snaps])
    return np.asarray(out, dtype=np.int64)


def coarsening_fit(t, n) -> dict:
    """Fit the coarsening law of the defect number ``n(t)`` after a quench.

    Two least-squares line fits in log–log coordinates:

    * ``log n = c − b log(t / ln t)`` — the XY theory ``n ∝ (t / ln t)^−1`` predicts ``b = 1``;
    * ``log n = c − a log t`` — a plain power law (the effective ``a`` is below 1 because
      of the logarithm).

    Parameters
    ----------
    t : (m,) array
        Times in units of the dynamics (``steps · dt``), all > e so that ``ln t > 1``.
    n : (m,) array
        Defect counts (mean over seeds), all > 0.

    Returns
    -------
    dict with ``exponent_t_over_log_t`` (b), ``exponent_power_law`` (a) and their
    standard errors ``*_stderr``.
    """
    t = np.asarray(t, np.float64)
    n = np.asarray(n, np.float64)
    if t.ndim != 1 or t.shape != n.shape or len(t) < 3:
        raise ParameterError("need at least 3 matching (t, n) points")
    if np.any(t <= np.e) or np.any(n <= 0):
        raise ParameterError("need t > e (so ln t > 1) and n > 0 for the log-log fits")

    def slope(x, y):
        A = np.vstack([x, np.ones_like(x)]).T
        coef, res, *_ = np.linalg.lstsq(A, y, rcond=None)
        resid = y - A @ coef
        dof = max(len(x) - 2, 1)
        se = np.sqrt(resid @ resid / dof / np.sum((x - x.mean()) ** 2))
        return -coef[0], se

    b, b_se = slope(np.log(t / np.log(t)), np.log(n))
    a, a_se = slope(np.log(t), np.log(n))
    return {
        "exponent_t_over_log_t": float(b),
        "exponent_t_over_log_t_stderr": float(b_se),
        "exponent_power_law": float(a),
        "exponent_power_law_stderr": float(a_se),
    }
