"""Temporally blocked numba kernel of the thermal XY dynamics (several steps per memory pass).

Entry point ``evolve_blocked(phi, steps, dt, kappa, temperature, seed, step0, steps_per_pass)``
has the contract of :func:`simgen.simulate.xy.evolve` with ``backend="numba"``; the
reference one-step-per-pass kernel is :func:`simgen.simulate.kernels_numba.evolve_numba`.

Scheme (wavefront over rows, ``K = steps_per_pass``)
----------------------------------------------------
One *pass* advances the lattice by ``K`` steps while reading φ once and writing it once.
The rows are split into contiguous bands (one per numba thread).  A band ``[r0, r1)``
keeps, for every intermediate time level ``k = 0 … K−1``, a ring of three rows of φ
and of the padded sin/cos rows (``(L + 2)`` entries, periodic column pads) — the
``3 K`` rows a five-point stencil needs.  A front walks down the band: at each stage it
computes the sin/cos of level-0 row ``R`` (read from the source array, periodic in the
row index), then level-1 row ``R − 1``, level-2 row ``R − 2``, … , level-K row
``R − K``, which goes to the destination array.  Level ``k`` row ``ρ`` reads only level
``k − 1`` rows ``ρ − 1, ρ, ρ + 1``, all finished earlier in the same or an earlier stage,
so every update reads the previous time level exactly as in the explicit (Jacobi) Euler
step.  Level ``k`` is computed on the rows ``[r0 − (K − k), r1 + (K − k))`` (a halo of
width ``K − k`` that shrinks by one row per level), so bands are independent.

Each site update is the *same* float32 code as the reference kernel
(:func:`simgen.simulate.kernels_numba.update_row` and ``fill_row``) with the same
counter-based noise (the noise of site ``i`` at step ``t`` is a hash of ``(seed, t, i)``),
so the result is bit-identical to the reference kernel for any ``K`` and any number of
bands, with or without noise (tested).

Cost: the halos recompute ``K (K − 1)`` rows per band and pass (1.4 % for K = 8, one band,
L = 512); the working set is ``3 K`` rows of φ, sin and cos (``36 K (L + 2)`` B: 147 kB for
K = 8, L = 512 — L2-resident), so DRAM/L3 traffic drops from 8–12 B per site-update to
``(8–12) / K`` B and a multi-threaded run has one barrier per ``K`` steps instead of one
per step.
"""

from __future__ import annotations

import numpy as np
from numba import get_num_threads, njit, prange

from simgen.simulate.kernels_numba import (
    FASTMATH,
    GOLDEN,
    IH_MEAN,
    IH_SCALE,
    INV_TWO_PI,
    ONE_U,
    PI,
    SH16,
    SH32,
    TWO_PI,
    _mix64,
    fill_row,
    step_key,
)

__all__ = ["DEFAULT_STEPS_PER_PASS", "evolve_blocked"]

#: Steps fused per pass when the caller does not choose (measured, benchmarks/xy_step.py).
DEFAULT_STEPS_PER_PASS = 8


#: low 16 bits of each 32-bit half / low 32 bits of a uint64
M16X2 = np.uint64(0x0000FFFF0000FFFF)
M32 = np.uint64(0xFFFFFFFF)


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _site(x, su, cu, sm, cm, sd, cd, row, j, a, b, noisy):
    """New φ of site ``j``: the float32 operations of ``kernels_numba.update_row``.

    The noise integer is the same (sum of the four 16-bit fields of ``mix(x)``, with ``x`` =
    ``key + (site + 1) G`` carried as a running sum), summed in two SWAR steps.
    """
    sum_s = su[j + 1] + sd[j + 1] + sm[j] + sm[j + 2]
    sum_c = cu[j + 1] + cd[j + 1] + cm[j] + cm[j + 2]
    force = sm[j + 1] * sum_c - cm[j + 1] * sum_s
    v = row[j] - a * force
    if noisy:
        h = _mix64(x)
        t = (h & M16X2) + ((h >> SH16) & M16X2)
        v -= b * np.float32(np.int64((t & M32) + (t >> SH32)) - IH_MEAN)
    u = PI - v
    u = u - TWO_PI * np.floor(u * INV_TWO_PI)
    v = PI - u
    return v + TWO_PI if v <= -PI else v


@njit(inline="always", fastmath=FASTMATH, cache=True)
def _advance_row(row, su, cu, sm, cm, sd, cd, out, a, b, key, noisy, base, L):
    """``out`` = the next time level of ``row`` (same contract as ``kernels_numba.update_row``)."""
    x = key + (np.uint64(base) + ONE_U) * GOLDEN
    for j in range(L):
        out[j] = _site(x, su, cu, sm, cm, sd, cd, row, j, a, b, noisy)
        x += GOLDEN


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _pass(src, dst, a, b, seed, t0, K, noisy, nbands):
    """Advance ``src`` by ``K`` steps (step indices ``t0 … t0+K−1``) into ``dst``."""
    L = src.shape[0]
    for blk in prange(nbands):
        r0 = blk * L // nbands
        r1 = (blk + 1) * L // nbands
        if r1 <= r0:
            continue
        # ring slot of row ρ (ρ may be negative): (ρ + off) % 3 with off a multiple of 3
        off = 3 * (K + 1)
        sin_r = np.empty((K, 3, L + 2), np.float32)
        cos_r = np.empty((K, 3, L + 2), np.float32)
        phi_r = np.empty((K, 3, L), np.float32)  # level 0 is read from src
        keys = np.empty(K, np.uint64)
        for k in range(K):
            keys[k] = step_key(seed, t0 + k)
        for q in range(r1 - r0 + 2 * K):
            R = r0 - K + q
            sl = (R + off) % 3
            fill_row(src[R % L], sin_r[0, sl], cos_r[0, sl], L)
            for k in range(1, K + 1):
                rho = R - k
                if rho < r0 - (K - k) or rho >= r1 + (K - k):
                    continue
                su = sin_r[k - 1, (rho - 1 + off) % 3]
                cu = cos_r[k - 1, (rho - 1 + off) % 3]
                sm = sin_r[k - 1, (rho + off) % 3]
                cm = cos_r[k - 1, (rho + off) % 3]
                sd = sin_r[k - 1, (rho + 1 + off) % 3]
                cd = cos_r[k - 1, (rho + 1 + off) % 3]
                rw = rho % L
                row = src[rw] if k == 1 else phi_r[k - 1, (rho + off) % 3]
                if k == K:
                    _advance_row(row, su, cu, sm, cm, sd, cd, dst[rw], a, b, keys[k - 1], noisy, rw * L, L)
                else:
                    s = (rho + off) % 3
                    _advance_row(row, su, cu, sm, cm, sd, cd, phi_r[k, s], a, b, keys[k - 1], noisy, rw * L, L)
                    fill_row(phi_r[k, s], sin_r[k, s], cos_r[k, s], L)


@njit(cache=True)
def _evolve_blocked(phi, steps, a, b, seed, step0, noisy, K, nbands):
    src = phi
    dst = np.empty_like(phi)
    t = step0
    left = steps
    while left > 0:
        k = min(K, left)
        _pass(src, dst, a, b, seed, t, k, noisy, nbands)
        src, dst = dst, src
        t += k
        left -= k
    return src


def evolve_blocked(phi, steps, dt, kappa, temperature, seed, step0, steps_per_pass=DEFAULT_STEPS_PER_PASS,
                   nbands=None):
    """Temporally blocked numba backend of :func:`simgen.simulate.xy.evolve` (arguments validated by the caller).

    Parameters
    ----------
    phi : (L, L) array
        Start field (radians, wrapped); not modified.
    steps, step0 : int
    dt, kappa, temperature : float
    seed : int
        Noise key (any Python int, reduced mod 2^64).
    steps_per_pass : int
        ``K >= 1`` steps fused per pass over memory.
    nbands : int or None
        Row bands processed in parallel (default: numba's thread count); the result does not
        depend on it.

    Returns
    -------
    (L, L) float32 array, bit-identical to :func:`simgen.simulate.kernels_numba.evolve_numba`.
    """
    phi = np.array(phi, dtype=np.float32, order="C")
    sigma = np.sqrt(2.0 * temperature / dt) if temperature > 0 else 0.0
    a = np.float32(dt * kappa)
    b = np.float32(dt * sigma * IH_SCALE)
    L = phi.shape[0]
    if nbands is None:
        nbands = max(1, min(get_num_threads(), L // 4))
    if steps == 0:
        return phi
    return _evolve_blocked(phi, int(steps), a, b, np.uint64(int(seed) % 2**64), np.int64(step0),
                           bool(temperature > 0), int(steps_per_pass), int(nbands))
