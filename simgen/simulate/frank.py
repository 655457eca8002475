"""Anisotropic (splay ≠ bend) Frank elasticity of a 2-D c-director field and its relaxation.

The c-director of a smectic-C film is the in-plane unit vector ``n = (cos φ, sin φ)``.
With different splay and bend constants the elastic energy is

    F = ½ ∫ [K1 (∇·n)² + K3 (∇×n)²] dA,   ∇·n = ∂x nx + ∂y ny,  ∇×n = ∂x ny − ∂y nx,

which reduces to the one-constant XY energy ``½ K ∫ |∇φ|²`` when ``K1 = K3 = K``.  Writing
``K̄ = (K1 + K3)/2`` and ``ΔK = (K1 − K3)/2``, the density is ``K̄ (div² + curl²) + ΔK (div² −
curl²)`` and ``div² + curl² = |∇n|² + 2 det ∇n``, whose last term integrates to the boundary
only (a null Lagrangian).  The lattice energy drops it::

    E = ½ K̄ Σ_bonds |n_j − n_i|² + ½ ΔK Σ_sites (div² − curl²)

with forward differences of ``n`` at every site for ``div`` and ``curl`` (sites of the last row
and column only enter as neighbours).  The first sum is exactly the XY bond energy
``K̄ Σ (1 − cos Δφ)``; the second is the splay/bend anisotropy.  :func:`relax_frank` runs
gradient descent on ``φ`` with the outermost ring of sites held fixed (Dirichlet boundary, so
the dropped boundary term cannot act): a phase field built from superposed ideal defects (equal
constants) relaxes into the texture of the anisotropic material — isolated +1 defects turn
towards pure splay (``K1 < K3``) or pure bend (``K1 > K3``), the brushes of −1 defects become
unevenly spaced — while the total charge inside the fixed ring is conserved.
"""

from __future__ import annotations

import numpy as np

from simgen.errors import ParameterError

__all__ = ["frank_constants", "frank_energy", "frank_gradient", "relax_frank", "MAX_DT_K"]

#: Stability limit of the explicit update: ``dt * max(K1, K3) < 2 / 8`` (largest Hessian eigenvalue 8 K).
MAX_DT_K = 0.25


def frank_constants(ratio: float) -> tuple[float, float]:
    """Splay and bend constants ``(K1, K3)`` with ``K1 / K3 = ratio`` and mean 1."""
    if not (np.isfinite(ratio) and ratio > 0):
        raise ParameterError(f"splay/bend ratio K1/K3 must be a finite number > 0, got {ratio}")
    k3 = 2.0 / (1.0 + ratio)
    return ratio * k3, k3


def _check(phi, k1, k3) -> np.ndarray:
    phi = np.asarray(phi)
    if phi.ndim != 2 or min(phi.shape) < 3:
        raise ParameterError(f"phase field must be 2-D with at least 3x3 sites, got shape {phi.shape}")
    if not (k1 > 0 and k3 > 0):
        raise ParameterError(f"Frank constants must be > 0, got K1={k1}, K3={k3}")
    return phi


def _differences(phi: np.ndarray):
    """``cos φ, sin φ`` and their forward differences along x (``(H, W−1)``) and y (``(H−1, W)``)."""
    nx, ny = np.cos(phi), np.sin(phi)
    return nx, ny, np.diff(nx, axis=1), np.diff(ny, axis=1), np.diff(nx, axis=0), np.diff(ny, axis=0)


def frank_energy(phi: np.ndarray, k1: float = 1.0, k3: float = 1.0) -> float:
    """Lattice Frank energy ``½ K̄ Σ |Δn|² + ½ ΔK Σ (div² − curl²)`` of a phase field ``(H, W)`` (radians)."""
    phi = _check(phi, k1, k3).astype(np.float64)
    _, _, ax, bx, ay, by = _differences(phi)
    kbar, dk = (k1 + k3) / 2, (k1 - k3) / 2
    div = ax[:-1] + by[:, :-1]
    curl = bx[:-1] - ay[:, :-1]
    bonds = np.sum(ax * ax) + np.sum(bx * bx) + np.sum(ay * ay) + np.sum(by * by)
    return float(0.5 * kbar * bonds + 0.5 * dk * (np.sum(div * div) - np.sum(curl * curl)))


def frank_gradient(phi: np.ndarray, k1: float = 1.0, k3: float = 1.0) -> np.ndarray:
    """``∂E/∂φ`` of :func:`frank_energy` at every site, shape ``(H, W)``, same dtype as ``phi``."""
    phi = _check(phi, k1, k3)
    nx, ny, ax, bx, ay, by = _differences(phi)
    kbar, dk = (k1 + k3) / 2, (k1 - k3) / 2
    sdiv = dk * (ax[:-1] + by[:, :-1])  # ∂E/∂div
    scurl = -dk * (bx[:-1] - ay[:, :-1])  # ∂E/∂curl
    # adjoints of the forward differences: isotropic bonds, then div = ax + by, curl = bx − ay
    gx = np.zeros_like(nx)
    gy = np.zeros_like(ny)
    gx[:, 1:] += kbar * ax
    gx[:, :-1] -= kbar * ax
    gx[1:] += kbar * ay
    gx[:-1] -= kbar * ay
    gy[:, 1:] += kbar * bx
    gy[:, :-1] -= kbar * bx
    gy[1:] += kbar * by
    gy[:-1] -= kbar * by
    gx[:-1, 1:] += sdiv
    gx[:-1, :-1] -= sdiv - scurl
    gx[1:, :-1] -= scurl
    gy[:-1, 1:] += scurl
    gy[:-1, :-1] -= scurl + sdiv
    gy[1:, :-1] += sdiv
    return ny * -gx + nx * gy


def relax_frank(phi: np.ndarray, k1: float, k3: float, steps: int, dt: float | None = None) -> np.ndarray:
    """Gradient descent ``φ ← φ − dt ∂F/∂φ`` for ``steps`` steps, border ring held fixed.

    Parameters
    ----------
    phi : (H, W) array
        Start field in radians (e.g. :func:`simgen.simulate.film.random_defect_phase`).
    k1, k3 : float
        Splay and bend constants (> 0).
    steps : int
        Number of descent steps (>= 0).
    dt : float, optional
        Step size; default ``0.8 * MAX_DT_K / max(K1, K3)``.  Refused at or above the
        stability limit ``MAX_DT_K / max(K1, K3)``.

    Returns
    -------
    (H, W) float32 array
        The relaxed field wrapped into (−π, π].
    """
    phi = _check(phi, k1, k3)
    kmax = max(k1, k3)
    dt = 0.8 * MAX_DT_K / kmax if dt is None else float(dt)
    if not 0 < dt * kmax < MAX_DT_K:
        raise ParameterError(f"dt*max(K1, K3) = {dt * kmax:g} must be in (0, {MAX_DT_K}) for a stable descent")
    if int(steps) != steps or steps < 0:
        raise ParameterError(f"steps must be an integer >= 0, got {steps}")
    out = phi.astype(np.float32, copy=True)
    inner = (slice(1, -1), slice(1, -1))
    step = np.float32(dt)
    for _ in range(int(steps)):
        out[inner] -= step * frank_gradient(out, k1, k3)[inner]
    return np.angle(np.exp(1j * out)).astype(np.float32)
