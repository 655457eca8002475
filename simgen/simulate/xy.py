"""Ginzburg–Landau XY dynamics of the film phase field (thermal-defect model).

Discretised overdamped dynamics on an ``L x L`` periodic square lattice::

    φ_i ← φ_i − Δt (η_i + κ Σ_<ij> sin(φ_i − φ_j)),   <η_i η_j> = 2T δ_ij δ(t − t')

so each step adds noise of mean 0 and variance ``2T / Δt`` (times Δt², i.e. the
increment has variance ``2 T Δt``).  A *quench* starts from a uniformly random
field (one defect per few sites) and coarsens; defects annihilate in ± pairs.

Backends share one API and are seeded: ``"numpy"`` (reference), ``"numba"``
(parallel CPU kernel) and ``"jax"`` (jit; runs on a GPU unchanged).  At T = 0
all backends agree to ~1e-5 after 100 steps.
"""

from __future__ import annotations

import numpy as np

from ..errors import ParameterError

__all__ = ["BACKENDS", "random_start", "xy_energy", "evolve", "quench"]

BACKENDS = ("numpy", "numba", "jax")


def random_start(L: int, rng: np.random.Generator) -> np.ndarray:
    """Uniformly random phase field in [−π, π) on an ``L x L`` lattice (float32)."""
    return rng.uniform(-np.pi, np.pi, size=(L, L)).astype(np.float32)


def xy_energy(phi: np.ndarray, kappa: float = 1.0) -> float:
    """XY energy ``E = −κ Σ_<ij> cos(φ_i − φ_j)`` over bonds of the periodic lattice (each bond once)."""
    phi = np.asarray(phi, np.float64)
    return float(-kappa * (np.cos(phi - np.roll(phi, 1, 0)).sum() + np.cos(phi - np.roll(phi, 1, 1)).sum()))


def _check(phi, steps, dt, kappa, temperature, backend):
    if backend not in BACKENDS:
        raise ParameterError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if phi.ndim != 2 or phi.shape[0] != phi.shape[1] or phi.shape[0] < 4:
        raise ParameterError(f"phase field must be a square lattice of at least 4x4 sites, got {phi.shape}")
    if steps < 0 or dt <= 0 or kappa <= 0 or temperature < 0:
        raise ParameterError("need steps >= 0, dt > 0, kappa > 0, temperature >= 0")


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

    Returns
    -------
    (L, L) float32 array wrapped into (−π, π]
    """
    phi = np.asarray(phi)
    _check(phi, steps, dt, kappa, temperature, backend)
    if backend == "numpy":
        return _evolve_numpy(phi, steps, dt, kappa, temperature, int(seed), int(step0))
    if backend == "numba":
        from .kernels_numba import evolve_numba

        return evolve_numba(phi, steps, dt, kappa, temperature, int(seed), int(step0))
    from .kernels_jax import evolve_jax

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
) -> np.ndarray:
    """Quench a random field and return snapshots at the given step counts.

    Parameters
    ----------
    L : int
        Lattice side.
    times : sequence of int
        Non-decreasing step counts at which to take snapshots.

    Returns
    -------
    (len(times), L, L) float32 array
    """
    times = [int(t) for t in times]
    if any(b < a for a, b in zip(times, times[1:])) or (times and times[0] < 0):
        raise ParameterError(f"snapshot times must be non-negative and non-decreasing, got {times}")
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0x5157,)))
    phi = random_start(int(L), rng)
    out = np.empty((len(times), L, L), np.float32)
    done = 0
    for k, t in enumerate(times):
        phi = evolve(phi, t - done, dt=dt, kappa=kappa, temperature=temperature, seed=seed, backend=backend, step0=done)
        done = t
        out[k] = phi
    return out
